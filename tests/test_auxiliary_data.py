"""Methods receive, never fetch: the engine loads auxiliary data; a checkpoint reloads without any."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import metanlp.methods
from metanlp.data import registry
from metanlp.engine.auxiliary import build_method, check_auxiliary_names
from metanlp.engine.checkpoint import load_method, save_method
from metanlp.methods import create_method, get_method_class
from metanlp.methods.conformance import task_episode, training_episode
from metanlp.methods.options import OptionError

METHODS_DIR = Path(metanlp.methods.__file__).parent
#: What the registry defines (not what it imports, such as DataError), re-exported by ``metanlp.data``.
REGISTRY_NAMES = {name for name, value in vars(registry).items() if getattr(value, "__module__", "") == registry.__name__}

#: Methods with auxiliary data, with options that keep them small (and a from-scratch teacher).
AUXILIARY_CASES = {
    "dann": {"target_dataset": "fewrel_pubmed", "target_pool": 50},
    "multitask": {"tasks": "agnews,banking77:02", "examples_per_task": 50},
    "distillation": {"teacher": "scratch", "alpha": 0.5, "unlabelled_dataset": "agnews", "unlabelled_pool": 50},
}


def registry_imports(source: str) -> list[str]:
    """The imports in ``source`` that reach the dataset registry (directly or through ``metanlp.data``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("metanlp.data.registry")]
        elif isinstance(node, ast.ImportFrom) and node.module == "metanlp.data.registry":
            found.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "metanlp.data":
            found += [f"metanlp.data.{a.name}" for a in node.names if a.name == "registry" or a.name in REGISTRY_NAMES]
    return found


def test_the_import_detector_sees_every_way_to_reach_the_registry():
    for line in (
        "from metanlp.data.registry import load_dataset",
        "import metanlp.data.registry as datasets",
        "from metanlp.data import registry",
        "from metanlp.data import examples_for_split",
        "def f():\n    from metanlp.data.registry import available_names",
    ):
        assert registry_imports(line), line
    assert not registry_imports("from metanlp.data.types import Episode\nfrom metanlp.data import DataError")


def test_no_method_module_imports_the_data_registry():
    modules = sorted(METHODS_DIR.glob("*.py"))
    assert {"dann.py", "multitask.py", "distillation.py"} <= {module.name for module in modules}
    offenders = {
        module.name: imports
        for module in modules
        if (imports := registry_imports(module.read_text(encoding="utf-8")))
    }
    assert not offenders, f"methods load data themselves; let the engine hand it over: {offenders}"


def forbid_dataset_reads(monkeypatch) -> None:
    """Every way into a dataset (its names, metadata, files, the loaded-dataset cache) fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail("a dataset was read")

    for name in ("_bundled_names", "_bundled_metadata", "_load_cached", "_load_bundled"):
        monkeypatch.setattr(registry, name, refuse)


@pytest.mark.parametrize("name", sorted(AUXILIARY_CASES))
def test_a_checkpoint_reloads_without_reading_a_dataset(name, tiny_encoder, tmp_path, monkeypatch):
    torch.manual_seed(0)
    method = build_method(name, tiny_encoder, AUXILIARY_CASES[name])
    for index in range(2):
        method.train_step(training_episode(index))
    folder = save_method(method, tmp_path / name)
    task = task_episode()
    before = method.adapt(task).predict_logits(task.query_texts)

    forbid_dataset_reads(monkeypatch)
    reloaded = load_method(folder, "cpu")
    torch.testing.assert_close(reloaded.adapt(task).predict_logits(task.query_texts), before)
    saved, restored = method.state_dict(), reloaded.state_dict()
    assert saved.keys() == restored.keys()  # e.g. multi-task's auxiliary heads come back from their weights
    assert all(torch.equal(saved[key], restored[key]) for key in saved)
    with pytest.raises(RuntimeError, match="has not received"):  # training again needs the data handed over
        reloaded.train_step(training_episode(2))


@pytest.mark.parametrize("name", sorted(AUXILIARY_CASES))
def test_training_without_the_data_says_how_to_hand_it_over(name, tiny_encoder):
    method = create_method(name, tiny_encoder, AUXILIARY_CASES[name])
    with pytest.raises(RuntimeError, match=r"option '\w+' names and has not received it: build it with"):
        method.train_step(training_episode(0))


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("dann", {"target_dataset": "no_such_data"}, "option 'target_dataset' names unknown dataset 'no_such_data'"),
        ("multitask", {"tasks": "agnews, nope"}, "option 'tasks' names unknown dataset 'nope'"),
        ("multitask", {"tasks": "banking77:77"}, "option 'tasks' names class split '77' of 'banking77'"),
        ("distillation", {"unlabelled_dataset": "nope"}, "option 'unlabelled_dataset' names unknown dataset"),
    ],
)
def test_the_engine_checks_dataset_names_naming_the_option(name, options, message):
    method_class = get_method_class(name)
    with pytest.raises(OptionError, match=message):
        check_auxiliary_names(method_class, method_class.Options(**options))


def test_a_run_hands_the_data_over_and_rejects_a_bad_name_as_a_config_error():
    from metanlp.engine import ConfigError, RunConfig, run_training
    from tests.conftest import TINY_ENCODER

    config = RunConfig(method="multitask", dataset="clinc150", n_way=3, k_shot=1, n_query=1, train_steps=2,
                       eval_episodes=1, encoder="scratch", encoder_options=TINY_ENCODER, device="cpu",
                       method_options={"tasks": "agnews", "examples_per_task": 20})
    events: list[dict] = []
    result = run_training(config, on_event=events.append)
    assert [task.name for task in result.method.tasks] == ["agnews"]
    assert any("loss_agnews" in event for event in events if event["event"] == "step")
    config.method_options = {"tasks": "agnews,no_such_data"}
    with pytest.raises(ConfigError, match="option 'tasks' names unknown dataset 'no_such_data'"):
        run_training(config)
