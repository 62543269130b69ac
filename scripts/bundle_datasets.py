"""Build the compact bundled datasets in ``metanlp/data/files`` from the raw copies in a shared folder.

Run once, by hand, whenever the bundle must change; the library and the tests only ever read its output
(``metanlp/data/files/<name>/``), never the raw folder. Output is deterministic (fixed seeds, gzip mtime 0),
so rerunning it leaves git clean unless something really changed.

    python -m scripts.bundle_datasets [--raw /work/shared/datasets] [--out metanlp/data/files]

Each dataset folder gets:
- ``examples.jsonl.gz``: one ``{"text", "label"}`` object per line (plus ``"split"`` for shared-class data);
- ``metadata.json``: counts, class split and descriptive fields, read cheaply by ``list_datasets()``;
- ``class_splits.json`` (only where several published class splits exist);
- ``SOURCE.md``: provenance, licence, citation and the exact preprocessing.
"""

from __future__ import annotations

import argparse
import csv
import glob
import gzip
import html
import io
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Shared with user uploads, so bundled and uploaded data are split by the same rule.
from metanlp.data.splits import seeded_class_split, split_examples_per_class

REPO_ROOT = Path(__file__).resolve().parents[1]
SEED = 0
SPLITS = ("train", "val", "test")


@dataclass
class Bundle:
    """Everything the writer needs for one dataset folder."""

    name: str
    rows: list[dict]  # {"text", "label"} or {"text", "label", "split"}
    class_splits: dict[str, list[str]]
    description: str
    language: str
    task: str
    source: str
    licence: str
    split_note: str
    provenance: str  # hand-written part of SOURCE.md
    all_class_splits: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    default_split_id: str | None = None


# ---------------------------------------------------------------- helpers


def protaugment_splits(path: Path) -> dict[str, dict[str, list[str]]]:
    """ProtAugment names its meta-validation split ``valid``; we call it ``val``."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {
        split_id: {"train": sorted(s["train"]), "val": sorted(s["valid"]), "test": sorted(s["test"])}
        for split_id, s in sorted(raw.items())
    }


def bao_split(raw_dir: Path, dataset: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Return (id -> name, class split by name) for one of Bao et al.'s datasets."""
    names = json.loads((raw_dir / "bao2020/label_names.json").read_text(encoding="utf-8"))[dataset]
    ids = json.loads((raw_dir / "bao2020/class_splits.json").read_text(encoding="utf-8"))[dataset]
    return names, {split: sorted(names[str(i)] for i in ids[split]) for split in SPLITS}


def read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def clean_whitespace(text: str) -> str:
    return " ".join(text.split())


def mark_entities(tokens: list[str], head_indices: list[int], tail_indices: list[int]) -> str:
    """Wrap the head span in [E1] ... [/E1] and the tail span in [E2] ... [/E2], then join with spaces.

    Works whichever entity comes first, because markers are attached to token positions, not appended
    in order. Spans are taken as min..max of the first mention's indices (they are contiguous in FewRel).
    """
    before: dict[int, list[str]] = {}
    after: dict[int, list[str]] = {}
    for indices, open_tag, close_tag in ((head_indices, "[E1]", "[/E1]"), (tail_indices, "[E2]", "[/E2]")):
        before.setdefault(min(indices), []).append(open_tag)
        after.setdefault(max(indices), []).append(close_tag)
    pieces: list[str] = []
    for position, token in enumerate(tokens):
        pieces.extend(before.get(position, []))
        pieces.append(token)
        pieces.extend(after.get(position, []))
    return " ".join(pieces)


def per_class_example_split(rows: list[dict], train_fraction: float, seed: int = SEED) -> None:
    """Tag each row with split "train" or "test", seeded and stratified by class (in place)."""
    tags = split_examples_per_class([row["label"] for row in rows], train_fraction, seed)
    for row, tag in zip(rows, tags, strict=True):
        row["split"] = tag


def format_class_split(class_splits: dict[str, list[str]]) -> str:
    return "\n".join(
        f"- {split} ({len(class_splits[split])}): {', '.join(class_splits[split]) or '(none)'}"
        for split in SPLITS
    )


# ---------------------------------------------------------------- one builder per dataset


