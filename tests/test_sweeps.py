"""Optuna sweeps: trials are runs scored on validation classes, the search space is checked, a sweep resumes."""

from __future__ import annotations

import dataclasses

import pytest
from optuna.trial import TrialState

from metanlp.engine import RunConfig
from metanlp.engine.config import ConfigError
from metanlp.methods import method_names
from metanlp.runs import RunStore
from metanlp.runs.manager import RunManager
from metanlp.runs.resume import retry_link
from metanlp.runs.tags import load_tags
from metanlp.sweeps.runner import SweepSpec, check_sweep, run_sweep
from metanlp.sweeps.space import Param, check_param, default_space, parse_param, search_space
from tests.conftest import TINY_ENCODER


def test_parameters_are_parsed_and_checked_against_the_declared_options():
    assert parse_param("lr=1e-4:1e-2:log") == Param("lr", "float", 1e-4, 1e-2, True)
    assert parse_param("distance=euclidean|cosine") == Param("distance", "choice", choices=("euclidean", "cosine"))
    assert check_param("finetune", parse_param("adapt_steps=5:50")).kind == "int"
    for text, message in [("nope=1:2", "has no option 'nope'"), ("lr=0.5:5", "accepts 1e-07 to 1"),
                          ("lr=0.1:0.01", "needs low < high"), ("warmup_steps=0:10:log", "must start above 0"),
                          ("adapt_steps=1.5:9", "whole bounds"), ("distance=1:2", "takes one of"),
                          ("lr=a|b", "give a range"), ("distance=euclidean|manhattan", "no choice manhattan")]:
        with pytest.raises(ConfigError, match=message):
            check_param("protonet" if "distance" in text else "finetune", parse_param(text))
    with pytest.raises(ConfigError, match="more than once"):
        search_space("protonet", [parse_param("lr=1e-4:1e-3"), parse_param("lr=1e-3:1e-2")])
    for method in method_names():  # every method has a default space within what its options accept
        assert default_space(method), method


def spec(tmp_name: str, **changes) -> SweepSpec:
    base = RunConfig(method="finetune", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=4,
                     encoder="scratch", encoder_options=TINY_ENCODER, device="cpu",
                     method_options={"adapt_steps": 5})
    values = dict(name=tmp_name, base=base, space=[check_param("finetune", parse_param("head_lr=1e-5:1:log"))],
                  trials=4, parallel=1, test_episodes=4, val_episodes=4, sampler_seed=0)
    return SweepSpec(**(values | changes))


@pytest.fixture()
def manager(tmp_path):
    with RunManager(RunStore(tmp_path / "runs"), max_concurrent=1, preload=(), warm=False) as manager:
        yield manager


def test_a_sweep_scores_trials_on_validation_only_and_tests_its_best_once(manager):
    store = manager.store
    outcome = run_sweep(spec("lr-search"), store, manager, poll=0.2)
    trials = outcome.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(outcome.study.trials) == 4 and len(trials) + len(outcome.study.get_trials(states=(TrialState.PRUNED,))) == 4
    values = [trial.value for trial in trials]
    assert outcome.study.best_value == max(values) > min(values)  # a better configuration than the worst trial
    tags = load_tags(store.root)
    for run_id in outcome.trial_runs.values():
        record = store.get_run(run_id)
        assert record.config["eval_episodes"] == 0 and not record.evaluation  # never scored on test classes
        assert store.episode_results(run_id).empty and len(store.validation(run_id)) > 0
        assert tags[run_id] == ["sweep:lr-search"]
    best = store.get_run(outcome.best_run)
    assert best.evaluation["episodes"] == 4 and best.config["method_options"]["head_lr"] == outcome.study.best_params["head_lr"]
    assert best.config["episodes_file"] and "test" not in best.config["method_options"]


def test_an_interrupted_sweep_resumes_without_losing_or_repeating_a_trial(tmp_path):
    store = RunStore(tmp_path / "runs")
    sweep = spec("resumable", base=dataclasses.replace(spec("x").base, train_steps=40))

    def stop_after_two(study, runs):
        """Ctrl-C once two trials ended and the third's run is training (the app stops under it)."""
        ended = [t for t in study.trials if t.state != TrialState.RUNNING]
        running = [runs[t.number] for t in study.trials if t.state == TrialState.RUNNING and t.number in runs]
        if len(ended) >= 2 and any(store.get_run(run).status == "running" for run in running):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), RunManager(store, max_concurrent=1, preload=(), warm=False) as first:
        run_sweep(sweep, store, first, poll=0.2, on_progress=stop_after_two)
    interrupted = [t for t in run_sweep_study(sweep, store) if t.state == TrialState.RUNNING]
    assert len(interrupted) == 1
    old_run = interrupted[0].user_attrs["run_id"]
    assert store.get_run(old_run).status == "failed"  # the app "shut down" under it
    with RunManager(store, max_concurrent=1, preload=(), warm=False) as second:
        outcome = run_sweep(sweep, store, second, poll=0.2)
    assert sorted(trial.number for trial in outcome.study.trials) == [0, 1, 2, 3]  # none lost, none repeated
    assert all(trial.state in (TrialState.COMPLETE, TrialState.PRUNED) for trial in outcome.study.trials)
    new_run = outcome.trial_runs[interrupted[0].number]
    assert new_run != old_run and retry_link(store, new_run)["retry_of"] == old_run
    with pytest.raises(ConfigError, match="exists with other settings"):
        run_sweep(dataclasses.replace(sweep, trials=5), store, second)


def run_sweep_study(sweep: SweepSpec, store: RunStore):
    from metanlp.sweeps.runner import open_study

    return open_study(sweep, store.root).trials


def test_a_sweep_that_could_not_score_its_trials_is_refused_up_front():
    frozen = dataclasses.replace(spec("x").base, method="protonet", encoder="minilm", encoder_options={},
                                 method_options={})
    with pytest.raises(ConfigError, match="no meta-training"):
        check_sweep(spec("x", base=frozen, space=default_space("protonet")))
    too_wide = dataclasses.replace(spec("x").base, dataset="fewrel", n_way=5)  # FewRel has 3 validation relations
    with pytest.raises(ConfigError, match="scored on validation classes"):
        check_sweep(spec("x", base=too_wide))
    check_sweep(spec("x"))  # the tiny sweep itself is fine
