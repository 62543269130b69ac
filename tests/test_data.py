"""The dataset registry and the bundled benchmarks: every dataset loads and its splits are leak-free."""

from __future__ import annotations

import pytest

from metanlp.data import (
    SPLITS,
    DataError,
    Example,
    SharedClassDataset,
    TextDataset,
    available_names,
    check_dataset,
    examples_for_split,
    list_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from metanlp.data.registry import FILES_DIR

BUILT_INS = {
    "clinc150",
    "banking77",
    "huffpost",
    "reuters",
    "fewrel",
    "fewrel_pubmed",
    "agnews",
    "sst2",
    "tnews",
}
SHARED_CLASS = {"agnews", "sst2"}


def test_all_builtins_are_bundled():
    assert set(available_names()) >= BUILT_INS
    assert len(BUILT_INS) >= 8


def test_bundle_is_compact():
    total = sum(path.stat().st_size for path in FILES_DIR.rglob("*") if path.is_file())
    assert total < 12 * 2**20


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_dataset_loads_with_usable_fields(name):
    dataset = load_dataset(name)
    check_dataset(dataset)
    assert dataset.name == name
    assert dataset.examples and all(e.text.strip() and e.label for e in dataset.examples)
    for attribute in ("description", "language", "task", "source", "licence", "split_note"):
        assert getattr(dataset, attribute), f"{name}.{attribute} is empty"
    assert isinstance(dataset, SharedClassDataset) == (name in SHARED_CLASS)


@pytest.mark.parametrize("name", sorted(BUILT_INS - SHARED_CLASS))
def test_class_splits_are_disjoint_and_populated(name):
    dataset = load_dataset(name)
    splits = {split: set(dataset.class_splits[split]) for split in SPLITS}
    assert not splits["train"] & splits["val"]
    assert not splits["train"] & splits["test"]
    assert not splits["val"] & splits["test"]
    assert set().union(*splits.values()) == set(dataset.labels())
    for split in SPLITS:
        present = {example.label for example in examples_for_split(dataset, split)}
        assert present == splits[split]


@pytest.mark.parametrize("name", sorted(SHARED_CLASS))
def test_shared_class_datasets_split_examples_not_classes(name):
    dataset = load_dataset(name)
    assert "supervised" in dataset.task and "shared" in dataset.split_note.lower()
    train, test = examples_for_split(dataset, "train"), examples_for_split(dataset, "test")
    assert train and test and not examples_for_split(dataset, "val")
    assert {e.text for e in train}.isdisjoint({e.text for e in test})
    assert {e.label for e in train} == {e.label for e in test} == set(dataset.labels())
    assert len(train) + len(test) == len(dataset.examples)


@pytest.mark.parametrize("name", ["fewrel", "fewrel_pubmed"])
def test_relation_texts_carry_both_entity_markers(name):
    for example in load_dataset(name).examples:
        for marker in ("[E1]", "[/E1]", "[E2]", "[/E2]"):
            assert example.text.count(marker) == 1, example.text
        assert example.text.index("[E1]") < example.text.index("[/E1]")
        assert example.text.index("[E2]") < example.text.index("[/E2]")


def test_fewrel_labels_are_relation_names_and_some_tails_come_first():
    dataset = load_dataset("fewrel")
    assert "spouse" in dataset.labels() and not any(label.startswith("P") for label in dataset.labels())
    assert any(e.text.index("[E2]") < e.text.index("[E1]") for e in dataset.examples)


def test_tnews_is_chinese():
    dataset = load_dataset("tnews")
    assert dataset.language == "zh"
    assert len(dataset.labels()) == 15
    assert any("\u4e00" <= char <= "\u9fff" for char in dataset.examples[0].text)


def test_list_datasets_matches_loaded_data():
    infos = {info.name: info for info in list_datasets()}
    assert set(infos) >= BUILT_INS
    for name in BUILT_INS:
        info, dataset = infos[name], load_dataset(name)
        assert info.n_examples == len(dataset.examples)
        assert info.n_classes == len(dataset.labels())
        assert info.language == dataset.language and info.task == dataset.task
        for split in SPLITS:
            assert info.classes_per_split[split] == len(dataset.class_splits[split])
            assert info.examples_per_split[split] == len(examples_for_split(dataset, split))


@pytest.mark.parametrize("name", ["clinc150", "banking77"])
def test_protaugment_split_ids_are_selectable(name):
    info = next(info for info in list_datasets() if info.name == name)
    assert info.split_ids == ("01", "02", "03", "04", "05")
    assert load_dataset(name).class_splits == load_dataset(name, "01").class_splits
    other = load_dataset(name, "03")
    check_dataset(other)
    assert other.class_splits["test"] != load_dataset(name).class_splits["test"]
    with pytest.raises(DataError, match="01, 02, 03, 04, 05"):
        load_dataset(name, "09")


FEWREL_SPLITS = ("01", "02", "03", "04", "05")


def test_fewrel_has_seeded_class_splits_whose_test_relations_differ():
    info = next(info for info in list_datasets() if info.name == "fewrel")
    assert info.split_ids == FEWREL_SPLITS
    test_sets = set()
    for split_id in FEWREL_SPLITS:
        dataset = load_dataset("fewrel", split_id)
        check_dataset(dataset)  # disjoint train / val / test, every class present
        splits = {split: set(dataset.class_splits[split]) for split in SPLITS}
        assert [len(splits[split]) for split in SPLITS] == [8, 3, 5]
        assert not (splits["train"] | splits["val"]) & splits["test"]
        assert set().union(*splits.values()) == set(dataset.labels())
        test_sets.add(frozenset(splits["test"]))
    assert len(test_sets) == len(FEWREL_SPLITS)  # 5-way test episodes draw other relations per split


def test_fewrel_default_split_is_the_one_bundled_before():
    """Runs made before the splits existed (split_id None) keep their meaning."""
    default = load_dataset("fewrel")
    assert default.class_splits == load_dataset("fewrel", "01").class_splits
    assert default.class_splits["test"] == [
        "child", "follows", "main subject", "position played on team / speciality", "voice type"
    ]


def test_unknown_dataset_names_the_available_ones():
    with pytest.raises(DataError) as error:
        load_dataset("clinc")
    assert "clinc150" in str(error.value) and "banking77" in str(error.value)


def test_load_is_cached():
    assert load_dataset("reuters") is load_dataset("reuters")


def test_examples_for_split_rejects_unknown_split():
    with pytest.raises(DataError, match="validation"):
        examples_for_split(load_dataset("reuters"), "validation")


def _toy(name: str = "toy") -> TextDataset:
    examples = [Example(f"{label} text {i}", label) for label in "abcdef" for i in range(4)]
    return TextDataset(name, examples, {"train": ["a", "b"], "val": ["c", "d"], "test": ["e", "f"]})


def test_register_an_in_memory_dataset():
    try:
        register_dataset("toy_test", _toy("toy_test"))
        assert load_dataset("toy_test").labels() == list("abcdef")
        info = next(info for info in list_datasets() if info.name == "toy_test")
        assert info.n_examples == 24 and info.classes_per_split == {"train": 2, "val": 2, "test": 2}
        with pytest.raises(DataError, match="already exists"):
            register_dataset("toy_test", _toy())
        register_dataset("toy_test", lambda split_id=None: _toy(f"toy {split_id}"), overwrite=True)
        assert load_dataset("toy_test", "x").name == "toy x"
    finally:
        unregister_dataset("toy_test")
    assert "toy_test" not in available_names()


def test_registered_dataset_with_leaking_classes_is_rejected():
    leaky = _toy("leaky")
    leaky.class_splits = {"train": ["a", "b", "c"], "val": ["d"], "test": ["c", "e", "f"]}
    try:
        register_dataset("leaky_test", leaky)
        with pytest.raises(DataError, match="'c'.*train.*test"):
            load_dataset("leaky_test")
    finally:
        unregister_dataset("leaky_test")


def test_shared_class_dataset_needs_one_split_tag_per_example():
    with pytest.raises(DataError, match="split tags"):
        SharedClassDataset("bad", [Example("x", "a")], {s: ["a"] for s in SPLITS}, example_splits=[])
