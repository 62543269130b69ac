"""Hyper-parameter sweeps with Optuna: every trial is an ordinary run in the store, scored on validation classes.

A sweep asks Optuna's TPE sampler for a trial's options, queues it as a normal run (tagged
``sweep:<name>``, visible on the Runs page) with validation episodes and *no* test episodes, so
its score is the validation accuracy on meta-validation classes: test classes are not even
sampled. Validation events feed Optuna's median pruner, which stops unpromising trials. The study
lives in a journal file beside the run store, so running the same sweep again resumes it: trials
that finished meanwhile are scored, a trial whose run was interrupted (the process stopped) is run
again from its last checkpoint, none is lost or repeated. At the end the best configuration is
evaluated once on the saved test episodes of the bench (``runs/bench/episodes``).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from metanlp.bench.runner import ensure_episodes
from metanlp.data.feasibility import EpisodeSettingsError, check_split_feasible
from metanlp.engine.config import ConfigError, RunConfig
from metanlp.engine.training import load_run_dataset
from metanlp.methods.registry import would_meta_learn
from metanlp.runs.database import RunNotFound
from metanlp.runs.resume import retry_run, saved_step
from metanlp.runs.store import RunStore
from metanlp.runs.supervisor import ORPHAN_PREFIX
from metanlp.runs.tags import change_tags
from metanlp.runs.worker import SHUTDOWN_MESSAGE
from metanlp.sweeps.space import Param

JOURNAL_FILE = "sweeps.journal"  # beside runs.sqlite
TAG_PREFIX = "sweep:"
VALIDATIONS_PER_TRIAL = 5
INTERRUPTED = (SHUTDOWN_MESSAGE, ORPHAN_PREFIX)  # a run stopped from outside, not by its own fault


class Executor(Protocol):
    """Where trial runs execute: the local run manager (or any backend with the same two calls)."""

    def submit(self, config: RunConfig, name: str = "") -> str: ...

    def cancel(self, run_id: str) -> None: ...


@dataclass
class SweepSpec:
    name: str
    base: RunConfig  # method, dataset, N/K/Q, steps, encoder, seed; its options are the fixed ones
    space: list[Param]
    trials: int
    parallel: int = 1
    test_episodes: int = 300  # the best configuration's one evaluation on test classes
    val_episodes: int = 30
    sampler_seed: int = 0

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["base"] = self.base.to_dict()
        return json.dumps(data, sort_keys=True)


@dataclass
class SweepOutcome:
    study: optuna.Study
    trial_runs: dict[int, str] = field(default_factory=dict)  # trial number → run id
    best_run: str | None = None  # the best configuration's test evaluation


def journal_path(root: str | Path) -> Path:
    return Path(root) / JOURNAL_FILE


def storage(root: str | Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(journal_path(root))))


def sweep_tag(name: str) -> str:
    return f"{TAG_PREFIX}{name}"


def distributions(space: list[Param]) -> dict:
    result = {}
    for param in space:
        if param.kind == "choice":
            result[param.name] = CategoricalDistribution(list(param.choices))
        elif param.kind == "int":
            result[param.name] = IntDistribution(int(param.low), int(param.high), log=param.log)
        else:
            result[param.name] = FloatDistribution(float(param.low), float(param.high), log=param.log)
    return result


def trial_config(spec: SweepSpec, params: dict, name: str) -> RunConfig:
    """A trial's run: the base config with the trial's options, validation episodes and no test episodes."""
    steps = spec.base.train_steps
    return dataclasses.replace(
        spec.base, method_options={**spec.base.method_options, **params}, eval_episodes=0, episodes_file=None,
        eval_every=max(1, steps // VALIDATIONS_PER_TRIAL), val_episodes=spec.val_episodes, name=name,
    ).validate()


def check_sweep(spec: SweepSpec) -> None:
    """Refuse, before anything runs, a sweep that could not score its trials (``ConfigError`` / ``DataError``)."""
    if not 1 <= spec.trials <= 1000:
        raise ConfigError(f"--trials must be between 1 and 1000, got {spec.trials}")
    if not 1 <= spec.parallel <= 16:
        raise ConfigError(f"--parallel must be between 1 and 16, got {spec.parallel}")
    if spec.base.train_steps < 1:
        raise ConfigError("a sweep tunes meta-training: give at least 1 training step")
    if not 1 <= spec.test_episodes <= 100_000 or not 1 <= spec.val_episodes <= 10_000:
        raise ConfigError("test and validation episodes must be at least 1")
    if not would_meta_learn(spec.base.method, spec.base.method_options, spec.base.encoder):
        raise ConfigError(f"{spec.base.method} has no meta-training in this configuration, so every trial would "
                          "score the same: set finetune=top or full, or pick a method that meta-learns")
    trial_config(spec, {}, "check")  # the base settings themselves
    dataset, _ = load_run_dataset(spec.base)
    try:
        check_split_feasible(dataset, "val", spec.base.n_way, spec.base.k_shot, spec.base.n_query)
    except EpisodeSettingsError as error:
        raise ConfigError(f"trials are scored on validation classes, and {error}") from None


def open_study(spec: SweepSpec, root: str | Path) -> optuna.Study:
    """Create the study, or load it to resume; a name reused with other settings is refused."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=spec.name, storage=storage(root), direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=spec.sampler_seed, n_startup_trials=min(5, max(2, spec.trials // 3))),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    stored = study.user_attrs.get("spec")
    if stored is None:
        study.set_user_attr("spec", spec.to_json())
    elif stored != spec.to_json():
        raise ConfigError(f"a sweep named {spec.name!r} exists with other settings: repeat them to resume it, "
                          "or choose another --name")
    return study


