"""BERT-style pretraining: masking statistics, NSP pairs, corpora, and that pretraining learns and transfers."""

from __future__ import annotations

import copy
import math
import random

import pytest
import torch

from metanlp.data.errors import DataError
from metanlp.pretraining import (
    IGNORE_INDEX,
    MaskingScheme,
    corpus_from_datasets,
    corpus_from_lines,
    corpus_from_text_file,
    encode_pairs,
    mask_tokens,
    sample_pairs,
    tokenize_corpus,
)
from metanlp.pretraining.nsp import TokenizedCorpus

PAD, CLS, SEP, MASK, UNK = range(5)
SPECIAL = [PAD, CLS, SEP, MASK, UNK]
VOCAB = 1000


def binomial_tolerance(p: float, n: int, sigmas: float = 5.0) -> float:
    """Half-width of a ±5σ band for a proportion: fails by chance about once in 3 million runs."""
    return sigmas * math.sqrt(p * (1 - p) / n)


def padded_batch(rows: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``[CLS] w w ... [SEP] [PAD] ...`` of random lengths, ids drawn from the ordinary vocabulary."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(len(SPECIAL), VOCAB, (rows, width), generator=generator)
    attention_mask = torch.zeros(rows, width, dtype=torch.long)
    lengths = torch.randint(4, width + 1, (rows,), generator=generator)
    for row, length in enumerate(lengths.tolist()):
        input_ids[row, 0] = CLS
        input_ids[row, length - 1] = SEP
        input_ids[row, length // 2] = UNK  # a special token in the middle must not be chosen either
        input_ids[row, length:] = PAD
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


def test_masking_statistics_follow_bert():
    input_ids, attention_mask = padded_batch(rows=600, width=64, seed=0)
    masked = mask_tokens(input_ids, attention_mask, SPECIAL, MASK, VOCAB, torch.Generator().manual_seed(1))
    chosen = masked.labels != IGNORE_INDEX
    eligible = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(SPECIAL))

    assert not (chosen & ~eligible).any(), "a special token or padding was chosen"
    assert torch.equal(masked.labels[chosen], input_ids[chosen]), "labels must be the original ids"
    assert torch.equal(masked.input_ids[~chosen], input_ids[~chosen]), "unchosen tokens must stay as they were"

    n_eligible, n_chosen = int(eligible.sum()), int(chosen.sum())
    assert n_eligible > 15_000
    assert abs(n_chosen / n_eligible - 0.15) < binomial_tolerance(0.15, n_eligible)

    new, old = masked.input_ids[chosen], input_ids[chosen]
    to_mask = new == MASK
    kept = new == old
    randomised = ~to_mask & ~kept
    # A random replacement equals the original 1 time in 995: "kept" absorbs those few.
    collision = 0.1 / (VOCAB - len(SPECIAL))
    assert abs(to_mask.float().mean().item() - 0.8) < binomial_tolerance(0.8, n_chosen)
    assert abs(randomised.float().mean().item() - (0.1 - collision)) < binomial_tolerance(0.1, n_chosen)
    assert abs(kept.float().mean().item() - (0.1 + collision)) < binomial_tolerance(0.1, n_chosen)
    assert not torch.isin(new[randomised], torch.tensor(SPECIAL)).any(), "random replacements must be ordinary tokens"

    again = mask_tokens(input_ids, attention_mask, SPECIAL, MASK, VOCAB, torch.Generator().manual_seed(1))
    assert torch.equal(again.input_ids, masked.input_ids) and torch.equal(again.labels, masked.labels)


def test_masking_scheme_is_configurable_and_checked():
    input_ids, attention_mask = padded_batch(rows=200, width=32, seed=2)
    scheme = MaskingScheme(mask_probability=0.4, replace_with_mask=1.0, replace_with_random=0.0)
    masked = mask_tokens(input_ids, attention_mask, SPECIAL, MASK, VOCAB, torch.Generator().manual_seed(0), scheme)
    chosen = masked.labels != IGNORE_INDEX
    assert (masked.input_ids[chosen] == MASK).all()
    eligible = int((attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(SPECIAL))).sum())
    assert abs(int(chosen.sum()) / eligible - 0.4) < binomial_tolerance(0.4, eligible)
    with pytest.raises(ValueError, match="at most 1"):
        MaskingScheme(replace_with_mask=0.9, replace_with_random=0.2)