def build_clinc150(raw: Path) -> Bundle:
    data = json.loads((raw / "clinc150/data_full.json").read_text(encoding="utf-8"))
    rows = [
        {"text": text, "label": intent} for part in ("train", "val", "test") for text, intent in data[part]
    ]
    splits = protaugment_splits(raw / "clinc150/class_splits_protaugment.json")
    return Bundle(
        name="clinc150",
        rows=rows,
        class_splits=splits["01"],
        all_class_splits=splits,
        default_split_id="01",
        description="Short voice-assistant requests labelled with one of 150 intents (10 domains).",
        language="en",
        task="intent detection",
        source="Larson et al., EMNLP 2019 (CLINC150); class splits from Dopierre et al., ACL 2021 (ProtAugment)",
        licence="CC BY 3.0 (data); ProtAugment class splits Apache-2.0",
        split_note="Class-disjoint ProtAugment split 01 by default (50/50/50 intents); splits 02-05 selectable.",
        provenance="""\
## Origin
- Utterances: GitHub `clinc/oos-eval` at commit `828f8093932c8fe6ca7936c3d2e52903b1c523de`,
  file `data/data_full.json`. The repository's LICENSE is Creative Commons Attribution 3.0 Unported.
- Class splits: GitHub `tdopierre/ProtAugment` at commit `4233bbae0d7544e632692c4d2c185b2ed2a19eef`,
  files `data/OOS/few_shot/0{1..5}/labels.{train,valid,test}.txt` (repository licence: Apache 2.0).

## What we did
- Kept only in-scope utterances: the `train`, `val` and `test` lists of `data_full.json` merged into one pool
  (the original train/val/test example split is not kept; meta-learning splits by class instead).
- Dropped every out-of-scope (`oos`) utterance.
- Text and intent names are unchanged (intent names keep their underscores, e.g. `pto_request`).
- All five ProtAugment class splits are in `class_splits.json` (their `valid` renamed `val`);
  split `01` is the default. Choose another with `load_dataset("clinc150", split_id="03")`.

## Cite
Larson et al., "An Evaluation Dataset for Intent Classification and Out-of-Scope Prediction", EMNLP-IJCNLP 2019.
Dopierre, Gravier, Logerais, "ProtAugment: Intent Detection Meta-Learning through Unsupervised Diverse
Paraphrasing", ACL-IJCNLP 2021 (class splits).
""",
    )


def build_banking77(raw: Path) -> Bundle:
    rows: list[dict] = []
    for part in ("train", "test"):
        with open(raw / f"banking77/{part}.csv", encoding="utf-8", newline="") as handle:
            rows.extend({"text": r["text"], "label": r["category"]} for r in csv.DictReader(handle))
    splits = protaugment_splits(raw / "banking77/class_splits_protaugment.json")
    return Bundle(
        name="banking77",
        rows=rows,
        class_splits=splits["01"],
        all_class_splits=splits,
        default_split_id="01",
        description="Customer messages to a bank labelled with one of 77 fine-grained intents.",
        language="en",
        task="intent detection",
        source="Casanueva et al., NLP4ConvAI 2020 (BANKING77); class splits from Dopierre et al., ACL 2021",
        licence="CC BY 4.0 (data); ProtAugment class splits Apache-2.0",
        split_note="Class-disjoint ProtAugment split 01 by default (25/25/27 intents); splits 02-05 selectable.",
        provenance="""\
## Origin
- Messages: GitHub `PolyAI-LDN/task-specific-datasets` at commit `57ec275d8078af65b7731c2a98be812d844a6d6b`,
  files `banking_data/train.csv` and `banking_data/test.csv`. The repository's LICENSE is CC BY 4.0.
- Class splits: GitHub `tdopierre/ProtAugment` at commit `4233bbae0d7544e632692c4d2c185b2ed2a19eef`,
  files `data/BANKING77/few_shot/0{1..5}/labels.{train,valid,test}.txt` (Apache 2.0).

## What we did
- Merged the original train and test CSVs into one pool; text and category names unchanged.
- All five ProtAugment class splits are in `class_splits.json` (`valid` renamed `val`); `01` is the default.

## Cite
Casanueva, Temčinas, Gerz, Henderson, Vulić, "Efficient Intent Detection with Dual Sentence Encoders",
NLP4ConvAI workshop at ACL 2020. ProtAugment splits: Dopierre et al., ACL-IJCNLP 2021.
""",
    )


