"""Data layer: plain types, the dataset registry (bundled benchmarks) and validation of user files."""

from metanlp.data.errors import DataError
from metanlp.data.registry import (
    DatasetInfo,
    SharedClassDataset,
    available_names,
    check_dataset,
    describe_dataset,
    examples_for_split,
    label_counts,
    list_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from metanlp.data.types import SPLITS, Episode, Example, TextDataset
from metanlp.data.user_data import (
    MAX_UPLOAD_BYTES,
    check_episode_feasibility,
    load_user_dataset,
    mark_entities,
    split_user_classes,
)

__all__ = [
    "MAX_UPLOAD_BYTES",
    "SPLITS",
    "DataError",
    "DatasetInfo",
    "Episode",
    "Example",
    "SharedClassDataset",
    "TextDataset",
    "available_names",
    "check_dataset",
    "check_episode_feasibility",
    "describe_dataset",
    "examples_for_split",
    "label_counts",
    "list_datasets",
    "load_dataset",
    "load_user_dataset",
    "mark_entities",
    "register_dataset",
    "split_user_classes",
    "unregister_dataset",
]
