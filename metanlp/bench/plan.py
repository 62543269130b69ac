"""What a bench runs: methods × datasets × class splits × shots × training seeds, as ``RunConfig`` cells.

Each method meta-trains for its own ``recommended_train_steps`` unless the bench fixes a budget;
a cell of a method that meta-trains is run with several training seeds (the runner runs the
first seed alone when the method turns out to have nothing to meta-train).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from metanlp.data.errors import DataError
from metanlp.data.registry import dataset_split_ids
from metanlp.engine.config import ConfigError, RunConfig
from metanlp.methods import default_options, get_method_class, method_names
from metanlp.methods.options import build_options
from metanlp.methods.registry import resolved_options

BENCH_PREFIX = "bench:"  # run-store names of bench cells start with this
DEFAULT_DATASETS = ("clinc150", "banking77", "huffpost", "fewrel")
DEFAULT_SHOTS = (1, 5)
DEFAULT_SEEDS = 3
ALL_SPLITS = "all"
#: Datasets whose every class split a bench runs by default: FewRel's 16 relations in one split
#: would give every 5-way test episode the same five classes. Others use their default split.
DEFAULT_SPLITS: dict[str, tuple[str, ...]] = {"fewrel": (ALL_SPLITS,)}
#: The unlabelled target domain of each dataset that has one. A domain-adaptation method (one
#: with a ``target_dataset`` option, e.g. DANN) runs on these datasets only, adapting to the target.
DOMAIN_TARGETS: dict[str, str] = {"fewrel": "fewrel_pubmed"}
TARGET_OPTION = "target_dataset"

# Published reference numbers (5-way accuracy, %) with their source, and what differs in our setup.
PUBLISHED: dict[tuple[str, int], str] = {
    ("huffpost", 1): "41.9 (Bao et al. 2020, their method)",
    ("huffpost", 5): "62.8 (Bao et al. 2020, their method)",
    ("fewrel", 1): "69.2 Proto-CNN (Han et al. 2018); 85.7 BERT-PAIR (Gao et al. 2019)",
    ("fewrel", 5): "84.8 Proto-CNN (Han et al. 2018); 89.5 BERT-PAIR (Gao et al. 2019)",
}
PUBLISHED_CAVEATS: dict[str, str] = {
    "fewrel": (
        "not comparable as is: those models meta-train on FewRel's 64 training relations and are tested on "
        "its hidden test relations; here meta-training sees 8 relations (at most 11, counting validation) of "
        "the 16 bundled validation relations, and testing uses the other 5, per class split"
    ),
}


def published_note(dataset: str, k_shot: int, n_way: int) -> str:
    """Published numbers for a 5-way task, followed by what makes ours differ."""
    numbers = PUBLISHED.get((dataset, k_shot), "") if n_way == 5 else ""
    caveat = PUBLISHED_CAVEATS.get(dataset, "")
    if numbers and caveat:
        return f"{numbers}; {caveat}"
    return numbers


@dataclass
class BenchSettings:
    methods: tuple[str, ...] = ()  # empty: every registered method
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    shots: tuple[int, ...] = DEFAULT_SHOTS
    n_way: int = 5
    n_query: int = 5
    episodes: int = 600
    train_steps: int | None = None  # None: each method's recommended_train_steps
    seeds: int = DEFAULT_SEEDS  # training seeds per cell of a method that meta-trains
    splits: dict = field(default_factory=lambda: dict(DEFAULT_SPLITS))  # {dataset: split ids or ("all",)}
    encoder: str = "minilm"
    encoder_options: dict = field(default_factory=dict)
    finetune: str = "auto"  # applied to every method that has the option (auto: MiniLM frozen, scratch trained)
    seed: int = 0  # the first training seed; the others follow it
    device: str = "auto"
    method_options: dict = field(default_factory=dict)  # {method: {option: value}}
    data_file: str | None = None  # a user's CSV/JSONL, benched as the dataset "user"
    data_options: dict = field(default_factory=dict)  # its text_column, label_column

    def resolved_methods(self) -> tuple[str, ...]:
        names = method_names()
        chosen = self.methods or tuple(names)
        unknown = [m for m in chosen if m not in names]
        if unknown:
            raise ConfigError(f"unknown method(s) {', '.join(unknown)}; available: {', '.join(names)}")
        return tuple(chosen)

    def training_seeds(self) -> tuple[int, ...]:
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or not 1 <= self.seeds <= 100:
            raise ConfigError(f"seeds must be a whole number from 1 to 100, got {self.seeds!r}")
        return tuple(range(self.seed, self.seed + self.seeds))

    def resolved_splits(self, dataset: str) -> tuple[str | None, ...]:
        """The class splits of ``dataset`` this bench runs (None: the dataset's default split)."""
        wanted = tuple(self.splits.get(dataset, ()))
        if not wanted:
            return (None,)
        try:
            offered = dataset_split_ids(dataset)
        except DataError as error:
            raise ConfigError(str(error)) from None
        if wanted == (ALL_SPLITS,):
            return offered or (None,)
        unknown = [split for split in wanted if split not in offered]
        if unknown:
            choice = f"choose from {', '.join(offered)} or '{ALL_SPLITS}'" if offered else "it has one split only"
            raise ConfigError(f"dataset {dataset!r} has no class split {', '.join(unknown)}; {choice}")
        return wanted


def quick_settings(**overrides) -> BenchSettings:
    """A smoke check that finishes in minutes on a 2-core CPU: few episodes and steps, one seed, one split."""
    return BenchSettings(**{"episodes": 30, "train_steps": 10, "seeds": 1, "splits": {}, **overrides})


def is_domain_adaptation(method: str) -> bool:
    """Methods that adapt towards an unlabelled target domain run only where a dataset declares one."""
    return TARGET_OPTION in default_options(method)


def runs_on(method: str, dataset: str) -> bool:
    return not is_domain_adaptation(method) or dataset in DOMAIN_TARGETS


def method_cell_options(settings: BenchSettings, method: str, dataset: str | None = None) -> dict:
    """The options a cell passes to ``method``, checked now so a typo fails before any cell runs."""
    options = dict(settings.method_options.get(method, {}))
    if dataset is not None and is_domain_adaptation(method) and TARGET_OPTION not in options:
        options[TARGET_OPTION] = DOMAIN_TARGETS[dataset]
    build_options(get_method_class(method).Options, options)  # raises OptionError naming the problem
    if "finetune" in default_options(method) and "finetune" not in options:
        options["finetune"] = settings.finetune
    return options


def seeded_options(method: str, options: dict, seed: int) -> dict:
    """A method with its own ``seed`` option (e.g. sampling target texts) follows the training seed."""
    if "seed" in default_options(method) and "seed" not in options:
        return {**options, "seed": seed}
    return options


def train_steps_for(settings: BenchSettings, method: str) -> int:
    if settings.train_steps is not None:
        return settings.train_steps
    return get_method_class(method).recommended_train_steps


def bench_configs(settings: BenchSettings) -> list[RunConfig]:
    """One validated ``RunConfig`` per (dataset, split, shot, method, training seed).

    Seeds are innermost and the first seed comes first, which lets the runner run a method that
    does not meta-train once. Evaluation episodes come from files (one per dataset, split and shot).
    """
    seeds = settings.training_seeds()
    configs = []
    for dataset in settings.datasets:
        methods = [method for method in settings.resolved_methods() if runs_on(method, dataset)]
        for split_id in settings.resolved_splits(dataset):
            for k_shot in settings.shots:
                for method in methods:
                    options = method_cell_options(settings, method, dataset)
                    encoder, encoder_options = settings.encoder, dict(settings.encoder_options)
                    preferred = get_method_class(method).preferred_encoder
                    if preferred and preferred != encoder:  # e.g. MLM pretraining needs the scratch encoder
                        encoder, encoder_options = preferred, {}
                    for seed in seeds:
                        configs.append(RunConfig(
                            method=method,
                            dataset=dataset,
                            data_file=settings.data_file if dataset == "user" else None,
                            data_options=dict(settings.data_options) if dataset == "user" else {},
                            split_id=split_id,
                            n_way=settings.n_way,
                            k_shot=k_shot,
                            n_query=settings.n_query,
                            train_steps=train_steps_for(settings, method),
                            eval_episodes=settings.episodes,
                            encoder=encoder,
                            encoder_options=encoder_options,
                            method_options=seeded_options(method, options, seed),
                            seed=seed,
                            device=settings.device,
                        ).validate())
    return configs


def resolved_method_options(method: str, options: dict) -> dict:
    """Every option value the method will use, defaults included."""
    return resolved_options(method, options)


def _key_data(config: RunConfig) -> dict:
    data = dataclasses.asdict(config)
    for volatile in ("episodes_file", "name", "device"):  # they do not change the result
        data.pop(volatile, None)
    # Resolved, not as given: a changed default must change the key, or a stale cell is reused.
    data["method_options"] = resolved_method_options(config.method, config.method_options)
    if config.data_file:  # a user's file is known by its content: the same path with new rows is a new cell
        data["data_file"] = file_digest(config.data_file)
    return data


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read once per version of the file (its size and modification time):
    every cell of a user's file is keyed by it, and the Leaderboard keys every stored cell on each render."""
    stat = Path(path).stat()
    return _digest_of_version(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest_of_version(path: str, _size: int, _mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _digest(data: dict) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def cell_key(config: RunConfig) -> str:
    """Identity of a bench cell: everything that changes its result, with every option resolved."""
    return _digest(_key_data(config))


def seed_group_key(config: RunConfig) -> str:
    """What the training seeds of one cell share: its key without the seed."""
    data = _key_data(config)
    data.pop("seed")
    data["method_options"].pop("seed", None)
    return _digest(data)


def cell_name(config: RunConfig) -> str:
    """The run-store name of a bench cell."""
    return BENCH_PREFIX + cell_key(config)


def cell_names(settings: BenchSettings) -> set[str]:
    """Names of every cell ``settings`` asks for: what one bench command reports on."""
    return {cell_name(config) for config in bench_configs(settings)}


def bench_note(settings: BenchSettings, command: str) -> str:
    """The settings paragraph of a report section: enough to reproduce and to read the rows."""
    methods = settings.resolved_methods()
    if settings.train_steps is None:
        steps = ", ".join(f"{m} {get_method_class(m).recommended_train_steps}" for m in methods)
        budget = f"each method's recommended meta-training steps ({steps})"
    else:
        budget = f"{settings.train_steps} meta-training steps for every method"
    splits = "; ".join(
        f"{dataset} on class splits {', '.join(s or 'default' for s in settings.resolved_splits(dataset))}"
        for dataset in settings.datasets if settings.resolved_splits(dataset) != (None,)
    )
    adapting = [m for m in methods if is_domain_adaptation(m)]
    targets = ", ".join(f"{source} → {target}" for source, target in DOMAIN_TARGETS.items())
    domain = (f" Domain adaptation ({', '.join(adapting)}) runs only where a dataset declares an unlabelled target "
              f"domain ({targets}) and is reported nowhere else." if adapting else "")
    return (
        f"Settings: {settings.n_way}-way, {settings.n_query} queries per class, {settings.episodes} test episodes "
        f"per cell (the same saved episodes for every method), {budget}, {settings.seeds} training seed(s) "
        f"from {settings.seed} for each method that meta-trains, encoder {settings.encoder} ({settings.finetune} "
        f"where a method has the option){'; ' + splits if splits else ''}.{domain} Command: `{command}`."
    )
