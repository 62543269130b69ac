"""Turn a user's CSV / JSON Lines file into a ``TextDataset``, or explain in one sentence what to fix.

Every problem a user can fix is reported as a ``DataError`` whose message names the line, column or class
at fault, so the dashboard can show it instead of a traceback. Softer issues (duplicates, entities not
found) come back as warnings next to the dataset.

This module only puts the steps in order; each lives in its own module: ``file_reading`` (bytes to a
table), ``file_validation`` (table to examples), ``entities`` (entity markers), ``splits`` (class or
example splits) and ``feasibility`` (can a split supply the episodes asked for).
"""

from __future__ import annotations

from pathlib import Path

from metanlp.data.entities import mark_entities
from metanlp.data.errors import DataError
from metanlp.data.feasibility import check_split_feasible
from metanlp.data.file_reading import MAX_UPLOAD_BYTES, read_table
from metanlp.data.file_validation import build_examples, check_columns, drop_duplicates
from metanlp.data.messages import SHOWN
from metanlp.data.registry import SharedClassDataset
from metanlp.data.splits import SEED, split_examples_per_class, split_user_classes
from metanlp.data.types import SPLITS, Example, TextDataset

MIN_CLASSES_FOR_CLASS_SPLIT = 6  # below this, disjoint train/val/test classes leave too few per split
SHARED_TRAIN_FRACTION = 0.8

__all__ = [
    "MAX_UPLOAD_BYTES",
    "MIN_CLASSES_FOR_CLASS_SPLIT",
    "SEED",
    "SHARED_TRAIN_FRACTION",
    "SHOWN",
    "check_episode_feasibility",
    "load_user_dataset",
    "mark_entities",
    "split_user_classes",
]


def load_user_dataset(
    source: str | Path | bytes,
    *,
    filename: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    head_column: str | None = None,
    tail_column: str | None = None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    name: str = "user",
) -> tuple[TextDataset, list[str]]:
    """Read, validate and class-split a user's file; return (dataset, warnings).

    ``source`` is a path or the raw bytes of an upload (give ``filename`` so the format is known).
    With ``head_column`` / ``tail_column`` the entities are wrapped in [E1] / [E2] markers, like the
    bundled relation datasets. Files with at least 6 classes get a disjoint seeded class split; smaller
    ones are shared-class datasets whose examples are split 80/20 per class.
    """
    table, display_name = read_table(source, filename, max_bytes)
    roles = {"text": text_column, "label": label_column, "head entity": head_column, "tail entity": tail_column}
    check_columns({role: column for role, column in roles.items() if column}, table.columns)
    warnings: list[str] = []
    examples, positions = build_examples(table, text_column, label_column, head_column, tail_column, warnings)
    examples = drop_duplicates(examples, positions, table.unit, warnings)
    labels = sorted({example.label for example in examples})
    if len(labels) < 2:
        raise DataError(
            f"The file {display_name} has only one class ('{labels[0]}'); few-shot classification needs at least 2."
        )
    common = {
        "name": name,
        "description": f"Uploaded file {display_name}: {len(examples)} examples in {len(labels)} classes.",
        "language": _guess_language(examples),
        "task": "relation classification (user data)"
        if head_column or tail_column
        else "text classification (user data)",
        "source": f"user upload ({display_name})",
        "licence": "as provided by the user",
    }
    if len(labels) >= MIN_CLASSES_FOR_CLASS_SPLIT:
        return _class_split_dataset(examples, labels, common), warnings
    dataset = _shared_class_dataset(examples, labels, common)
    warnings.append(dataset.split_note)
    return dataset, warnings


def _class_split_dataset(examples: list[Example], labels: list[str], common: dict) -> TextDataset:
    """Enough classes: disjoint seeded train/val/test classes, as meta-learning expects."""
    class_splits = split_user_classes(labels, seed=SEED)
    note = (
        f"Disjoint seeded class split (seed {SEED}, 60/20/20): "
        + ", ".join(f"{len(class_splits[s])} {s}" for s in SPLITS)
        + " classes."
    )
    return TextDataset(examples=examples, class_splits=class_splits, split_note=note, **common)


def _shared_class_dataset(examples: list[Example], labels: list[str], common: dict) -> SharedClassDataset:
    """Too few classes to split them: every class in train and test, the examples split 80/20 instead."""
    note = (
        f"Only {len(labels)} classes (fewer than {MIN_CLASSES_FOR_CLASS_SPLIT}), so the classes cannot be split into "
        "disjoint train/val/test sets. Every class is used for both training and testing, and the examples are "
        f"split 80/20 per class instead (seed {SEED}); the validation split is empty."
    )
    return SharedClassDataset(
        examples=examples,
        class_splits={"train": labels, "val": [], "test": labels},
        split_note=note,
        example_splits=split_examples_per_class([e.label for e in examples], SHARED_TRAIN_FRACTION, SEED),
        **common,
    )


def check_episode_feasibility(
    dataset: TextDataset, n_way: int, k_shot: int, n_query: int, split: str = "test"
) -> None:
    """Raise DataError unless ``split`` can supply N classes with K + Q distinct texts each.

    The same rule as the episode sampler and the Train form (``feasibility.check_split_feasible``).
    """
    check_split_feasible(dataset, split, n_way, k_shot, n_query)


def _guess_language(examples: list[Example]) -> str:
    """'zh' when CJK characters dominate a sample of texts, else 'en' (only used to pick an encoder)."""
    sample = "".join(example.text for example in examples[:200])
    letters = [char for char in sample if char.isalpha()]
    cjk = sum(1 for char in letters if "\u4e00" <= char <= "\u9fff")
    return "zh" if letters and cjk / len(letters) > 0.3 else "en"
