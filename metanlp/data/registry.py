"""Named datasets: the benchmarks bundled in ``files/`` plus any registered at run time.

Every consumer (sampler, engine, dashboard) asks this module for data by name, so adding a dataset is
either one folder written by ``scripts/bundle_datasets.py`` or one ``register_dataset`` call.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import inspect
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from metanlp.data.errors import DataError
from metanlp.data.types import SPLITS, Example, TextDataset

FILES_DIR = Path(__file__).parent / "files"

Loader = Callable[..., TextDataset]
_REGISTERED: dict[str, Loader] = {}


@dataclass
class SharedClassDataset(TextDataset):
    """A dataset whose few classes all appear in every split, so the EXAMPLES are split instead.

    Used for supervised / transfer datasets with too few classes for disjoint meta-splits (AG News, SST-2,
    small user files). ``example_splits[i]`` is the split ("train", "val" or "test") of ``examples[i]``;
    train and test episodes then never share an example.
    """

    example_splits: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.example_splits) != len(self.examples):
            raise DataError(
                f"Dataset '{self.name}' has {len(self.examples)} examples but {len(self.example_splits)} "
                "split tags; every example needs exactly one."
            )
        unknown = sorted(set(self.example_splits) - set(SPLITS))
        if unknown:
            raise DataError(
                f"Dataset '{self.name}' tags examples with unknown splits {unknown}; use {list(SPLITS)}."
            )


@dataclass(frozen=True)
class DatasetInfo:
    """What a user needs to pick a dataset, without loading its examples."""

    name: str
    description: str
    language: str
    task: str
    n_classes: int
    n_examples: int
    classes_per_split: dict[str, int]
    examples_per_split: dict[str, int]
    source: str
    licence: str
    split_note: str
    shared_classes: bool
    split_ids: tuple[str, ...] = ()


# ---------------------------------------------------------------- bundled datasets


def _bundled_names() -> list[str]:
    if not FILES_DIR.is_dir():
        return []
    return sorted(p.name for p in FILES_DIR.iterdir() if (p / "metadata.json").is_file())


@functools.cache
def _bundled_metadata(name: str) -> dict:
    return json.loads((FILES_DIR / name / "metadata.json").read_text(encoding="utf-8"))


def _bundled_class_splits(name: str, split_id: str | None) -> tuple[dict[str, list[str]], str | None]:
    """Return the class split to use and its id (None for datasets with a single split)."""
    metadata = _bundled_metadata(name)
    split_ids = metadata["split_ids"]
    if split_id is None or split_id == metadata["default_split_id"]:
        return metadata["class_splits"], metadata["default_split_id"]
    if split_id not in split_ids:
        offered = f"choose one of {', '.join(split_ids)}" if split_ids else "it has only its default split"
        raise DataError(f"Dataset '{name}' has no class split '{split_id}'; {offered}.")
    all_splits = json.loads((FILES_DIR / name / "class_splits.json").read_text(encoding="utf-8"))
    return all_splits[split_id], split_id


def _load_bundled(name: str, split_id: str | None) -> TextDataset:
    metadata = _bundled_metadata(name)
    class_splits, used_id = _bundled_class_splits(name, split_id)
    with gzip.open(FILES_DIR / name / "examples.jsonl.gz", "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    split_note = metadata["split_note"]
    if used_id is not None:
        split_note += f" Loaded with split_id {used_id}."
    common = {
        "name": name,
        "examples": [Example(text=r["text"], label=r["label"]) for r in records],
        "class_splits": {split: list(class_splits[split]) for split in SPLITS},
        "description": metadata["description"],
        "language": metadata["language"],
        "task": metadata["task"],
        "source": metadata["source"],
        "licence": metadata["licence"],
        "split_note": split_note,
    }
    if metadata["shared_classes"]:
        return SharedClassDataset(**common, example_splits=[r["split"] for r in records])
    return TextDataset(**common)


# ---------------------------------------------------------------- public API


def available_names() -> list[str]:
    """Names accepted by ``load_dataset``: bundled ones plus registered ones."""
    return sorted(set(_bundled_names()) | set(_REGISTERED))


def register_dataset(name: str, loader: Loader | TextDataset, *, overwrite: bool = False) -> None:
    """Make a dataset loadable by name.

    ``loader`` is a ready ``TextDataset`` or a function returning one; if the function accepts a
    ``split_id`` keyword, ``load_dataset(name, split_id=...)`` passes it through.
    """
    if not isinstance(name, str) or not name.strip():
        raise DataError("A dataset name must be a non-empty string.")
    if name in available_names() and not overwrite:
        raise DataError(f"A dataset named '{name}' already exists; pass overwrite=True to replace it.")
    if isinstance(loader, TextDataset):
        dataset = loader
        _REGISTERED[name] = lambda: dataset
    elif callable(loader):
        _REGISTERED[name] = loader
    else:
        raise DataError(f"register_dataset('{name}', ...) needs a TextDataset or a function returning one.")
    _load_cached.cache_clear()


def unregister_dataset(name: str) -> None:
    """Forget a dataset added with ``register_dataset`` (bundled ones stay)."""
    _REGISTERED.pop(name, None)
    _load_cached.cache_clear()


def load_dataset(name: str, split_id: str | None = None) -> TextDataset:
    """Load a dataset by name; ``split_id`` picks one of several published class splits (e.g. "03").

    Results are cached, so the same object comes back on every call: treat it as read-only.
    """
    if name not in available_names():
        names = available_names()
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise DataError(f"There is no dataset named '{name}'.{hint} Available datasets: {', '.join(names)}.")
    return _load_cached(name, split_id)


@functools.lru_cache(maxsize=32)
def _load_cached(name: str, split_id: str | None) -> TextDataset:
    if name not in _REGISTERED:
        return _load_bundled(name, split_id)
    loader = _REGISTERED[name]
    if split_id is None:
        dataset = loader()
    elif _accepts_split_id(loader):
        dataset = loader(split_id=split_id)
    else:
        raise DataError(f"Dataset '{name}' has a single class split; leave split_id empty.")
    if not isinstance(dataset, TextDataset):
        raise DataError(
            f"The loader registered for '{name}' returned {type(dataset).__name__}, not a TextDataset."
        )
    check_dataset(dataset)
    return dataset


def _accepts_split_id(loader: Loader) -> bool:
    try:
        parameters = inspect.signature(loader).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "split_id" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def check_dataset(dataset: TextDataset) -> None:
    """Raise DataError unless the class split is usable: known split names, disjoint where it must be,
    and every listed class present in the examples."""
    if set(dataset.class_splits) != set(SPLITS):
        raise DataError(
            f"Dataset '{dataset.name}' must give class lists for exactly {list(SPLITS)}; "
            f"it gives {sorted(dataset.class_splits)}."
        )
    present = set(dataset.labels())
    for split in SPLITS:
        missing = sorted(set(dataset.class_splits[split]) - present)
        if missing:
            raise DataError(
                f"Dataset '{dataset.name}' lists classes in its {split} split that have no examples: "
                f"{', '.join(missing[:5])}."
            )
    if isinstance(dataset, SharedClassDataset):
        return
    seen: dict[str, str] = {}
    for split in SPLITS:
        for label in dataset.class_splits[split]:
            if label in seen and seen[label] != split:
                raise DataError(
                    f"Class '{label}' of dataset '{dataset.name}' is in both the {seen[label]} and the {split} "
                    "split; meta-test classes must never be seen in meta-training."
                )
            seen[label] = split


def examples_for_split(dataset: TextDataset, split: str) -> list[Example]:
    """The examples an episode of ``split`` may draw from.

    Class-disjoint datasets: every example whose class is listed for ``split``. Shared-class datasets:
    only the examples tagged with ``split`` (and of a class listed for it), so train and test never overlap.
    """
    if split not in SPLITS:
        raise DataError(f"Unknown split '{split}'; use one of {', '.join(SPLITS)}.")
    allowed = set(dataset.class_splits.get(split, []))
    if isinstance(dataset, SharedClassDataset):
        pairs = zip(dataset.examples, dataset.example_splits, strict=True)
        return [example for example, tag in pairs if tag == split and example.label in allowed]
    return [example for example in dataset.examples if example.label in allowed]


def describe_dataset(dataset: TextDataset) -> DatasetInfo:
    """Summarise a loaded dataset (used for registered datasets, which have no metadata file)."""
    examples = {split: examples_for_split(dataset, split) for split in SPLITS}
    return DatasetInfo(
        name=dataset.name,
        description=dataset.description,
        language=dataset.language,
        task=dataset.task,
        n_classes=len(dataset.labels()),
        n_examples=len(dataset.examples),
        classes_per_split={split: len(dataset.class_splits[split]) for split in SPLITS},
        examples_per_split={split: len(examples[split]) for split in SPLITS},
        source=dataset.source,
        licence=dataset.licence,
        split_note=dataset.split_note,
        shared_classes=isinstance(dataset, SharedClassDataset),
    )


def _bundled_info(name: str) -> DatasetInfo:
    metadata = _bundled_metadata(name)
    return DatasetInfo(
        name=name,
        description=metadata["description"],
        language=metadata["language"],
        task=metadata["task"],
        n_classes=metadata["n_classes"],
        n_examples=metadata["n_examples"],
        classes_per_split={split: len(metadata["class_splits"][split]) for split in SPLITS},
        examples_per_split=dict(metadata["examples_per_split"]),
        source=metadata["source"],
        licence=metadata["licence"],
        split_note=metadata["split_note"],
        shared_classes=metadata["shared_classes"],
        split_ids=tuple(metadata["split_ids"]),
    )


def dataset_split_ids(name: str) -> tuple[str, ...]:
    """The selectable class-split ids of a dataset, e.g. ("01", ..., "05"); () when it has one split."""
    if name in _REGISTERED or name not in _bundled_names():
        load_dataset(name)  # raises DataError naming the available datasets
        return ()
    return tuple(_bundled_metadata(name)["split_ids"])


def list_datasets() -> list[DatasetInfo]:
    """One summary per available dataset; bundled ones come from metadata.json without decompressing."""
    return [
        describe_dataset(load_dataset(name)) if name in _REGISTERED else _bundled_info(name)
        for name in available_names()
    ]


def label_counts(dataset: TextDataset, split: str) -> Counter[str]:
    """Examples per class within one split (what the episode sampler can draw from)."""
    return Counter(example.label for example in examples_for_split(dataset, split))
