"""Seeded train/val/test splits: of classes (meta-learning) or of examples within classes (shared classes).

One implementation serves the bundling script (``scripts/bundle_datasets.py``) and user uploads, so
a class split written into the bundle and one made for an uploaded file follow the same rule: sort
the class names, shuffle them with ``random.Random(seed)``, cut them into train / val / test blocks.
"""

from __future__ import annotations

import random

from metanlp.data.errors import DataError

SEED = 0


def seeded_class_split(labels: list[str], sizes: tuple[int, int, int], seed: int = SEED) -> dict[str, list[str]]:
    """Disjoint train/val/test class lists of ``sizes`` classes, from the sorted names shuffled by ``seed``.

    Sorting first makes the split depend only on the set of names and the seed, not on file order.
    """
    classes = sorted(set(labels))
    if len(sizes) != 3 or any(size < 0 for size in sizes) or sum(sizes) != len(classes):
        raise DataError(f"Class split sizes {tuple(sizes)} must be three counts summing to {len(classes)} classes.")
    random.Random(seed).shuffle(classes)
    n_train, n_val, _ = sizes
    return {
        "train": sorted(classes[:n_train]),
        "val": sorted(classes[n_train : n_train + n_val]),
        "test": sorted(classes[n_train + n_val :]),
    }


def class_split_sizes(n_classes: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Train/val/test class counts near ``fractions`` of ``n_classes``.

    Each split with a non-zero fraction gets at least 2 classes when there are enough, because an
    episode needs N >= 2 classes; the train split absorbs rounding.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"Class split fractions must be three non-negative numbers summing to 1; got {fractions}.")
    active = [i for i, f in enumerate(fractions) if f > 0]
    minimum = 2 if n_classes >= 2 * len(active) else 1 if n_classes >= len(active) else 0
    counts = [max(minimum, round(n_classes * f)) if f > 0 else 0 for f in fractions]
    while sum(counts) > n_classes:  # take from the biggest split that can spare one
        spare = [i for i in active if counts[i] > minimum] or active
        counts[max(spare, key=lambda i: counts[i])] -= 1
    while sum(counts) < n_classes:
        counts[max(active, key=lambda i: fractions[i])] += 1
    n_train, n_val, n_test = counts
    return n_train, n_val, n_test


def split_user_classes(
    labels: list[str], seed: int = SEED, fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
) -> dict[str, list[str]]:
    """Seeded disjoint train/val/test class split by fractions (60/20/20 by default)."""
    return seeded_class_split(labels, class_split_sizes(len(set(labels)), fractions), seed)


def split_examples_per_class(labels: list[str], train_fraction: float, seed: int = SEED) -> list[str]:
    """Seeded split tag ("train" or "test") for each example, given its label, stratified by class.

    For classes whose few labels all appear in every split: the examples are split instead, about
    ``train_fraction`` of each class to train, and every class with 2+ examples keeps a test example.
    """
    rng = random.Random(seed)
    indices_by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        indices_by_label.setdefault(label, []).append(index)
    splits = ["train"] * len(labels)
    for label in sorted(indices_by_label):
        indices = indices_by_label[label]
        rng.shuffle(indices)
        n_train = min(len(indices) - 1, round(len(indices) * train_fraction)) if len(indices) > 1 else 1
        for index in indices[n_train:]:
            splits[index] = "test"
    return splits