BAO_ORIGIN = """\
- Bao et al.'s code (GitHub `YujiaBao/Distributional-Signatures`, commit
  `c613ed070af3e7ae4967b9942fde16864af28cde`, MIT) does not ship the data, so the file comes from a copy:
  {copy}.
- Class split: the class ids hard-coded in Bao et al.'s `src/dataset/loader.py` ({ids}).
"""


def build_huffpost(raw: Path) -> Bundle:
    names, splits = bao_split(raw, "huffpost")
    rows = [
        {"text": r["raw"], "label": names[str(r["label"])]}
        for r in read_jsonl_gz(raw / "bao2020/huffpost.json.gz")
    ]
    copy = (
        "GitHub `ws-jiang/MetaPrompter_public` at commit `dea17d573a5eb4f31b3366ba1fe88b1beb865c50`, "
        "file `data/huffpost.json` (that repository has no licence file)"
    )
    return Bundle(
        name="huffpost",
        rows=rows,
        class_splits=splits,
        description="News headlines from HuffPost labelled with one of 41 categories.",
        language="en",
        task="news headline topic classification",
        source="Misra 2018 (HuffPost News Category); class split from Bao et al., ICLR 2020",
        licence="Not stated in the copy repository we used (no licence file)",
        split_note="Class-disjoint split of Bao et al. 2020: ids 0-19 train, 20-24 val, 25-40 test (20/5/16).",
        provenance="## Origin\n"
        + BAO_ORIGIN.format(copy=copy, ids="0-19 train, 20-24 val, 25-40 test")
        + """
## What we did
- Text is the `raw` field unchanged: headlines that are already lower-cased and split into space-separated
  tokens (e.g. `'s` detached).
- Integer labels were replaced by category names. The names are INFERRED, not published with the data:
  they follow the order of names used in `Dousia/MetaPrompting`'s data loader (40 names), plus `CULTURE & ARTS`
  for the missing id 39. That order equals descending category frequency of the original Kaggle dataset and
  was spot-checked against headlines, but treat the names as a best guess.

## Cite
Misra, "News Category Dataset", 2018 (Kaggle). Bao, Wu, Chang, Barzilay, "Few-shot Text Classification with
Distributional Signatures", ICLR 2020.
""",
    )


REUTERS_MAX_WORDS = 60


def build_reuters(raw: Path) -> Bundle:
    names, splits = bao_split(raw, "reuters")
    rows = []
    for r in read_jsonl_gz(raw / "bao2020/reuters.json.gz"):
        words = r["raw"].split()
        rows.append({"text": " ".join(words[:REUTERS_MAX_WORDS]), "label": names[str(r["label"])]})
    copy = (
        "GitHub `xport456a547/fsnopretrain` at commit `c2acf6c1b43a80fb66df9c1f658620b9d4ceaef9`, "
        "file `data/reuters.json` (that repository has no licence file)"
    )
    return Bundle(
        name="reuters",
        rows=rows,
        class_splits=splits,
        description="Reuters-21578 newswire stories (first 60 words) in 31 topics, 20 stories each.",
        language="en",
        task="news topic classification",
        source="Reuters-21578 (Lewis, UCI KDD archive); class split from Bao et al., ICLR 2020",
        licence="Not stated in the copy repository; Reuters-21578 is distributed for research purposes",
        split_note="Class-disjoint split of Bao et al. 2020: ids 0-14 train, 15-19 val, 20-30 test (15/5/11).",
        provenance="## Origin\n"
        + BAO_ORIGIN.format(copy=copy, ids="0-14 train, 15-19 val, 20-30 test")
        + """
- Label names: the `semantic_label` field of `Dousia/MetaPrompting` at commit
  `7ba0c8eda25261c2ac4b7afb60d3d30bb6298de8`, `data/reuters.json`, matched to all 620 texts.

## What we did
- Text is the `raw` field (original casing) with runs of whitespace collapsed, TRUNCATED to its first
  60 words (the median story has about 110 words; the longest about 840). Short encoders see at most a few
  hundred tokens anyway, and the headline plus opening sentences carry the topic.
- Integer labels replaced by the topic names above.

## Cite
Lewis, "Reuters-21578 text categorization test collection, Distribution 1.0", 1997. Bao et al., ICLR 2020.
""",
    )


