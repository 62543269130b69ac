"""What the Sweep page needs: the search-space table, the sweep command, and reading studies back.

A sweep started from the page is the CLI's ``sweep`` command in the background (``background.py``),
so it runs on and resumes exactly as from a terminal; the page only reads its study.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import optuna
import pandas as pd

from metanlp.engine.config import ConfigError, RunConfig
from metanlp.sweeps.runner import journal_path, storage
from metanlp.sweeps.space import Param, check_param

SPACE_COLUMNS = ["option", "low", "high", "log scale", "choices (a|b)"]
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,80}")


def space_frame(space: list[Param]) -> pd.DataFrame:
    """The editable table of a search space: one row per option."""
    return pd.DataFrame([
        {"option": p.name, "low": p.low, "high": p.high, "log scale": p.log, "choices (a|b)": "|".join(p.choices)}
        for p in space
    ], columns=SPACE_COLUMNS)


def params_from_frame(method: str, frame: pd.DataFrame) -> list[Param]:
    """The search space the user edited, each row checked against the method's options (``ConfigError``)."""
    params = []
    for row in frame.to_dict(orient="records"):
        name = str(row.get("option") or "").strip()
        if not name:
            continue
        choices = str(row.get("choices (a|b)") or "").strip()
        if choices:
            param = Param(name, "choice", choices=tuple(part.strip() for part in choices.split("|") if part.strip()))
        else:
            low, high = row.get("low"), row.get("high")
            if low is None or high is None or pd.isna(low) or pd.isna(high):
                raise ConfigError(f"give {name!r} a low and a high bound, or choices a|b")
            param = Param(name, "float", float(low), float(high), bool(row.get("log scale")))
        params.append(check_param(method, param))
    if not params:
        raise ConfigError("the search space is empty: add at least one option")
    names = [param.name for param in params]
    if len(set(names)) < len(names):
        raise ConfigError("an option appears twice in the search space")
    return params


def param_argument(param: Param) -> str:
    if param.kind == "choice":
        return f"{param.name}={'|'.join(param.choices)}"
    return f"{param.name}={param.low!r}:{param.high!r}" + (":log" if param.log else "")


def sweep_arguments(root: str | Path, name: str, base: RunConfig, space: list[Param], trials: int,
                    parallel: int, val_episodes: int) -> list[str]:
    """``python`` arguments of the CLI sweep the page starts (options as the form set them)."""
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError("the sweep's name must be letters, digits, '.', '_' or '-' (at most 80)")
    arguments = ["-m", "metanlp", "sweep", "--name", name, "--method", base.method, "--dataset", base.dataset,
                 "--n-way", str(base.n_way), "--k-shot", str(base.k_shot), "--n-query", str(base.n_query),
                 "--steps", str(base.train_steps), "--encoder", base.encoder, "--trials", str(trials),
                 "--parallel", str(parallel), "--val-episodes", str(val_episodes),
                 "--episodes", str(base.eval_episodes), "--runs-dir", str(Path(root).resolve()), "--no-progress"]
    for key, value in base.encoder_options.items():
        arguments += ["--encoder-option", f"{key}={value}"]
    for param in space:
        arguments += ["--param", param_argument(param)]
    return arguments


def sweep_names(root: str | Path) -> list[str]:
    """Sweeps stored beside this run store, newest first."""
    if not journal_path(root).exists():
        return []
    summaries = optuna.get_all_study_summaries(storage(root), include_best_trial=False)
    return [summary.study_name for summary in sorted(summaries, key=lambda s: s.datetime_start or 0, reverse=True)]


def load_sweep(root: str | Path, name: str) -> tuple[optuna.Study, dict]:
    """The study and the settings it was started with (``spec`` as stored by the runner)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage(root))
    return study, json.loads(study.user_attrs.get("spec", "{}"))


def best_config(spec: dict, params: dict) -> RunConfig:
    """A normal run of the best configuration, with as many test episodes as the sweep's own evaluation of it."""
    base = RunConfig.from_dict(spec["base"])
    return dataclasses.replace(
        base, method_options={**base.method_options, **params}, eval_episodes=int(spec.get("test_episodes", 300)),
        episodes_file=None,
        eval_every=0, name=f"best of sweep {spec['name']}",
    ).validate()
