"""One feasibility rule: the Train form accepts exactly the episode settings the worker can sample.

The worker's verdict is taken from ``run_training`` itself (stopped before any step), so these tests
catch the form, the user-file check or the sampler drifting apart, whichever of them changes.
"""

from __future__ import annotations

import pickle
import random
from collections import Counter

import pytest

from metanlp.dashboard.forms import validate_run_form
from metanlp.data import DataError, TextDataset, check_episode_feasibility, load_user_dataset
from metanlp.data.episodes import EpisodeSampler
from metanlp.data.feasibility import EpisodeSettingsError, check_feasible, group_by_label
from metanlp.data.registry import examples_for_split, load_dataset, register_dataset, unregister_dataset
from metanlp.data.types import SPLITS, Example
from metanlp.engine.config import RunConfig
from metanlp.engine.training import RunCancelled, run_training
from tests.conftest import TINY_ENCODER

DUPLICATES = "feasibility_duplicates"
SETTINGS_PER_DATASET = 30


def form_values(dataset: str, **changes) -> dict:
    values = {
        "method": "protonet", "dataset": dataset, "n_way": 5, "k_shot": 1, "n_query": 5, "train_steps": 0,
        "eval_episodes": 1, "val_episodes": 1, "encoder": "scratch", "encoder_options": dict(TINY_ENCODER),
        "seed": 0, "device": "cpu", "method_options": {},
    }
    return values | changes


def worker_error(values: dict) -> str | None:
    """The ``DataError`` a worker running this config would fail with, or None if it samples fine."""
    try:
        run_training(RunConfig.from_dict(dict(values)), should_stop=lambda: True)
    except RunCancelled:  # got past building every sampler: the data can supply the episodes
        return None
    except DataError as error:
        return str(error)
    return None


@pytest.fixture()
def duplicated_dataset():
    """Small classes full of repeated texts: raw counts and what the sampler can draw differ a lot."""
    examples = []
    for index in range(10):
        texts = [f"class {index} text {n}" for n in range(index + 2)]
        examples += [Example(text, f"c{index}") for text in texts + texts[:3]]
    labels = [f"c{index}" for index in range(10)]
    splits = {"train": labels[:5], "val": labels[5:7], "test": labels[7:]}
    dataset = TextDataset(name=DUPLICATES, examples=examples, class_splits=splits)
    register_dataset(DUPLICATES, dataset, overwrite=True)
    yield dataset
    unregister_dataset(DUPLICATES)


def test_reuters_11_way_5_shot_15_queries_is_refused_by_the_form_in_the_samplers_words():
    dataset = load_dataset("reuters")  # every test class has 20 rows, but 'tin' has only 19 distinct texts
    values = form_values("reuters", n_way=11, k_shot=5, n_query=15)
    form = validate_run_form(values, dataset)
    message = worker_error(values)
    assert message is not None and "'tin' (19)" in message and "K can be at most 4." in message
    assert form.errors == {"k_shot": message}
    assert worker_error(form_values("reuters", n_way=11, k_shot=4, n_query=15)) is None
    assert validate_run_form(form_values("reuters", n_way=11, k_shot=4, n_query=15), dataset).ok


def _random_settings(rng: random.Random, dataset: TextDataset) -> dict:
    """Settings at one split's limits: N up to one past its classes, K + Q within 1 of its N-th class's size.

    The size is counted with repeats (as a naive rule would) or without (as the sampler does), so
    settings on both sides of the repeat boundary get drawn.
    """
    split = rng.choice([split for split in SPLITS if examples_for_split(dataset, split)])
    examples = examples_for_split(dataset, split)
    sizes = Counter(e.label for e in examples) if rng.random() < 0.5 else Counter(e.label for e in set(examples))
    rows = sorted(sizes.values(), reverse=True)
    n_way = rng.randint(2, min(100, len(rows) + 1))
    needed = min(300, max(2, rows[min(n_way, len(rows)) - 1] + rng.randint(-1, 1)))  # config: K <= 100, Q <= 200
    k_shot = rng.randint(max(1, needed - 200), min(100, needed - 1))
    return {
        "n_way": n_way, "k_shot": k_shot, "n_query": needed - k_shot,
        "train_steps": rng.choice([0, 1]), "eval_every": rng.choice([0, 1]),
    }


