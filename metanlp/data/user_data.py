"""Turn a user's CSV / JSON Lines file into a ``TextDataset``, or explain in one sentence what to fix.

Every problem a user can fix is reported as a ``DataError`` whose message names the line, column or class
at fault, so the dashboard can show it instead of a traceback. Softer issues (duplicates, entities not
found) come back as warnings next to the dataset.

This module puts the steps in order and picks the split policy; each step lives in its own module:
``file_reading`` (bytes to a table), ``file_validation`` (table to examples), ``entities`` (entity
markers), ``splits`` (class or example splits) and ``feasibility`` (can a split supply the episodes
asked for). The split depends on the episodes asked for: a small file that cannot give N disjoint
classes to both training and testing shares its classes and splits their examples instead.
"""

from __future__ import annotations

from pathlib import Path

from metanlp.data.entities import mark_entities
from metanlp.data.errors import DataError
from metanlp.data.feasibility import check_episode_settings, check_split_feasible, group_by_label
from metanlp.data.file_reading import MAX_UPLOAD_BYTES, read_table
from metanlp.data.file_validation import build_examples, check_columns, drop_duplicates
from metanlp.data.messages import SHOWN, count, listing
from metanlp.data.registry import SharedClassDataset
from metanlp.data.splits import (
    SEED,
    episode_class_split_sizes,
    episode_test_count,
    seeded_class_split,
    split_examples_by_count,
    split_user_classes,
)
from metanlp.data.types import Example, TextDataset

# The episode shape a file is split for when none is given: the Train page's and RunConfig's defaults.
DEFAULT_N_WAY, DEFAULT_K_SHOT, DEFAULT_N_QUERY = 5, 1, 5
HELD_OUT_FRACTION = 0.2  # of the classes (val, test) in a class split; of a big class's examples in a shared one

__all__ = [
    "DEFAULT_K_SHOT",
    "DEFAULT_N_QUERY",
    "DEFAULT_N_WAY",
    "MAX_UPLOAD_BYTES",
    "SEED",
    "SHOWN",
    "check_episode_feasibility",
    "load_user_dataset",
    "mark_entities",
    "split_for_episodes",
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
    n_way: int = DEFAULT_N_WAY,
    k_shot: int = DEFAULT_K_SHOT,
    n_query: int = DEFAULT_N_QUERY,
) -> tuple[TextDataset, list[str]]:
    """Read, validate and split a user's file for ``n_way``-way ``k_shot``-shot episodes; return (dataset, warnings).

    ``source`` is a path or the raw bytes of an upload (give ``filename`` so the format is known).
    With ``head_column`` / ``tail_column`` the entities are wrapped in [E1] / [E2] markers, like the
    bundled relation datasets. The split depends on the episodes asked for (``split_for_episodes``):
    disjoint train / test classes when there are enough classes for ``n_way`` in each, else shared
    classes whose examples are split. ``dataset.split_note`` says which, and why.
    """
    check_episode_settings(n_way, k_shot, n_query)
    table, display_name = read_table(source, filename, max_bytes)
    roles = {"text": text_column, "label": label_column, "head entity": head_column, "tail entity": tail_column}
    check_columns({role: column for role, column in roles.items() if column}, table)
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
    dataset = split_for_episodes(examples, n_way, k_shot, n_query, **common)
    if isinstance(dataset, SharedClassDataset):
        warnings.append(dataset.split_note)  # test classes are seen in training: worth a warning
    return dataset, warnings


def split_for_episodes(examples: list[Example], n_way: int, k_shot: int, n_query: int, **details) -> TextDataset:
    """The split that lets ``n_way``-way episodes with ``k_shot + n_query`` examples per class work.

    Disjoint train / (val) / test classes, the proper few-shot protocol, when at least 2 × ``n_way``
    classes have ``k_shot + n_query`` distinct texts (3 × for a validation split too); otherwise every
    class is shared and each class's examples are split, test first. ``details`` are ``TextDataset`` fields.
    """
    needed = k_shot + n_query
    sizes = {label: len(texts) for label, texts in group_by_label(examples).items()}  # distinct texts
    usable = sorted(label for label, size in sizes.items() if size >= needed)
    class_counts = episode_class_split_sizes(len(usable), n_way, HELD_OUT_FRACTION)
    if class_counts is not None:
        return _class_split_dataset(examples, sizes, usable, class_counts, n_way, needed, details)
    return _shared_class_dataset(examples, sizes, usable, n_way, needed, details)


