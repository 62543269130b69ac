"""Can a split supply N-way K-shot episodes with Q queries per class? One answer for every caller.

The episode sampler, the Train form, the CLI and checks of user files all ask this module, and it
counts exactly what the sampler draws from: distinct texts per class (a repeated text could
otherwise sit in both the support and the query set). So a setting the form accepts is one the
worker can sample, and both report the same sentence when it cannot.
"""

from __future__ import annotations

from numbers import Integral

from metanlp.data.errors import DataError
from metanlp.data.messages import listing
from metanlp.data.registry import SharedClassDataset, examples_for_split
from metanlp.data.types import Example, TextDataset

# (setting, what it means, smallest allowed value)
EPISODE_SETTINGS = (
    ("n_way", "classes per episode", 2),
    ("k_shot", "support examples per class", 1),
    ("n_query", "query examples per class", 1),
)


class EpisodeSettingsError(DataError):
    """Episode settings the data cannot serve; ``field`` names the setting to change.

    ``field`` is "n_way", "k_shot" or "n_query", or "dataset" when no setting can help, so a
    form can show the message beside the right widget without reading the message text.
    """

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple:
        return type(self), (str(self), self.field)  # survives pickling (e.g. from a worker process)


def group_by_label(examples: list[Example]) -> dict[str, list[str]]:
    """Texts per label, duplicates removed so support and query can never share a text."""
    grouped: dict[str, dict[str, None]] = {}
    for example in examples:
        grouped.setdefault(example.label, {})[example.text] = None
    return {label: list(texts) for label, texts in sorted(grouped.items())}


def distinct_texts(texts_by_label: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each label's texts with repeats removed (first occurrence kept): what the sampler draws from."""
    return {label: list(dict.fromkeys(texts)) for label, texts in texts_by_label.items()}


def classes_that_fit(texts_by_label: dict[str, list[str]], needed: int) -> dict[str, list[str]]:
    """The classes with at least ``needed`` distinct texts; the sampler skips the others."""
    return {label: texts for label, texts in distinct_texts(texts_by_label).items() if len(texts) >= needed}


def check_episode_settings(n_way: int, k_shot: int, n_query: int) -> None:
    """Raise ``EpisodeSettingsError`` unless N, K and Q are whole numbers in range (N >= 2, K, Q >= 1)."""
    for (name, meaning, smallest), value in zip(EPISODE_SETTINGS, (n_way, k_shot, n_query), strict=True):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < smallest:
            raise EpisodeSettingsError(
                f"{name} ({meaning}) must be a whole number of at least {smallest}; got {value!r}.", name
            )


def check_texts_feasible(
    texts_by_label: dict[str, list[str]], n_way: int, k_shot: int, n_query: int, split: str = ""
) -> None:
    """Raise ``EpisodeSettingsError`` unless ``n_way`` classes have ``k_shot + n_query`` distinct texts each.

    ``split`` only names the data in the message ("the test split"). The message says which constraint
    fails (too few classes, or too few examples in the classes there are), names the small classes
    with their counts, and suggests the largest setting that would work.
    """
    check_episode_settings(n_way, k_shot, n_query)
    counts = {label: len(texts) for label, texts in distinct_texts(texts_by_label).items() if texts}
    where = f"the {split} split" if split else "these examples"
    if not counts:
        raise EpisodeSettingsError(f"{where.capitalize()} has no classes, so no episodes can be drawn from it.", "dataset")
    if len(counts) < n_way:
        classes = f"{len(counts)} class" if len(counts) == 1 else f"{len(counts)} classes"
        choice = f"Choose N ≤ {len(counts)}, or use" if len(counts) >= 2 else "Use"
        raise EpisodeSettingsError(
            f"{where.capitalize()} has only {classes} ({listing(sorted(counts))}), but {n_way}-way "
            f"episodes need {n_way}. {choice} data with more classes.",
            "n_way",
        )
    needed = k_shot + n_query
    big_enough = sum(count >= needed for count in counts.values())
    if big_enough < n_way:
        too_small = sorted((count, label) for label, count in counts.items() if count < needed)
        field, hint = _largest_setting_that_fits(sorted(counts.values(), reverse=True), n_way, n_query)
        raise EpisodeSettingsError(
            f"{n_way}-way {k_shot}-shot episodes with {n_query} queries per class need K + queries = {needed} "
            f"examples (distinct texts) in each of {n_way} classes, but only {big_enough} of the {len(counts)} "
            f"classes in {where} have that many. Too small: "
            f"{listing([f'{label!r} ({count})' for count, label in too_small])}. {hint}",
            field,
        )


def _largest_setting_that_fits(counts: list[int], n_way: int, n_query: int) -> tuple[str, str]:
    """(setting to change, sentence naming its largest workable value); ``counts`` sorted largest first."""
    available = counts[n_way - 1]  # distinct texts of the N-th largest class: every one of the top N has this many
    if available - n_query >= 1:
        return "k_shot", f"With {n_query} queries, K can be at most {available - n_query}."
    if available >= 2:
        return "n_query", f"Use at most {available - 1} queries per class (with K = 1), or a smaller N."
    usable = sum(count >= 2 for count in counts)
    if usable >= 2:
        return "n_way", f"Only {usable} classes have the 2 examples an episode needs at least; choose N ≤ {usable}."
    return "dataset", "Fewer than 2 classes have 2 examples; add examples."


def check_feasible(examples: list[Example], n_way: int, k_shot: int, n_query: int, split: str = "") -> None:
    """Raise ``EpisodeSettingsError`` unless ``examples`` can supply N-way K-shot episodes with Q queries."""
    check_texts_feasible(group_by_label(examples), n_way, k_shot, n_query, split)


def check_split_feasible(dataset: TextDataset, split: str, n_way: int, k_shot: int, n_query: int) -> None:
    """``check_feasible`` on the examples an episode of ``split`` may draw from (``DataError`` for an unknown split).

    When the dataset shares its classes between splits, a class holds only part of its examples in
    each split; the message says so, since the file's class sizes alone would look big enough.
    """
    examples = examples_for_split(dataset, split)
    try:
        check_feasible(examples, n_way, k_shot, n_query, split)
    except EpisodeSettingsError as error:
        split_lacks_classes = len({example.label for example in examples}) < len(dataset.labels())
        if not isinstance(dataset, SharedClassDataset) or error.field == "dataset" or (
            error.field == "n_way" and not split_lacks_classes
        ):
            raise
        raise EpisodeSettingsError(
            f"{error} The classes of this dataset are shared by train and test and each class's examples are "
            f"split between them, so the {split} split holds only part of each class.",
            error.field,
        ) from None