def run_sweep(
    spec: SweepSpec,
    store: RunStore,
    executor: Executor,
    poll: float = 1.0,
    on_progress: Callable[[optuna.Study, dict[int, str]], None] | None = None,
) -> SweepOutcome:
    """Run (or resume) the sweep until ``spec.trials`` trials have ended, then evaluate the best one on test."""
    study = open_study(spec, store.root)
    space = distributions(spec.space)
    runs = {trial.number: trial.user_attrs["run_id"] for trial in study.trials if "run_id" in trial.user_attrs}
    active = {trial.number: runs[trial.number] for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
              if trial.number in runs}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number not in runs:  # asked, but the process stopped before its run was queued: never ran
            study.tell(trial.number, state=TrialState.FAIL)
    pruning: set[int] = set()
    while True:
        for number, run_id in list(active.items()):
            if _follow(study, store, executor, number, run_id, pruning, runs):
                del active[number]
            else:
                active[number] = runs[number]  # a retried trial follows its new run
        ended = sum(1 for trial in study.get_trials(deepcopy=False) if trial.number in runs
                    and trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
        while ended + len(active) < spec.trials and len(active) < spec.parallel:
            trial = study.ask(space)
            name = f"sweep {spec.name} · trial {trial.number}"
            run_id = executor.submit(trial_config(spec, trial.params, name), name=name)
            trial.set_user_attr("run_id", run_id)
            change_tags(store.root, [run_id], add=sweep_tag(spec.name))
            runs[trial.number] = active[trial.number] = run_id
        if on_progress is not None:
            on_progress(study, dict(runs))
        if not active:
            break
        time.sleep(poll)
    return SweepOutcome(study, runs, _evaluate_best(spec, study, store, executor, poll))


def _follow(study: optuna.Study, store: RunStore, executor: Executor, number: int, run_id: str,
            pruning: set[int], runs: dict[int, str]) -> bool:
    """Report a trial's new validation points, prune it or end it; True once the trial has ended.

    A trial may have been asked by an earlier process (a resumed sweep), so its intermediate values
    go through the study's storage by trial id (``_trial_id``, ``_storage``: Optuna has no public
    handle on a trial it did not hand to this process; optuna is pinned below 6 for that reason).
    """
    trial_id = study.trials[number]._trial_id
    try:
        record = store.get_run(run_id)
        validation = store.validation(run_id)
    except RunNotFound:  # deleted from the Runs page: nothing to score
        study.tell(number, state=TrialState.FAIL)
        return True
    frozen = study._storage.get_trial(trial_id)
    for row in validation.itertuples():
        if int(row.step) not in frozen.intermediate_values and row.query_accuracy == row.query_accuracy:
            study._storage.set_trial_intermediate_value(trial_id, int(row.step), float(row.query_accuracy))
    if record.status == "done":
        if validation.empty:
            study.tell(number, state=TrialState.FAIL)
        else:
            study.tell(number, float(validation["query_accuracy"].iloc[-1]))
        return True
    if record.status in ("failed", "cancelled"):
        if number in pruning:
            study.tell(number, state=TrialState.PRUNED)
            return True
        if record.error and record.error.startswith(INTERRUPTED):  # stopped from outside: run it again
            retried = retry_run(store, run_id, resume=saved_step(store, run_id) is not None)
            study._storage.set_trial_user_attr(trial_id, "run_id", retried)
            change_tags(store.root, [retried], add=sweep_tag(study.study_name))
            runs[number] = retried
            return False
        study.tell(number, state=TrialState.FAIL)
        return True
    if (record.status == "running" and number not in pruning and not validation.empty
            and study.pruner.prune(study, study._storage.get_trial(trial_id))):
        executor.cancel(run_id)
        pruning.add(number)
    return False


def _evaluate_best(spec: SweepSpec, study: optuna.Study, store: RunStore, executor: Executor,
                   poll: float) -> str | None:
    """The best trial's configuration, once, on the bench's saved test episodes (reused when resumed)."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        return None
    best = study.best_trial
    run_id = study.user_attrs.get("best_run_id")
    if run_id is None or not _exists(store, run_id):
        name = f"sweep {spec.name} · best (trial {best.number})"
        config = dataclasses.replace(trial_config(spec, best.params, name), eval_every=0,
                                     eval_episodes=spec.test_episodes)
        config.episodes_file = str(ensure_episodes(store, config))
        run_id = executor.submit(config, name=name)
        change_tags(store.root, [run_id], add=sweep_tag(spec.name))
        study.set_user_attr("best_run_id", run_id)
    while store.get_run(run_id).status in ("queued", "running"):
        time.sleep(poll)
    return run_id


def _exists(store: RunStore, run_id: str) -> bool:
    try:
        return store.get_run(run_id).status not in ("failed", "cancelled")
    except RunNotFound:
        return False


def trials_table(study: optuna.Study) -> list[dict]:
    """One row per trial for pages and the CLI: number, state, validation accuracy, run id, options."""
    return [
        {"trial": trial.number, "state": trial.state.name.lower(),
         "validation accuracy": trial.value, "run": trial.user_attrs.get("run_id", ""), **trial.params}
        for trial in study.get_trials(deepcopy=False)
    ]