def numbered_corpus(documents: int = 12, sentences: int = 6) -> TokenizedCorpus:
    """Sentence s of document d is the ids [100 + d, 200 + s, 300 + d]: pairs can be traced back."""
    return TokenizedCorpus(
        [[[100 + d, 200 + s, 300 + d] for s in range(sentences)] for d in range(documents)],
        cls_token_id=CLS, sep_token_id=SEP, pad_token_id=PAD,
    )


def test_nsp_pairs_are_half_real_half_random_and_traceable():
    corpus = numbered_corpus()
    pairs = sample_pairs(corpus, 1000, random.Random(0))
    assert sum(pair.is_next for pair in pairs) == 500
    for pair in pairs:
        first_document, first_sentence = pair.first[0] - 100, pair.first[1] - 200
        second_document, second_sentence = pair.second[0] - 100, pair.second[1] - 200
        if pair.is_next:
            assert (second_document, second_sentence) == (first_document, first_sentence + 1)
        else:
            assert second_document != first_document
    # Odd counts: one extra pair of either kind, never a skew beyond one.
    odd = sample_pairs(corpus, 33, random.Random(1))
    assert sum(pair.is_next for pair in odd) in (16, 17)


def test_pair_encoding_has_bert_layout_and_segments():
    corpus = numbered_corpus()
    pairs = sample_pairs(corpus, 8, random.Random(0))
    pairs[0].first = list(range(400, 430))  # long enough to need truncation
    batch = encode_pairs(pairs, corpus, max_length=16)
    assert batch.input_ids.shape[1] <= 16
    for row, pair in enumerate(pairs):
        length = int(batch.attention_mask[row].sum())
        ids = batch.input_ids[row, :length].tolist()
        segments = batch.token_type_ids[row].tolist()
        first_sep = ids.index(SEP)
        assert ids[0] == CLS and ids[-1] == SEP and ids.count(SEP) == 2
        assert segments[: first_sep + 1] == [0] * (first_sep + 1)  # [CLS] A [SEP]
        assert segments[first_sep + 1 : length] == [1] * (length - first_sep - 1)  # B [SEP]
        assert segments[length:] == [0] * (len(segments) - length)
        assert (batch.input_ids[row, length:] == PAD).all()
        assert ids[first_sep + 1 : -1] == pair.second[: len(ids) - first_sep - 2]
        assert ids[1:first_sep] == pair.first[: first_sep - 1]
    assert batch.is_next.tolist() == [pair.is_next for pair in pairs]


def test_tokenized_pairs_decode_to_the_sentences(tiny_encoder):
    corpus = corpus_from_lines(["the cat sat", "on the mat", "", "stocks fell sharply", "markets closed"])
    tokenized = tokenize_corpus(corpus, tiny_encoder.tokenizer, tiny_encoder.max_length)
    real = next(p for p in sample_pairs(tokenized, 20, random.Random(0)) if p.is_next)
    batch = encode_pairs([real], tokenized, tiny_encoder.max_length)
    tokens = tiny_encoder.ids_to_tokens(batch.input_ids[0].tolist())
    text = " ".join(tokens)
    assert text in ("[CLS] the cat sat [SEP] on the mat [SEP]", "[CLS] stocks fell sharply [SEP] markets closed [SEP]")


def test_user_text_corpus(tmp_path):
    corpus = corpus_from_lines(["a b", "c d", "  ", "e f", "g h", "i j"])
    assert corpus.documents == [["a b", "c d"], ["e f", "g h", "i j"]]
    chunked = corpus_from_lines([f"line {i}" for i in range(20)])
    assert [len(document) for document in chunked.documents] == [8, 8, 4]
    assert "no blank lines" in chunked.description
    path = tmp_path / "notes.txt"
    path.write_text("first one\nsecond one\n\nthird one\nfourth one\n", encoding="utf-8")
    assert corpus_from_text_file(path).documents == [["first one", "second one"], ["third one", "fourth one"]]
    with pytest.raises(DataError, match="two documents"):
        corpus_from_lines(["only one line"])
    with pytest.raises(DataError, match="does not exist"):
        corpus_from_text_file(tmp_path / "missing.txt")


