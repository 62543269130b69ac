"""Multi-task learning: task sampling, per-task heads, and what the auxiliary tasks add."""

from __future__ import annotations

import math
import statistics
from collections import Counter

import pytest
import torch

from metanlp.data.episodes import EpisodeSampler
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.data.types import Example
from metanlp.engine.auxiliary import build_method, split_dataset_name
from metanlp.evaluation import evaluate
from metanlp.methods import create_method
from metanlp.methods._base_classes import CosineClassifier
from metanlp.methods.base import AuxiliaryDataset, parse_dataset_names
from metanlp.methods.multitask import task_sampling_probabilities
from metanlp.methods.options import OptionError
from tests.test_protonet_learns import noisy_metric_task


def test_proportional_sampling_follows_dataset_sizes():
    assert task_sampling_probabilities([100, 300, 600], "proportional") == pytest.approx([0.1, 0.3, 0.6])


def test_temperature_sampling_flattens_towards_uniform():
    sizes = [100, 400, 1600]
    square_roots = [10.0, 20.0, 40.0]
    assert task_sampling_probabilities(sizes, "temperature", 2.0) == pytest.approx(
        [r / sum(square_roots) for r in square_roots]
    )
    assert task_sampling_probabilities(sizes, "temperature", 1.0) == pytest.approx(
        task_sampling_probabilities(sizes, "proportional")
    )
    assert task_sampling_probabilities(sizes, "temperature", 1000.0) == pytest.approx([1 / 3] * 3, abs=1e-2)


def test_bad_sampling_inputs_are_rejected():
    with pytest.raises(OptionError):
        task_sampling_probabilities([10, 0], "proportional")
    with pytest.raises(OptionError):
        task_sampling_probabilities([10, 20], "uniformish")
    assert task_sampling_probabilities([], "proportional") == []


def test_task_names_are_parsed_and_checked(tiny_encoder):
    assert parse_dataset_names(" agnews, sst2,agnews ,") == ["agnews", "sst2"]
    with pytest.raises(OptionError, match="option 'tasks' names unknown dataset 'no_such_data'"):
        build_method("multitask", tiny_encoder, {"tasks": "agnews,no_such_data"})
    with pytest.raises(OptionError, match="option 'tasks' names class split '99'"):
        build_method("multitask", tiny_encoder, {"tasks": "banking77:99"})


def test_a_task_can_name_its_class_split(tiny_encoder):
    """A target run on banking77 split 02 must not get an auxiliary head on split 01's classes."""
    assert split_dataset_name("banking77:02") == ("banking77", "02") and split_dataset_name("sst2") == ("sst2", None)
    method = build_method("multitask", tiny_encoder, {"tasks": "banking77:02", "examples_per_task": 20})
    expected = load_dataset("banking77", "02").class_splits["train"]
    assert method.tasks[0].classes == expected != load_dataset("banking77").class_splits["train"]
    assert set(method.task_heads) == {"banking77_02"}


def _within_binomial_tolerance(counts: Counter, probabilities: list[float], draws: int) -> None:
    for index, probability in enumerate(probabilities):
        observed = counts[index] / draws
        tolerance = 4 * math.sqrt(probability * (1 - probability) / draws)  # 4 sigma
        assert abs(observed - probability) <= tolerance, (index, observed, probability)


@pytest.mark.parametrize(("mode", "temperature"), [("proportional", 1.0), ("temperature", 3.0)])
def test_observed_task_draws_match_the_sampling_probabilities(tiny_encoder, mode, temperature):
    method = build_method(
        "multitask", tiny_encoder, {"sampling": mode, "temperature": temperature, "examples_per_task": 50}
    )
    sizes = [task.size for task in method.tasks]
    assert [task.name for task in method.tasks] == ["clinc150", "banking77", "agnews"]
    assert sizes == [7500, 4336, 1600]  # full training splits, not the 50-example subsets
    expected = task_sampling_probabilities(sizes, mode, temperature)
    assert method.sampling_probabilities == pytest.approx(expected)
    draws = 20_000
    _within_binomial_tolerance(Counter(method.sample_task_index() for _ in range(draws)), expected, draws)