@pytest.mark.parametrize("name", ["reuters", "huffpost", "agnews", DUPLICATES])
def test_form_verdict_equals_whether_the_worker_can_sample(name, duplicated_dataset):
    dataset = load_dataset(name)
    rng = random.Random(name)
    verdicts = []
    for _ in range(SETTINGS_PER_DATASET):
        values = form_values(name, **_random_settings(rng, dataset))
        form = validate_run_form(values, dataset)
        message = worker_error(values)
        assert form.ok == (message is None), (values, form.errors, message)
        if message is not None:  # the first problem the form shows is the one the worker would fail on
            assert next(iter(form.errors.values())) == message
        verdicts.append(form.ok)
    assert any(verdicts) and not all(verdicts), "both verdicts must be drawn for the comparison to mean anything"


def test_user_file_check_uses_the_same_rule_and_words(tmp_path):
    rows = ["text,label"] + [f"row {n} of {c},{c}" for c in "abcdefgh" for n in range(3 + "abcdefgh".index(c))]
    path = tmp_path / "classes.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    dataset, _ = load_user_dataset(path, n_way=2, k_shot=9, n_query=2)  # split for the run's episodes
    values = form_values("user", data_file=str(path), n_way=2, k_shot=9, n_query=2)  # the largest class has 10
    with pytest.raises(DataError) as from_file_check:
        check_episode_feasibility(dataset, n_way=2, k_shot=9, n_query=2, split="test")
    message = worker_error(values)
    assert message == str(from_file_check.value)
    assert validate_run_form(values, dataset).errors == {"k_shot": message}


def test_sampler_counts_and_draws_distinct_texts_only():
    texts = {"a": ["x", "x", "x", "y"], "b": ["p", "q", "r", "s"]}
    with pytest.raises(EpisodeSettingsError, match=r"'a' \(2\)") as error:
        EpisodeSampler(texts, n_way=2, k_shot=1, n_query=2)
    assert error.value.field == "n_query"
    copied = pickle.loads(pickle.dumps(error.value))  # e.g. sent back from a worker process
    assert (str(copied), copied.field) == (str(error.value), "n_query")
    for episode in EpisodeSampler(texts, n_way=2, k_shot=1, n_query=1, seed=3).take(30):
        assert not set(episode.support_texts) & set(episode.query_texts)


def test_messages_name_the_real_constraint_and_the_setting_to_change():
    examples = [Example(f"big {n}", "big") for n in range(12)] + [Example(f"small {n}", "small") for n in range(4)]
    with pytest.raises(EpisodeSettingsError, match="only 2 classes") as too_few_classes:
        check_feasible(examples, 3, 1, 1, split="test")
    assert too_few_classes.value.field == "n_way" and "Choose N ≤ 2" in str(too_few_classes.value)
    with pytest.raises(EpisodeSettingsError, match=r"Too small: 'small' \(4\)\. With 2 queries, K can be at most 2\."):
        check_feasible(examples, 2, 3, 2)
    with pytest.raises(EpisodeSettingsError, match="Use at most 3 queries") as too_many_queries:
        check_feasible(examples, 2, 1, 4)
    assert too_many_queries.value.field == "n_query"
    with pytest.raises(EpisodeSettingsError) as bad_setting:
        check_feasible(examples, 2, 0, 1)
    assert bad_setting.value.field == "k_shot"
    check_feasible(examples, 2, 2, 2)  # exactly enough: 4 distinct texts in the smaller class


def test_group_by_label_keeps_each_text_once_per_class():
    examples = [Example("same", "a"), Example("same", "a"), Example("same", "b"), Example("other", "a")]
    assert group_by_label(examples) == {"a": ["same", "other"], "b": ["same"]}