def _fewrel_rows(data: dict, label_of: Callable[[str], str]) -> list[dict]:
    rows = []
    for key in sorted(data):
        for instance in data[key]:
            text = mark_entities(instance["tokens"], instance["h"][2][0], instance["t"][2][0])
            rows.append({"text": text, "label": label_of(key)})
    return rows


FEWREL_MARKERS = """\
- Each instance's token list was joined with single spaces after inserting entity markers: the head entity is
  wrapped as `[E1] ... [/E1]` and the tail entity as `[E2] ... [/E2]`. The span is taken from the first
  mention's token indices (from the smallest to the largest index). Markers sit at token positions, so the
  tail may come before the head in the text; no spans overlap in this data.
"""


FEWREL_SPLITS = 5


def build_fewrel(raw: Path) -> Bundle:
    data = json.loads((raw / "fewrel/val_wiki.json").read_text(encoding="utf-8"))
    pid2name = json.loads((raw / "fewrel/pid2name.json").read_text(encoding="utf-8"))
    rows = _fewrel_rows(data, lambda pid: pid2name[pid][0])
    labels = [r["label"] for r in rows]
    # Five seeded splits: with one, every 5-way test episode would hold the same five relations.
    all_splits = {f"{seed + 1:02d}": seeded_class_split(labels, (8, 3, 5), seed) for seed in range(FEWREL_SPLITS)}
    mapping = "\n".join(f"  - {pid}: {pid2name[pid][0]}" for pid in sorted(data, key=lambda p: int(p[1:])))
    return Bundle(
        name="fewrel",
        rows=rows,
        class_splits=all_splits["01"],
        all_class_splits=all_splits,
        default_split_id="01",
        description="Wikipedia sentences with a marked head and tail entity; predict their relation (16 relations).",
        language="en",
        task="relation classification",
        source="Han et al., EMNLP 2018 (FewRel 1.0, validation relations)",
        licence="MIT (thunlp/FewRel)",
        split_note=(
            "Only FewRel's 16 validation relations are bundled; our own seeded class splits 01-05 "
            "(seeds 0-4), 8/3/5 relations each; split 01 (seed 0) by default."
        ),
        provenance=f"""\
## Origin
GitHub `thunlp/FewRel` at commit `278a2315d2138810a379cd8d5718914dc56e2582` (LICENSE: MIT, THUNLP 2018),
files `data/val_wiki.json` (16 relations x 700 instances) and `data/pid2name.json`.
FewRel's 64 training relations (`train_wiki.json`) are NOT included; its test set is hidden.

## What we did
{FEWREL_MARKERS}- Label = the Wikidata property name from `pid2name.json` (e.g. `P26` -> `spouse`). Mapping:
{mapping}
- Class splits: no published split exists for the 16 validation relations alone, so we made five: sort the
  relation names, shuffle them with `random.Random(seed)` for seed 0-4 (split ids 01-05), take 8 for train,
  3 for val, 5 for test. Split 01 (seed 0) is the default and the only split bundled before; the others let
  test episodes draw different relations. Meta-training sees 8 relations (11 counting the val relations),
  not FewRel's 64 training relations.

## Cite
Han et al., "FewRel: A Large-Scale Supervised Few-Shot Relation Classification Dataset with State-of-the-Art
Evaluation", EMNLP 2018.
""",
    )


