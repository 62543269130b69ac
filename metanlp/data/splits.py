"""Seeded train/val/test splits: of classes (meta-learning) or of examples within classes (shared classes).

One implementation serves the bundling script (``scripts/bundle_datasets.py``) and user uploads, so
a class split written into the bundle and one made for an uploaded file follow the same rule: sort
the class names, shuffle them with ``random.Random(seed)``, cut them into train / val / test blocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable

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

    def test_count(size: int) -> int:
        return size - min(size - 1, round(size * train_fraction)) if size > 1 else 0

    return split_examples_by_count(labels, test_count, seed)


def split_examples_by_count(labels: list[str], test_count: Callable[[int], int], seed: int = SEED) -> list[str]:
    """Seeded split tag ("train" or "test") per example: ``test_count(size)`` of each class go to test.

    Classes are visited in sorted order and each one's examples shuffled by one ``random.Random(seed)``,
    so the tags depend only on the labels (in file order) and the seed.
    """
    rng = random.Random(seed)
    indices_by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        indices_by_label.setdefault(label, []).append(index)
    splits = ["train"] * len(labels)
    for label in sorted(indices_by_label):
        indices = indices_by_label[label]
        rng.shuffle(indices)
        n_test = max(0, min(len(indices), test_count(len(indices))))
        for index in indices[len(indices) - n_test :]:
            splits[index] = "test"
    return splits


def episode_test_count(size: int, needed: int, test_fraction: float = 0.2) -> int:
    """How many of a class's ``size`` examples go to test so that test episodes can use the class.

    ``needed`` = K + queries, what one episode draws from a class. Test gets ``needed`` (or
    ``test_fraction`` of a big class); train keeps the rest, which is ``needed`` or more only when the
    class has 2 × ``needed``. A class smaller than ``needed`` fits no episode in either split: it goes
    to test whole, so a message about the test split shows the class's real size.
    """
    if size < needed:
        return size
    return max(needed, round(size * test_fraction)) if size >= 2 * needed else needed


def episode_class_split_sizes(n_classes: int, n_way: int, fraction: float = 0.2) -> tuple[int, int, int] | None:
    """Train/val/test class counts in which every non-empty split holds ``n_way`` classes or more.

    Val and test get ``fraction`` of the classes (at least ``n_way`` each), train the rest; with fewer
    than 3 × ``n_way`` classes val stays empty. None below 2 × ``n_way`` classes: then no class-disjoint
    split can serve ``n_way``-way episodes in both training and testing.
    """
    if n_classes < 2 * n_way:
        return None
    held_out = max(n_way, round(n_classes * fraction))
    if n_classes - 2 * held_out >= n_way:
        return n_classes - 2 * held_out, held_out, held_out
    test = max(n_way, min(held_out, n_classes - n_way))
    return n_classes - test, 0, test
