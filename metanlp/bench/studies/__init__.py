"""Studies beside the main grid bench: ``python -m metanlp bench STUDY [options]``.

The grid bench (``python -m metanlp bench``) scores every method on the same episodes; a study
answers one narrower question (how fast is MAML's batched inner loop, does pretraining help, ...).
Each module here registers one study: its name, a one-line description, the arguments it takes
and ``run(args) -> exit code``. A study that writes markdown writes one marked section of a
results file through ``metanlp.bench.report.replace_section``.

Adding a study is one module plus its name in ``STUDY_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass

#: The study modules, in the order ``bench --help`` lists them.
STUDY_MODULES = (
    "core", "speed", "controls", "maml_budget", "maml_speed", "transfer", "pretraining",
    "pretraining_synthetic", "finetune_throughput", "dashboard", "gpu_prepare", "ray_speedup", "untrained",
)


@dataclass(frozen=True)
class Study:
    name: str  # kebab-case, the word after 'bench'
    description: str  # one line, shown in 'bench --help'
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]  # → exit code
    details: str = ""  # the study's own --help text (its module docstring)


_REGISTRY: dict[str, Study] = {}


def register_study(study: Study) -> Study:
    if study.name in _REGISTRY and _REGISTRY[study.name] is not study:
        raise ValueError(f"a study named {study.name!r} is already registered")
    _REGISTRY[study.name] = study
    return study


def studies() -> dict[str, Study]:
    """Every study by name, in ``STUDY_MODULES`` order (importing a module registers its study)."""
    for module in STUDY_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_REGISTRY)


def add_study_parsers(bench: argparse.ArgumentParser) -> None:
    """Give the ``bench`` parser one sub-command per study; with none named, the grid bench runs.

    A study sees only its own arguments (not the grid bench's defaults beside them); the parsed
    namespace carries ``study_run``, the callable that runs the chosen study.
    """
    bench.epilog = ("Without STUDY the grid bench runs, with the options above; with one, only that study runs "
                    "('python -m metanlp bench STUDY --help' shows its options).")
    commands = bench.add_subparsers(
        dest="study", metavar="STUDY", title="studies", description="run one study instead of the grid bench",
    )
    for study in studies().values():
        parser = commands.add_parser(
            study.name, help=study.description, description=study.details or study.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        study.add_arguments(parser)
        own = [action.dest for action in parser._actions if action.dest != "help"]
        for action in parser._actions:
            _show_default(action)
        parser.set_defaults(study_run=_runner(study, own))


def _show_default(action: argparse.Action) -> None:
    """Put the default in an option's help, as the other commands do (not for flags or empty defaults)."""
    default = action.default
    if default is None or default is False or default == "" or default is argparse.SUPPRESS:
        return
    if "%(default)" not in (action.help or ""):
        action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"


def _runner(study: Study, own: list[str]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return study.run(argparse.Namespace(**{name: getattr(args, name) for name in own}))

    return run