def build_fewrel_pubmed(raw: Path) -> Bundle:
    data = json.loads((raw / "fewrel/val_pubmed.json").read_text(encoding="utf-8"))
    rows = _fewrel_rows(data, lambda key: key.replace("_", " "))
    splits = seeded_class_split([r["label"] for r in rows], (4, 1, 5))
    return Bundle(
        name="fewrel_pubmed",
        rows=rows,
        class_splits=splits,
        description="Biomedical (PubMed) sentences with marked entities; predict one of 10 UMLS relations.",
        language="en",
        task="relation classification (biomedical domain)",
        source="Gao et al., EMNLP 2019 (FewRel 2.0 domain-adaptation validation set)",
        licence="MIT (thunlp/FewRel)",
        split_note="Our own seeded class split (seed 0): 4/1/5 relations; 1 val class, so no val episodes.",
        provenance=f"""\
## Origin
GitHub `thunlp/FewRel` at commit `278a2315d2138810a379cd8d5718914dc56e2582` (LICENSE: MIT),
file `data/val_pubmed.json` (FewRel 2.0 domain-adaptation validation: 10 relations x 100 instances).

## What we did
{FEWREL_MARKERS}- Label = the relation key with underscores turned into spaces
  (e.g. `gene_found_in_organism` -> `gene found in organism`).
- Class split: sort the 10 names, shuffle with `random.Random(0)`, take 4 train, 1 val, 5 test. The single val
  relation cannot form an N-way episode (N >= 2); it is there only so the three lists stay disjoint. Use it
  as a cross-domain test set for models meta-trained on `fewrel`.

## Cite
Gao et al., "FewRel 2.0: Towards More Challenging Few-Shot Relation Classification", EMNLP-IJCNLP 2019.
""",
    )


AGNEWS_PER_CLASS = 500
_BARE_ENTITY = re.compile(r"(?<![&\w])(#\d+|quot|amp|lt|gt);")


def clean_agnews(text: str) -> str:
    """The copy lost the '&' of most HTML entities (' quot;', '#39;') and uses '\\' for line breaks."""
    text = _BARE_ENTITY.sub(r"&\1;", text)
    text = html.unescape(text).replace("\\", " ")
    return clean_whitespace(text)


SHARED_CLASS_NOTE = """\
## Why this dataset is different: shared classes, split examples
With only {n} classes, disjoint meta-train / meta-test class sets are impossible (a 2-way test task would
leave nothing to train on). So this dataset is for supervised transfer and fine-tuning comparisons: every class
appears in train and test (val is empty), and instead the EXAMPLES are split: each example carries a `split`
field ({how}). `examples_for_split(dataset, "train")` and `(dataset, "test")` never share an example.
"""


def build_agnews(raw: Path) -> Bundle:
    with gzip.open(raw / "agnews/test.tsv.gz", "rt", encoding="utf-8") as handle:
        pool = [line.rstrip("\n").rsplit("\t", 1) for line in handle if line.strip()]
    rng = random.Random(SEED)
    rows: list[dict] = []
    for label in sorted({label for _, label in pool}):
        texts = [text for text, lab in pool if lab == label]
        rows.extend({"text": clean_agnews(t), "label": label} for t in rng.sample(texts, AGNEWS_PER_CLASS))
    per_class_example_split(rows, train_fraction=0.8)
    labels = sorted({r["label"] for r in rows})
    return Bundle(
        name="agnews",
        rows=rows,
        class_splits={"train": labels, "val": [], "test": labels},
        description="News article descriptions in 4 topics (World, Sports, Business, Sci/Tech); 500 per topic.",
        language="en",
        task="topic classification (supervised; classes shared across splits)",
        source="Zhang, Zhao, LeCun, NeurIPS 2015 (AG News)",
        licence="MIT (forest-snow/alps code repo); AG's corpus is for research / non-commercial use",
        split_note="Shared classes: all 4 topics in train and test; examples split 80/20 per class (seed 0).",
        provenance="""\
## Origin
GitHub `forest-snow/alps` at commit `3c7ef2c98249fc975a897b27f275695f97d5b7a9`, file `data/agnews/test.tsv`
(the standard AG News test set, 1,900 descriptions per class). That repository's LICENSE is MIT; the AG corpus
itself is offered by its authors for research and non-commercial use.

## What we did
- Sampled 500 descriptions per class with `random.Random(0)` (2,000 in total) to stay compact.
- Repaired HTML entities whose `&` was lost in the copy (` quot;`, `#39;`, `#36;` -> `"`, `'`, `$`), decoded
  the rest (`&lt;` -> `<`), turned the `\\` line-break marks into spaces and collapsed whitespace.
- Labels unchanged: World, Sports, Business, Sci/Tech.
"""
        + SHARED_CLASS_NOTE.format(n=4, how="80% `train` / 20% `test` within each class, seed 0")
        + """
## Cite
Zhang, Zhao, LeCun, "Character-level Convolutional Networks for Text Classification", NeurIPS 2015.
""",
    )