def test_every_head_learns_and_train_steps_draw_tasks_as_sampled(tiny_encoder, clinc_dataset):
    """Each head's training loss (on the batches it is trained on) falls by more than 30%.

    Trial runs (seeds 0-2): target 1.5 → 0.0, banking77 3.1 → 0.3-0.4, agnews 1.3 → 0.0.
    """
    torch.manual_seed(0)
    method = build_method(
        "multitask",
        tiny_encoder,
        {"tasks": "banking77,agnews", "sampling": "temperature", "temperature": 3.0, "examples_per_task": 96},
    )
    # A small fixed target pool (5 intents) so the target head meets the same classes again.
    target_examples = [e for e in examples_for_split(clinc_dataset, "train") if e.label in
                       clinc_dataset.class_splits["train"][:5]]
    sampler = EpisodeSampler.from_examples(target_examples, 5, 4, 2, seed=0)
    history = [method.train_step(sampler.sample()) for _ in range(150)]

    losses = {"loss_target": [step["loss_target"] for step in history]}
    for task in method.tasks:
        losses[f"loss_{task.name}"] = [step[f"loss_{task.name}"] for step in history if f"loss_{task.name}" in step]
    for name, values in losses.items():
        assert len(values) >= 30, name
        first, last = statistics.mean(values[:10]), statistics.mean(values[-10:])
        assert last < 0.7 * first, f"{name} did not fall: {first:.3f} → {last:.3f}"

    draws = len(history)
    counts = Counter(
        index for step in history for index, task in enumerate(method.tasks) if f"loss_{task.name}" in step
    )
    _within_binomial_tolerance(counts, method.sampling_probabilities, draws)


def test_single_task_training_has_no_auxiliary_heads(tiny_encoder, clinc_episodes):
    method = create_method("multitask", tiny_encoder, {"tasks": ""})
    metrics = method.train_step(clinc_episodes[0])
    assert not method.tasks and len(method.task_heads) == 0
    assert not [key for key in metrics if key.startswith("loss_") and key != "loss_target"]
    assert metrics["support_loss"] == metrics["total_loss"]


def held_out_accuracy_after_training(seed: int, auxiliary: bool, steps: int = 150) -> tuple[float, float]:
    """Held-out-class accuracy before and after training on a noisy metric task (see ``noisy_metric_task``).

    The target's own training classes are only four; with ``auxiliary`` the other 36 training classes
    arrive as an auxiliary dataset with a head of their own, as CLINC150 or BANKING77 would.
    """
    encoder, splits = noisy_metric_task(seed=seed)
    held_out = EpisodeSampler(splits["test"], 5, 1, 5, seed=1).take(40)
    names = list(splits["train"])
    torch.manual_seed(0)
    method = create_method("multitask", encoder, {"tasks": "aux" if auxiliary else "", "lr": 0.01})
    extra = names[4:] if auxiliary else []
    examples = [Example(text, name) for name in extra for text in splits["train"][name]]
    method.receive_data({"tasks": [AuxiliaryDataset("aux", examples, extra)] if auxiliary else []})
    before = evaluate(method, held_out).mean_accuracy
    target = EpisodeSampler({name: splits["train"][name] for name in names[:4]}, 4, 1, 5, seed=0)
    for _ in range(steps):
        method.train_step(target.sample())
    return before, evaluate(method, held_out).mean_accuracy


@pytest.mark.parametrize("seed", [0, 1])
def test_auxiliary_tasks_teach_the_shared_features_what_new_classes_need(seed):
    """The defaults' cosine heads (a learning rate raised for a short test): the auxiliary head's classes
    shape the shared adapter beyond what the target's four classes can.

    Measured (task seeds 0-2): untrained 0.42-0.51; single-task 0.58-0.67; with the auxiliary task 0.90-0.97.
    """
    before, multi_task = held_out_accuracy_after_training(seed, auxiliary=True)
    _, single_task = held_out_accuracy_after_training(seed, auxiliary=False)
    assert multi_task > before + 0.3, f"held-out accuracy {before:.3f} → {multi_task:.3f}"
    assert multi_task > single_task + 0.15, f"the auxiliary task added little: {single_task:.3f} → {multi_task:.3f}"


def test_default_heads_are_cosine_and_prototypes_cosine(tiny_encoder):
    """The defaults that keep training from distorting the space new classes are measured in (docs/results.md)."""
    method = create_method("multitask", tiny_encoder, {"tasks": ""})
    assert isinstance(method.target_head, CosineClassifier)
    assert method.options.distance == "cosine"
    linear = create_method("multitask", tiny_encoder, {"tasks": "", "head": "linear"})
    assert isinstance(linear.target_head, torch.nn.Linear)


def test_a_checkpoint_with_other_heads_says_which_option_loads_it(tiny_encoder):
    linear = create_method("multitask", tiny_encoder, {"tasks": "", "head": "linear"})
    cosine = create_method("multitask", tiny_encoder, {"tasks": ""})
    with pytest.raises(OptionError, match="head='linear'") as error:
        cosine.load_state_dict(linear.state_dict())
    assert error.value.option == "head"
    create_method("multitask", tiny_encoder, {"tasks": "", "head": "linear"}).load_state_dict(linear.state_dict())
