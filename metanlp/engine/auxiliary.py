"""Auxiliary data: what a method trains on besides its episodes, loaded here and handed over.

A method declares it (``Method.auxiliary_data``: options whose values name datasets, and which splits
it may use) and receives it through ``Method.receive_data``; it never loads a dataset itself. So the
engine is the one place that reads data, a run's configuration says everything the method was trained
on, and a method rebuilt from a checkpoint reads no dataset (it adapts and predicts without this data).
"""

from __future__ import annotations

from typing import Any

from metanlp.data.errors import DataError
from metanlp.data.registry import available_names, dataset_split_ids, examples_for_split, load_dataset
from metanlp.encoders import Encoder
from metanlp.methods.base import AuxiliaryDataset, DataRequest, Method
from metanlp.methods.options import OptionError
from metanlp.methods.registry import create_method


def split_dataset_name(name: str) -> tuple[str, str | None]:
    """"banking77:03" → ("banking77", "03"): a dataset name with an optional class-split id."""
    dataset, _, split_id = name.partition(":")
    return dataset.strip(), split_id.strip() or None


def check_auxiliary_names(method_class: type[Method], options: Any) -> None:
    """``OptionError`` naming the option when it names an unknown dataset or class split; loads nothing."""
    known = available_names()
    for request in method_class.auxiliary_data:
        for name in request.dataset_names(options):
            dataset, split_id = split_dataset_name(name)
            if dataset not in known:
                raise OptionError(
                    f"option {request.option!r} names unknown dataset {dataset!r}; available: {', '.join(known)}",
                    request.option,
                )
            split_ids = dataset_split_ids(dataset)
            if split_id is not None and split_ids and split_id not in split_ids:
                raise OptionError(
                    f"option {request.option!r} names class split {split_id!r} of {dataset!r}, which has "
                    f"{', '.join(split_ids)}",
                    request.option,
                )


def auxiliary_dataset(name: str, request: DataRequest) -> AuxiliaryDataset:
    """The examples and classes of ``request.splits`` of the dataset ``name`` names."""
    dataset_name, split_id = split_dataset_name(name)
    try:
        dataset = load_dataset(dataset_name, split_id)
    except DataError as error:
        raise OptionError(f"option {request.option!r} names {name!r}, which cannot be loaded: {error}", request.option) from None
    return AuxiliaryDataset(
        name=name,
        examples=[example for split in request.splits for example in examples_for_split(dataset, split)],
        classes=list(dict.fromkeys(label for split in request.splits for label in dataset.class_splits[split])),
    )


def load_auxiliary_data(method_class: type[Method], options: Any) -> dict[str, list[AuxiliaryDataset]]:
    """Every dataset ``method_class`` asks for with ``options``, keyed by option name."""
    check_auxiliary_names(method_class, options)
    return {
        request.option: [auxiliary_dataset(name, request) for name in request.dataset_names(options)]
        for request in method_class.auxiliary_data
    }


def supply_auxiliary_data(method: Method) -> Method:
    """Load what ``method`` asks for and hand it over (before training, and before moving the method)."""
    if type(method).auxiliary_data:
        method.receive_data(load_auxiliary_data(type(method), method.options))
    return method


def build_method(name: str, encoder: Encoder, options: dict | None = None) -> Method:
    """A registered method on ``encoder``, with its auxiliary data: ready to train outside ``run_training``."""
    return supply_auxiliary_data(create_method(name, encoder, options))