def _class_split_dataset(
    examples: list[Example], sizes: dict[str, int], usable: list[str], class_counts: tuple[int, int, int],
    n_way: int, needed: int, details: dict,
) -> TextDataset:
    """Enough classes: disjoint seeded train/val/test classes, as meta-learning expects."""
    class_splits = seeded_class_split(usable, class_counts, SEED)
    too_small = sorted(set(sizes) - set(usable))
    class_splits["train"] = sorted(class_splits["train"] + too_small)  # no episode can use them elsewhere
    n_train, n_val, n_test = (len(class_splits[split]) for split in ("train", "val", "test"))
    note = (
        f"Classes split for meta-learning (seed {SEED}): {n_train} train, {n_val} validation and {n_test} test "
        f"classes, disjoint, so the model is tested on classes it never saw in training (the standard few-shot "
        f"protocol). Each split in use has at least {n_way} classes with K + queries = {needed} examples, "
        f"as {n_way}-way episodes need."
    )
    if not n_val:
        note += f" There are no validation classes: that needs {3 * n_way} such classes, the file has {len(usable)}."
    if too_small:
        note += (
            f" {count(len(too_small), 'class', 'classes')} with fewer than {needed} examples ({listing(too_small)}) "
            "went to train, where episodes skip them."
        )
    return TextDataset(examples=examples, class_splits=class_splits, split_note=note, **details)


def _shared_class_dataset(
    examples: list[Example], sizes: dict[str, int], usable: list[str], n_way: int, needed: int, details: dict
) -> SharedClassDataset:
    """Too few classes to split them for ``n_way``-way episodes: share the classes, split each one's examples."""
    labels = sorted(sizes)
    if len(labels) < n_way:
        reason = (
            f"The file has {len(labels)} classes, fewer than the {n_way} that {n_way}-way episodes need: "
            f"choose N ≤ {len(labels)}."
        )
    else:
        reason = (
            f"Disjoint train and test classes for {n_way}-way episodes need {2 * n_way} classes with K + queries = "
            f"{needed} examples each; the file has {len(usable)}."
        )
    note = (
        f"{reason} So the classes are shared and each class's examples are split instead (seed {SEED}): "
        f"{needed} of each class (K + queries; {round(100 * HELD_OUT_FRACTION)}% of a big class) to test, the rest "
        "to train. Train and test never share a sentence, but the test classes are not new to the model, unlike "
        "the standard few-shot protocol. There is no validation split."
    )
    if len(usable) < len(labels):
        note += f" Classes with fewer than {needed} examples fit no episode; their examples all sit in the test split."
    short_for_training = sorted(label for label in usable if sizes[label] < 2 * needed)
    if short_for_training and len(labels) >= n_way:
        largest = sorted(sizes.values(), reverse=True)
        fits_both = largest[n_way - 1] // 2 if len(largest) >= n_way else 0
        advice = f"use K + queries ≤ {fits_both}" if fits_both >= 2 else "add examples"
        note += (
            f" {count(len(short_for_training), 'class', 'classes')} ({listing(short_for_training)}) have fewer than "
            f"2 × {needed} examples, so fewer than {needed} stay in train: to meta-train {n_way}-way, {advice}."
        )
    if len(usable) >= 4:
        note += f" With N ≤ {len(usable) // 2}, the classes themselves would be split (disjoint)."
    return SharedClassDataset(
        examples=examples,
        class_splits={"train": labels, "val": [], "test": labels},
        split_note=note,
        example_splits=split_examples_by_count(
            [example.label for example in examples], lambda size: episode_test_count(size, needed), SEED
        ),
        **details,
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