def test_dataset_corpus_reads_only_training_classes(clinc_dataset):
    from metanlp.data.registry import examples_for_split

    corpus = corpus_from_datasets(["clinc150"])
    assert len(corpus.documents) == len(clinc_dataset.class_splits["train"])
    assert "same class" in corpus.description
    train_texts = {e.text for e in examples_for_split(clinc_dataset, "train")}
    test_texts = {e.text for e in examples_for_split(clinc_dataset, "test")} - train_texts
    corpus_texts = {sentence for document in corpus.documents for sentence in document}
    assert corpus_texts <= train_texts and not corpus_texts & test_texts

    training, held_out = corpus.split_held_out(0.1)
    held_out_texts = {s for d in held_out.documents for s in d}
    assert held_out_texts and not held_out_texts & {s for d in training.documents for s in d}
    assert training.n_sentences + held_out.n_sentences == corpus.n_sentences


def test_mlm_decoder_is_untied_by_default_and_ties_on_request():
    from metanlp.pretraining import PretrainingHeads

    embedding = torch.randn(50, 8)
    hidden = torch.randn(3, 8)
    untied, tied = PretrainingHeads(8, 50), PretrainingHeads(8, 50, tied=True)
    assert "mlm.decoder" in untied.state_dict() and "mlm.decoder" not in tied.state_dict()
    transformed = tied.mlm.norm(torch.nn.functional.gelu(tied.mlm.dense(hidden)))
    assert torch.allclose(tied.mlm(hidden, embedding), transformed @ embedding.T + tied.mlm.bias)
    transformed = untied.mlm.norm(torch.nn.functional.gelu(untied.mlm.dense(hidden)))
    assert torch.allclose(untied.mlm(hidden, embedding), transformed @ untied.mlm.decoder.T + untied.mlm.bias)


# ---------------------------------------------------------------- learning (one shared pretraining run)

PRETRAIN_ENCODER = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "feedforward_size": 64, "max_length": 32}
PRETRAIN_STEPS = 300


@pytest.fixture(scope="module")
def pretraining_run(tmp_path_factory):
    """Pretrain once for every learning test; keep the random-init twin (same seed) for comparison."""
    from metanlp.encoders import build_encoder
    from metanlp.engine.pretraining import checkpoint_to_folder, pretrain

    torch.manual_seed(0)
    encoder = build_encoder("scratch", **PRETRAIN_ENCODER)
    random_twin = copy.deepcopy(encoder)
    events: list[dict] = []
    folder = tmp_path_factory.mktemp("pretrained")
    result = pretrain(
        encoder, corpus_from_datasets(["clinc150"]), steps=PRETRAIN_STEPS, batch_size=32, lr=3e-3, warmup=30,
        seed=0, on_event=events.append, eval_every=10, save_checkpoint=checkpoint_to_folder(folder),
        checkpoint_steps=[100], attention_text="what is my account balance",
    )
    return {"encoder": encoder, "random": random_twin, "events": events, "result": result, "folder": folder}


def test_pretraining_events_and_checkpoints(pretraining_run):
    from metanlp.encoders import build_encoder

    events = pretraining_run["events"]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, PRETRAIN_STEPS + 1))
    # Pretraining's own names, never the episode names support_loss / query_loss.
    assert all(set(e) == {"event", "phase", "step", "mlm_loss", "nsp_loss", "nsp_accuracy", "lr", "elapsed"} for e in steps)
    assert all(e["phase"] == "pretrain" and math.isfinite(e["mlm_loss"] + e["nsp_loss"]) for e in steps)
    assert steps[0]["lr"] < steps[29]["lr"] and steps[-1]["lr"] < steps[29]["lr"]  # warm-up, then decay
    checked = [e for e in events if e["event"] == "validation"]
    assert [e["step"] for e in checked] == list(range(10, PRETRAIN_STEPS + 1, 10))
    assert all(set(e) == {"event", "phase", "step", "held_out_mlm_loss", "held_out_nsp_loss", "held_out_nsp_accuracy"}
               for e in checked)
    assert pretraining_run["result"].history == [e for e in events if e["event"] in ("step", "validation")]

    attention = [e for e in events if e["event"] == "attention"]
    assert attention[0]["step"] == 0 and attention[-1]["step"] == PRETRAIN_STEPS and len(attention) >= 4
    maps = torch.tensor(attention[-1]["attentions"])  # layers × heads × S × S
    assert maps.shape[:2] == (2, 2) and torch.allclose(maps.sum(-1), torch.ones(maps.shape[:-1]), atol=1e-3)

    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [100, PRETRAIN_STEPS]
    reloaded = build_encoder("scratch", checkpoint=str(pretraining_run["folder"] / f"step-{PRETRAIN_STEPS:06d}"))
    texts = ["set an alarm for six", "how do i cook pasta"]
    assert torch.allclose(reloaded.eval().embed(texts), pretraining_run["encoder"].eval().embed(texts), atol=1e-5)


