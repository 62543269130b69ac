"""Episode sampler: counts, disjointness, reproducibility, and meta-test classes kept apart."""

from __future__ import annotations

import pytest

from metanlp.data.episodes import EpisodeSampler, load_episodes, save_episodes
from metanlp.data.errors import DataError
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.data.types import Example


@pytest.mark.parametrize("dataset_name", ["clinc150", "banking77", "huffpost", "fewrel", "tnews"])
def test_episode_properties(dataset_name):
    dataset = load_dataset(dataset_name)
    train_classes = set(dataset.class_splits["train"])
    test_classes = set(dataset.class_splits["test"])
    assert not train_classes & test_classes
    sampler = EpisodeSampler.from_examples(examples_for_split(dataset, "test"), 5, 3, 4, seed=7, split="test")
    for episode in sampler.take(20):
        assert len(episode.classes) == len(set(episode.classes)) == 5
        assert set(episode.classes) <= test_classes
        assert len(episode.support_texts) == 15 and len(episode.query_texts) == 20
        assert sorted(set(episode.support_labels)) == [0, 1, 2, 3, 4]
        assert [episode.support_labels.count(i) for i in range(5)] == [3] * 5
        assert [episode.query_labels.count(i) for i in range(5)] == [4] * 5
        assert not set(episode.support_texts) & set(episode.query_texts)
    train_sampler = EpisodeSampler.from_examples(examples_for_split(dataset, "train"), 5, 1, 1, seed=0)
    for episode in train_sampler.take(50):
        assert not set(episode.classes) & test_classes


def test_labels_map_back_to_their_class():
    dataset = load_dataset("clinc150")
    label_of = {example.text: example.label for example in dataset.examples}
    episode = EpisodeSampler.from_examples(examples_for_split(dataset, "test"), 5, 2, 2, seed=3).sample()
    for text, label in zip(episode.support_texts + episode.query_texts, episode.support_labels + episode.query_labels, strict=True):
        assert label_of[text] == episode.classes[label]


def test_seeded_and_reproducible():
    examples = examples_for_split(load_dataset("banking77"), "train")
    first = EpisodeSampler.from_examples(examples, 5, 1, 5, seed=11).take(5)
    again = EpisodeSampler.from_examples(examples, 5, 1, 5, seed=11).take(5)
    other = EpisodeSampler.from_examples(examples, 5, 1, 5, seed=12).take(5)
    assert [e.to_dict() for e in first] == [e.to_dict() for e in again]
    assert [e.to_dict() for e in first] != [e.to_dict() for e in other]


def test_too_few_classes_or_examples_name_the_problem():
    examples = [Example(f"text {i}", "big") for i in range(10)] + [Example("only one", "tiny")]
    with pytest.raises(DataError, match="'tiny' \\(1\\)"):
        EpisodeSampler.from_examples(examples, 2, 2, 2)
    with pytest.raises(DataError, match="n_way"):
        EpisodeSampler.from_examples(examples, 1, 2, 2)


def test_save_and_load_fixed_episodes(tmp_path):
    examples = examples_for_split(load_dataset("clinc150"), "test")
    episodes = EpisodeSampler.from_examples(examples, 5, 1, 3, seed=5).take(10)
    for name in ("episodes.json", "episodes.json.gz"):
        path = save_episodes(episodes, tmp_path / name, {"dataset": "clinc150"})
        loaded, description = load_episodes(path)
        assert description == {"dataset": "clinc150"}
        assert [e.to_dict() for e in loaded] == [e.to_dict() for e in episodes]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable episode file"):
        load_episodes(tmp_path / "bad.json")
    with pytest.raises(DataError, match="does not exist"):
        load_episodes(tmp_path / "missing.json")