SST2_TRAIN_SAMPLE = 2000
SST2_LABELS = {"0": "negative", "1": "positive"}


def _read_sst2(path: Path) -> list[tuple[str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()[1:]  # skip the "sentence<TAB>label" header
    return [
        (clean_whitespace(t), SST2_LABELS[lab]) for t, lab in (line.rsplit("\t", 1) for line in lines if line)
    ]


def build_sst2(raw: Path) -> Bundle:
    train_pool = _read_sst2(raw / "sst2/train.tsv.gz")
    test = _read_sst2(raw / "sst2/test.tsv")
    train = random.Random(SEED).sample(train_pool, SST2_TRAIN_SAMPLE)
    rows = [{"text": t, "label": lab, "split": "train"} for t, lab in train]
    rows += [{"text": t, "label": lab, "split": "test"} for t, lab in test]
    return Bundle(
        name="sst2",
        rows=rows,
        class_splits={"train": ["negative", "positive"], "val": [], "test": ["negative", "positive"]},
        description="Movie-review phrases labelled positive or negative (SST-2).",
        language="en",
        task="sentiment classification (supervised; classes shared across splits)",
        source="Socher et al., EMNLP 2013 (SST); GLUE (Wang et al., ICLR 2019)",
        licence="MIT (forest-snow/alps code repo)",
        split_note="Shared classes: train = 2,000 sampled GLUE-train phrases, test = the 872 GLUE-dev sentences.",
        provenance="""\
## Origin
GitHub `forest-snow/alps` at commit `3c7ef2c98249fc975a897b27f275695f97d5b7a9`, files `data/SST-2/train.tsv`
and `data/SST-2/test.tsv`. In that repository train = part of GLUE SST-2 train and test = GLUE SST-2 dev
(872 labelled sentences). Repository LICENSE: MIT.

## What we did
- `test` split: all 872 sentences of `test.tsv`.
- `train` split: 2,000 phrases sampled from `train.tsv` with `random.Random(0)`.
- Labels 0/1 renamed `negative`/`positive`; text is lower-cased and tokenized as in the source (unchanged
  apart from collapsing whitespace).
"""
        + SHARED_CLASS_NOTE.format(
            n=2, how="`train` for the sampled train phrases, `test` for the 872 dev sentences"
        )
        + """
## Cite
Socher et al., "Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank", EMNLP 2013.
Wang et al., "GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding", ICLR 2019.
""",
    )


def build_tnews(raw: Path) -> Bundle:
    folder = raw / "fewclue/tnews"
    names = {}
    for line in (folder / "label_index2en2zh.json").read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            names[str(entry["label"])] = entry.get("label_en") or entry["label_desc"].removeprefix("news_")
    by_id: dict[int, dict] = {}
    files = sorted(glob.glob(str(folder / "train_*.json"))) + sorted(glob.glob(str(folder / "dev_*.json")))
    for path in [*files, str(folder / "test_public.json")]:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                by_id.setdefault(record["id"], record)
    rows = [{"text": r["sentence"], "label": names[str(r["label"])]} for _, r in sorted(by_id.items())]
    splits = seeded_class_split([r["label"] for r in rows], (8, 2, 5))
    return Bundle(
        name="tnews",
        rows=rows,
        class_splits=splits,
        description="Chinese news titles (Toutiao) in 15 topics, from the FewCLUE benchmark.",
        language="zh",
        task="news title topic classification",
        source="Xu et al., arXiv:2107.07498 (FewCLUE, TNEWS task)",
        licence="None stated (FewCLUE README: licence 'being added')",
        split_note="Our own seeded class split (seed 0): 8/2/5 topics.",
        provenance="""\
## Origin
GitHub `CLUEbenchmark/FewCLUE` at commit `62a02c6f31cf32814cfe522f78ef088228840f8d`, files
`datasets/tnews/train_{0..4}.json`, `dev_{0..4}.json`, `test_public.json` and `label_index2en2zh.json`.
The repository has no LICENSE file; its README's licence section says only that one is being added.

## What we did
- Merged the five few-shot train samples, the five dev samples and the labelled public test set, keeping the
  first record for each `id` (the few-shot samples overlap each other).
- Text = the `sentence` field (the news title), unchanged; the `keywords` field is dropped.
- Label = an English topic name. The label file offers no `label_en` field, so we use its `label_desc` with the
  `news_` prefix removed (`news_finance` -> `finance`).
- Class split: sort the 15 names, shuffle with `random.Random(0)`, take 8 train, 2 val, 5 test.

## Cite
Xu et al., "FewCLUE: A Chinese Few-shot Learning Evaluation Benchmark", arXiv:2107.07498, 2021.
""",
    )


BUILDERS: list[Callable[[Path], Bundle]] = [
    build_clinc150,
    build_banking77,
    build_huffpost,
    build_reuters,
    build_fewrel,
    build_fewrel_pubmed,
    build_agnews,
    build_sst2,
    build_tnews,
]


# ---------------------------------------------------------------- writer


def write_gzip(path: Path, text: str) -> None:
    """gzip with mtime 0 so identical content gives identical bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(text.encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def check(bundle: Bundle) -> None:
    labels = {row["label"] for row in bundle.rows}
    assert all(row["text"].strip() and row["label"] for row in bundle.rows), bundle.name
    for splits in [bundle.class_splits, *bundle.all_class_splits.values()]:
        assert set().union(*splits.values()) == labels, bundle.name
        shared = "split" in bundle.rows[0]
        if not shared:
            assert sum(len(v) for v in splits.values()) == len(labels), f"{bundle.name}: splits overlap"


def examples_per_split(bundle: Bundle) -> dict[str, int]:
    if "split" in bundle.rows[0]:
        counts = Counter(row["split"] for row in bundle.rows)
        return {split: counts.get(split, 0) for split in SPLITS}
    split_of = {label: split for split, labels in bundle.class_splits.items() for label in labels}
    counts = Counter(split_of[row["label"]] for row in bundle.rows)
    return {split: counts.get(split, 0) for split in SPLITS}


def write_bundle(bundle: Bundle, out_root: Path) -> None:
    check(bundle)
    folder = out_root / bundle.name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row, ensure_ascii=False) for row in bundle.rows]
    write_gzip(folder / "examples.jsonl.gz", "\n".join(lines) + "\n")
    if bundle.all_class_splits:
        write_json(folder / "class_splits.json", bundle.all_class_splits)
    label_counts = Counter(row["label"] for row in bundle.rows)
    metadata = {
        "name": bundle.name,
        "description": bundle.description,
        "language": bundle.language,
        "task": bundle.task,
        "source": bundle.source,
        "licence": bundle.licence,
        "split_note": bundle.split_note,
        "shared_classes": "split" in bundle.rows[0],
        "n_examples": len(bundle.rows),
        "n_classes": len(label_counts),
        "examples_per_split": examples_per_split(bundle),
        "default_split_id": bundle.default_split_id,
        "split_ids": sorted(bundle.all_class_splits),
        "class_splits": bundle.class_splits,
    }
    write_json(folder / "metadata.json", metadata)
    counts = ", ".join(f"{label} {n}" for label, n in sorted(label_counts.items()))
    generated = (
        f"\n## Bundled result (written by `scripts/bundle_datasets.py`)\n"
        f"- {len(bundle.rows):,} examples, {len(label_counts)} classes; per class: {counts}.\n"
        f"- Examples per split: {metadata['examples_per_split']}.\n"
        f"- Default class split{f' (id {bundle.default_split_id})' if bundle.default_split_id else ''}:\n"
        f"{format_class_split(bundle.class_splits)}\n"
    )
    header = f"# {bundle.name}: {bundle.description}\n\nLicence (as stated): {bundle.licence}.\n\n"
    (folder / "SOURCE.md").write_text(header + bundle.provenance + generated, encoding="utf-8")
    size_kb = sum(p.stat().st_size for p in folder.iterdir()) / 1024
    print(
        f"{bundle.name:14s} {len(bundle.rows):6d} examples {len(label_counts):4d} classes {size_kb:8.0f} KB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, default=Path("/work/shared/datasets"))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "metanlp/data/files")
    args = parser.parse_args()
    for builder in BUILDERS:
        write_bundle(builder(args.raw), args.out)


if __name__ == "__main__":
    main()