def test_mlm_loss_falls_on_training_and_held_out_text(pretraining_run):
    steps = [e for e in pretraining_run["events"] if e["event"] == "step"]
    first = sum(e["mlm_loss"] for e in steps[:20]) / 20
    last = sum(e["mlm_loss"] for e in steps[-20:]) / 20
    assert last < first - 2.0, (first, last)  # ln(30522) ≈ 10.3 at the start
    checked = [e["held_out_mlm_loss"] for e in pretraining_run["events"] if e["event"] == "validation"]
    assert sum(checked[-3:]) / 3 < checked[0] - 2.0, checked


def test_single_sentences_see_segment_zero_as_in_pretraining(pretraining_run):
    """``embed`` passes no token_type_ids; pretraining pinned segment 0 at zero, so both agree."""
    encoder = pretraining_run["encoder"].eval()
    batch = encoder.tokenize(["turn the lights off"])
    without = encoder(batch["input_ids"], batch["attention_mask"]).last_hidden_state
    zeros = torch.zeros_like(batch["input_ids"])
    with_segment = encoder(batch["input_ids"], batch["attention_mask"], token_type_ids=zeros).last_hidden_state
    assert torch.allclose(without, with_segment, atol=1e-6)
    assert encoder.embeddings.segment.weight[1].abs().sum() > 0  # segment 1 did learn


def test_language_modelling_transfers_to_sentences_of_unseen_classes(pretraining_run, clinc_dataset):
    """The corpus held only meta-train classes; masked words of meta-TEST sentences are predicted too."""
    from metanlp.data.registry import examples_for_split
    from metanlp.pretraining import PretrainingCorpus, PretrainingHeads
    from metanlp.pretraining.trainer import MaskedPairSampler, held_out_losses

    by_class: dict[str, list[str]] = {}
    for example in examples_for_split(clinc_dataset, "test"):
        by_class.setdefault(example.label, []).append(example.text)
    unseen = PretrainingCorpus(list(by_class.values())[:20])
    trained = pretraining_run["encoder"]
    batch, labels = MaskedPairSampler(tokenize_corpus(unseen, trained.tokenizer, 32), trained, seed=5).sample(128)
    pretrained_loss = held_out_losses(trained, pretraining_run["result"].heads, batch, labels).mlm.item()
    torch.manual_seed(0)
    untrained_heads = PretrainingHeads(trained.hidden_size, trained.vocab_size)
    random_loss = held_out_losses(pretraining_run["random"], untrained_heads, batch, labels).mlm.item()
    assert random_loss > 10.0  # ≈ ln 30522: uniform guessing
    assert pretrained_loss < random_loss - 3.0, (pretrained_loss, random_loss)


def test_a_run_starts_from_a_pretrained_checkpoint(pretraining_run):
    """``encoder_options={"checkpoint": folder}`` hands the pretrained weights to any method."""
    from metanlp.engine import RunConfig, run_training

    folder = pretraining_run["folder"] / f"step-{PRETRAIN_STEPS:06d}"
    config = RunConfig(
        method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=0, eval_episodes=2,
        encoder="scratch", encoder_options={"checkpoint": str(folder)}, device="cpu",
    )
    result = run_training(config)
    expected = pretraining_run["encoder"].state_dict()
    loaded = result.method.encoder.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key].cpu(), expected[key].cpu()) for key in expected)
    assert result.evaluation is not None and result.evaluation.episodes == 2


def test_mlm_pretrain_method_learns_from_episode_text(tiny_encoder, clinc_dataset):
    from metanlp.data.episodes import EpisodeSampler
    from metanlp.data.registry import examples_for_split
    from metanlp.methods import create_method

    sampler = EpisodeSampler.from_examples(examples_for_split(clinc_dataset, "train"), 5, 5, 5, seed=0)
    torch.manual_seed(0)
    method = create_method("mlm_pretrain", tiny_encoder, {"lr": 3e-3})
    metrics = [method.train_step(sampler.sample()) for _ in range(40)]
    assert all(0.0 <= m["nsp_accuracy"] <= 1.0 and 0.0 <= m["query_accuracy"] <= 1.0 for m in metrics)
    first = sum(m["mlm_loss"] for m in metrics[:5]) / 5
    last = sum(m["mlm_loss"] for m in metrics[-5:]) / 5
    assert last < first - 1.0, (first, last)


