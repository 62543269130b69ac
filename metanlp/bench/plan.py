"""What a bench runs: methods × datasets × shots, as ``RunConfig`` cells on fixed episodes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from metanlp.engine.config import ConfigError, RunConfig
from metanlp.methods import default_options, get_method_class, method_names
from metanlp.methods.options import build_options

BENCH_PREFIX = "bench:"  # run-store names of bench cells start with this
DEFAULT_DATASETS = ("clinc150", "banking77", "huffpost", "fewrel")
DEFAULT_SHOTS = (1, 5)

# Published reference numbers (5-way accuracy, %) with their source; our splits differ where noted.
PUBLISHED: dict[tuple[str, int], str] = {
    ("huffpost", 1): "41.9 (Bao et al. 2020, their method)",
    ("huffpost", 5): "62.8 (Bao et al. 2020, their method)",
    ("fewrel", 1): "69.2 Proto-CNN (Han et al. 2018); 85.7 BERT-PAIR (Gao et al. 2019)",
    ("fewrel", 5): "84.8 Proto-CNN (Han et al. 2018); 89.5 BERT-PAIR (Gao et al. 2019)",
}


@dataclass
class BenchSettings:
    methods: tuple[str, ...] = ()  # empty: every registered method
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    shots: tuple[int, ...] = DEFAULT_SHOTS
    n_way: int = 5
    n_query: int = 5
    episodes: int = 600
    train_steps: int = 200
    encoder: str = "minilm"
    encoder_options: dict = field(default_factory=dict)
    finetune: str = "auto"  # applied to every method that has the option (auto: MiniLM frozen, scratch trained)
    seed: int = 0
    device: str = "auto"
    method_options: dict = field(default_factory=dict)  # {method: {option: value}}

    def resolved_methods(self) -> tuple[str, ...]:
        names = method_names()
        chosen = self.methods or tuple(names)
        unknown = [m for m in chosen if m not in names]
        if unknown:
            raise ConfigError(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(names)}")
        return tuple(chosen)


def quick_settings(**overrides) -> BenchSettings:
    """A smoke check that finishes in minutes on a 2-core CPU: few episodes, few steps."""
    return BenchSettings(**{"episodes": 30, "train_steps": 10, **overrides})


def method_cell_options(settings: BenchSettings, method: str) -> dict:
    """The options a cell passes to ``method``, checked now so a typo fails before any cell runs."""
    options = dict(settings.method_options.get(method, {}))
    build_options(get_method_class(method).Options, options)  # raises OptionError naming the problem
    if "finetune" in default_options(method) and "finetune" not in options:
        options["finetune"] = settings.finetune
    return options


def bench_configs(settings: BenchSettings) -> list[RunConfig]:
    """One validated ``RunConfig`` per (method, dataset, shot); evaluation episodes come from files."""
    configs = []
    for dataset in settings.datasets:
        for k_shot in settings.shots:
            for method in settings.resolved_methods():
                encoder, encoder_options = settings.encoder, dict(settings.encoder_options)
                preferred = get_method_class(method).preferred_encoder
                if preferred and preferred != encoder:  # e.g. MLM pretraining needs the scratch encoder
                    encoder, encoder_options = preferred, {}
                configs.append(RunConfig(
                    method=method,
                    dataset=dataset,
                    n_way=settings.n_way,
                    k_shot=k_shot,
                    n_query=settings.n_query,
                    train_steps=settings.train_steps,
                    eval_episodes=settings.episodes,
                    encoder=encoder,
                    encoder_options=encoder_options,
                    method_options=method_cell_options(settings, method),
                    seed=settings.seed,
                    device=settings.device,
                ).validate())
    return configs


def cell_key(config: RunConfig) -> str:
    """Identity of a bench cell: everything that changes its result (not the episodes' file path)."""
    data = dataclasses.asdict(config)
    data.pop("episodes_file", None)
    data.pop("name", None)
    data.pop("device", None)
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def cell_name(config: RunConfig) -> str:
    """The run-store name of a bench cell."""
    return BENCH_PREFIX + cell_key(config)


def cell_names(settings: BenchSettings) -> set[str]:
    """Names of every cell ``settings`` asks for: what one bench command reports on."""
    return {cell_name(config) for config in bench_configs(settings)}
