"""Unlabelled text for pretraining, organised as documents (lists of consecutive sentences).

Next-sentence prediction needs documents: "B follows A" is a pair of neighbouring sentences of
one document, and a negative B comes from another document. The bundled datasets are
collections of independent sentences with no real document order, so here a "document" is the
sentences of ONE CLASS of one dataset, in file order: "next" then means "another sentence of the
same class" (the same intent, news topic or relation). That turns NSP into a weak
same-class-or-not signal drawn from the labels: honest pretraining therefore reads only the
meta-train split, so meta-test classes stay unseen (see ``corpus_from_datasets``).

User text is a plain list of lines: blank lines separate documents, as in BERT's own input format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from metanlp.data.errors import DataError
from metanlp.data.registry import examples_for_split, list_datasets, load_dataset
from metanlp.data.types import SPLITS

MAX_TEXT_FILE_BYTES = 50 * 1024 * 1024
SENTENCES_PER_CHUNK = 8  # document size used when user text has no blank lines at all
MIN_HELD_OUT_DOCUMENT = 2  # a held-out document needs a real "next" pair


@dataclass
class PretrainingCorpus:
    """Documents of sentences, plus a sentence that says how the documents were formed."""

    documents: list[list[str]]
    description: str = ""
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.documents = [[s.strip() for s in doc if s and s.strip()] for doc in self.documents]
        self.documents = [doc for doc in self.documents if doc]

    @property
    def n_sentences(self) -> int:
        return sum(len(document) for document in self.documents)

    def check_usable(self) -> None:
        """Raise ``DataError`` unless NSP can draw both real and random pairs."""
        if len(self.documents) < 2:
            raise DataError(
                "Pretraining text needs at least two documents (separate them with a blank line), "
                f"got {len(self.documents)}."
            )
        if not any(len(document) >= 2 for document in self.documents):
            raise DataError("Pretraining text needs a document with at least two sentences (lines).")

    def split_held_out(self, fraction: float = 0.1) -> tuple[PretrainingCorpus, PretrainingCorpus]:
        """(training, held-out): the last ``fraction`` of each document of 4+ sentences is held out.

        Holding out document tails (not whole documents) keeps every document in training, so a
        small corpus still has negatives for NSP, while the held-out sentences are never trained on.
        """
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        training, held_out = [], []
        for document in self.documents:
            size = max(MIN_HELD_OUT_DOCUMENT, math.ceil(fraction * len(document)))
            if len(document) - size >= 2:
                training.append(document[:-size])
                held_out.append(document[-size:])
            else:
                training.append(document)
        if len(held_out) < 2:
            raise DataError(
                "Pretraining text is too small to hold out a check set: it needs at least two documents "
                f"of {2 * MIN_HELD_OUT_DOCUMENT} or more sentences."
            )
        return (
            PretrainingCorpus(training, self.description, list(self.sources)),
            PretrainingCorpus(held_out, f"held-out tails of: {self.description}", list(self.sources)),
        )


def english_dataset_names() -> list[str]:
    """The available English datasets: the default pretraining text for the WordPiece encoder."""
    return [info.name for info in list_datasets() if info.language == "en"]


def corpus_from_datasets(
    names: list[str] | None = None, splits: tuple[str, ...] = ("train",), max_sentences: int | None = None
) -> PretrainingCorpus:
    """One document per (dataset, class): the class's sentences in file order.

    Only ``splits`` are read (default: meta-train), so a downstream test on meta-test classes
    evaluates text the encoder never saw. ``max_sentences`` caps each dataset (for quick runs).
    """
    names = list(names) if names else english_dataset_names()
    unknown_splits = sorted(set(splits) - set(SPLITS))
    if unknown_splits:
        raise DataError(f"Unknown splits {unknown_splits}; use some of {list(SPLITS)}.")
    documents: list[list[str]] = []
    for name in names:
        dataset = load_dataset(name)
        by_class: dict[str, list[str]] = {}
        taken = 0
        for split in splits:
            for example in examples_for_split(dataset, split):
                if max_sentences is not None and taken >= max_sentences:
                    break
                by_class.setdefault(example.label, []).append(example.text)
                taken += 1
        documents.extend(by_class.values())
    description = (
        f"{', '.join(names)} ({'/'.join(splits)} split): one document per class, so a 'next sentence' "
        "is another sentence of the same class (these datasets have no real document order)"
    )
    return PretrainingCorpus(documents, description, names)


def corpus_from_lines(lines: list[str], name: str = "your text") -> PretrainingCorpus:
    """One sentence per line, blank lines between documents.

    Text without any blank line is cut into documents of ``SENTENCES_PER_CHUNK`` consecutive
    lines, so that NSP still has neighbours and other documents; the description says so.
    """
    documents: list[list[str]] = [[]]
    for line in lines:
        for piece in str(line).splitlines() or [""]:
            if piece.strip():
                documents[-1].append(piece.strip())
            elif documents[-1]:
                documents.append([])
    documents = [document for document in documents if document]
    how = "blank lines separate documents"
    if len(documents) == 1:
        only = documents[0]
        documents = [only[i : i + SENTENCES_PER_CHUNK] for i in range(0, len(only), SENTENCES_PER_CHUNK)]
        how = f"no blank lines, so every {SENTENCES_PER_CHUNK} consecutive lines form a document"
    corpus = PretrainingCorpus(documents, f"{name}: one sentence per line, {how}", [name])
    corpus.check_usable()
    return corpus


def corpus_from_text_file(path: str | Path, max_bytes: int = MAX_TEXT_FILE_BYTES) -> PretrainingCorpus:
    """Read a UTF-8 .txt file: one sentence per line, blank lines separating documents."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"The text file {str(path)!r} does not exist.")
    size = path.stat().st_size
    if size > max_bytes:
        raise DataError(f"The text file {path.name} is {size / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"The text file {path.name} is not UTF-8 (byte {error.start}); save it as UTF-8.") from None
    return corpus_from_lines(text.splitlines(), name=path.name)
