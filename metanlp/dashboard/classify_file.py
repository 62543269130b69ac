"""Classify a whole file with an adapted model and, when it has labels, score it per class.

The file is read by the same reader as training uploads (size limit, formats, clear messages);
rows are capped so a CPU answers in seconds to minutes. Per-class precision, recall and F1 and
the confusion matrix count only rows whose label is one of the adapted classes; the others are
counted and named, not silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from metanlp.data.errors import DataError
from metanlp.data.file_reading import MAX_UPLOAD_BYTES, read_table
from metanlp.data.messages import listing

MAX_CLASSIFY_ROWS = 5_000
TEXT_COLUMNS = ("text", "sentence", "utterance", "query", "headline")
LABEL_COLUMNS = ("label", "intent", "category", "class")


@dataclass
class FileToClassify:
    texts: list[str]
    labels: list[str] | None  # None: the file has no label column
    text_column: str
    label_column: str | None
    notes: list[str] = field(default_factory=list)


def _pick(columns: list[str], wanted: str | None, usual: tuple[str, ...], what: str, display: str) -> str | None:
    if wanted:
        if wanted not in columns:
            raise DataError(f"The file {display} has no column '{wanted}'; its columns are {listing(columns)}.")
        return wanted
    lowered = {column.lower(): column for column in columns}
    return next((lowered[name] for name in usual if name in lowered), None)


def read_file_to_classify(
    data: bytes, filename: str, text_column: str | None = None, label_column: str | None = None,
    max_rows: int = MAX_CLASSIFY_ROWS, max_bytes: int = MAX_UPLOAD_BYTES,
) -> FileToClassify:
    """Texts (and labels, when the file has a label column) of an uploaded CSV/TSV/JSONL file."""
    table, display = read_table(data, filename, max_bytes)
    text = _pick(table.columns, text_column, TEXT_COLUMNS, "text", display)
    if text is None:
        raise DataError(f"Which column holds the texts? {display} has {listing(table.columns)}; choose it above.")
    label = _pick(table.columns, label_column, LABEL_COLUMNS, "label", display)
    rows = [row for row in table.rows if row.cells.get(text, "").strip()]
    notes = []
    if len(rows) < len(table.rows):
        notes.append(f"{len(table.rows) - len(rows)} rows with an empty text were left out.")
    if len(rows) > max_rows:
        notes.append(f"Only the first {max_rows:,} of {len(rows):,} rows are classified (a CPU takes a while per row).")
        rows = rows[:max_rows]
    if not rows:
        raise DataError(f"The file {display} has no text to classify in column '{text}'.")
    labels = [row.cells.get(label, "").strip() for row in rows] if label else None
    return FileToClassify([row.cells[text].strip() for row in rows], labels, text, label, notes)


def predictions_table(texts: list[str], probabilities: np.ndarray, classes: list[str],
                      labels: list[str] | None = None) -> pd.DataFrame:
    """One row per text: its prediction and confidence (and its label and whether it was right, if known)."""
    best = probabilities.argmax(axis=1) if len(texts) else np.zeros(0, dtype=int)
    table = pd.DataFrame({
        "text": texts,
        "predicted": [classes[index] for index in best],
        "confidence": probabilities[np.arange(len(texts)), best] if len(texts) else [],
    })
    if labels is not None:
        table["label"] = labels
        table["correct"] = table["label"] == table["predicted"]
    return table


@dataclass
class Scores:
    per_class: pd.DataFrame  # class, precision, recall, f1, support
    confusion: pd.DataFrame  # rows: true class, columns: predicted class (counts)
    accuracy: float
    scored: int  # rows whose label is one of the classes
    other_labels: dict[str, int]  # labels that are not adapted classes → how many rows


def score_predictions(labels: list[str], predicted: list[str], classes: list[str]) -> Scores:
    """Per-class precision/recall/F1 and the confusion matrix over rows labelled with one of ``classes``."""
    known = set(classes)
    pairs = [(label, guess) for label, guess in zip(labels, predicted, strict=True) if label in known]
    others: dict[str, int] = {}
    for label in labels:
        if label not in known:
            others[label] = others.get(label, 0) + 1
    confusion = pd.DataFrame(0, index=pd.Index(classes, name="true class"), columns=pd.Index(classes, name="predicted"))
    for label, guess in pairs:
        confusion.loc[label, guess] += 1
    rows = []
    for name in classes:
        hits = int(confusion.loc[name, name])
        predicted_as = int(confusion[name].sum())
        support = int(confusion.loc[name].sum())
        precision = hits / predicted_as if predicted_as else float("nan")
        recall = hits / support if support else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
        rows.append({"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support})
    correct = sum(label == guess for label, guess in pairs)
    return Scores(
        per_class=pd.DataFrame(rows), confusion=confusion,
        accuracy=correct / len(pairs) if pairs else float("nan"), scored=len(pairs), other_labels=others,
    )