def test_mlm_pretrain_query_metrics_are_the_prototype_classifier_before_the_update(tiny_encoder, clinc_episodes):
    """query_loss / query_accuracy mean what they mean for every method: the classifier ``adapt``
    builds, scored on the episode's queries (here before the step's update); the MLM loss keeps its own name."""
    from metanlp.methods import create_method

    torch.manual_seed(0)
    method = create_method("mlm_pretrain", tiny_encoder, {"lr": 3e-3})
    for episode in clinc_episodes:
        expected = method.evaluate_episode(episode)
        metrics = method.train_step(episode)
        assert metrics["query_loss"] == pytest.approx(expected["query_loss"], abs=1e-5)
        assert metrics["query_accuracy"] == pytest.approx(expected["query_accuracy"])
        assert metrics["query_loss"] != pytest.approx(metrics["mlm_loss"], abs=0.5)  # ≈ 1 vs ≈ ln(30522) ≈ 10
    after = method.evaluate_episode(clinc_episodes[-1])
    # The update does change the scores, so the equalities above could only hold if scoring came first.
    assert after["query_loss"] != pytest.approx(metrics["query_loss"], abs=1e-6)


# ---------------------------------------------------------------- transfer to a downstream few-shot task

TOPIC_ENCODER = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "feedforward_size": 64, "max_length": 32}


def words_of(texts: list[str], labels: list[int], label: int) -> set[str]:
    return {word for text, y in zip(texts, labels, strict=True) if y == label for word in text.split()}


def test_synthetic_episodes_keep_support_and_query_words_apart():
    from metanlp.pretraining.synthetic import TOPIC_WORDS, disjoint_word_episodes, topic_corpus

    corpus = topic_corpus(sentences_per_topic=10)
    assert len(corpus.documents) == len(TOPIC_WORDS) and corpus.n_sentences == 10 * len(TOPIC_WORDS)
    for episode in disjoint_word_episodes(20, n_way=5, k_shot=2, n_query=3, seed=4):
        assert len(episode.support_texts) == 10 and len(episode.query_texts) == 15
        for label, topic in enumerate(episode.classes):
            topic_words = set(TOPIC_WORDS[topic])
            support = words_of(episode.support_texts, episode.support_labels, label)
            query = words_of(episode.query_texts, episode.query_labels, label)
            assert support & topic_words and query & topic_words
            assert not support & query & topic_words, "a class's support and queries must share no topic word"


def test_a_pretrained_checkpoint_beats_random_init_on_a_downstream_few_shot_task(tmp_path):
    """Pretrain on unlabelled topic text, then 5-way 1-shot episodes whose queries share no topic
    word with their support: only an encoder that learned which words go together can match them.

    Both encoders are loaded back from checkpoints (the pretrained one and its random-init twin,
    same seed) and evaluated with frozen ProtoNet on the same 60 episodes.
    """
    from metanlp.encoders import build_encoder, save_encoder
    from metanlp.engine.pretraining import checkpoint_to_folder, pretrain
    from metanlp.evaluation import evaluate
    from metanlp.methods import create_method
    from metanlp.pretraining.synthetic import disjoint_word_episodes, topic_corpus

    torch.manual_seed(0)
    encoder = build_encoder("scratch", **TOPIC_ENCODER)
    save_encoder(encoder, tmp_path / "random-init")
    pretrain(encoder, topic_corpus(seed=0), steps=800, batch_size=32, lr=5e-3, warmup=80, seed=0, eval_every=100,
             save_checkpoint=checkpoint_to_folder(tmp_path))
    episodes = disjoint_word_episodes(60, n_way=5, k_shot=1, n_query=5, seed=1)

    def accuracy(folder) -> float:
        candidate = build_encoder("scratch", checkpoint=str(folder))
        return evaluate(create_method("protonet", candidate, {"finetune": "frozen"}), episodes).mean_accuracy

    random_init, pretrained = accuracy(tmp_path / "random-init"), accuracy(tmp_path / "step-000800")
    assert random_init < 0.35, random_init  # chance is 0.2: nothing links a support word to a query word
    assert pretrained > random_init + 0.4, (random_init, pretrained)
