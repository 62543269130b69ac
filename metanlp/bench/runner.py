"""Run a bench: each cell is a stored run; finished cells are reused, never recomputed.

A method that did not meta-train in its first seed's cell (nothing to meta-learn, or no steps)
has no training variance to measure, so its other seeds are not run.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from metanlp.bench.memory import PeakMemory
from metanlp.bench.plan import BenchSettings, bench_configs, cell_name, seed_group_key
from metanlp.data.episodes import save_episodes
from metanlp.device import describe_device, resolve_device
from metanlp.encoders.embedding_file import load_embeddings, save_embeddings
from metanlp.engine import EncoderPool, RunConfig
from metanlp.engine.training import evaluation_episodes, load_run_dataset
from metanlp.methods.registry import would_meta_learn
from metanlp.runs.store import RunStore
from metanlp.runs.worker import execute_run

ProgressCallback = Callable[[int, int, RunConfig, str], None]


@dataclass
class BenchReport:
    computed: list[str] = field(default_factory=list)  # run ids trained and evaluated now
    reused: list[str] = field(default_factory=list)  # run ids found finished in the store
    failed: list[tuple[RunConfig, str]] = field(default_factory=list)
    single_run: list[str] = field(default_factory=list)  # cell names of seeds skipped: nothing was meta-trained
    seconds: float = 0.0
    embedding_seconds: dict[str, float] = field(default_factory=dict)  # 'encoder:episode file' → seconds
    embeddings_loaded: int = 0  # sentences whose embeddings came from the embedding file


def episodes_file_name(config: RunConfig) -> str:
    """The file name of a task's test episodes: everything that decides which episodes they are."""
    source = config.dataset
    if config.data_file:  # a user's file: its content names its episodes (two files never share them)
        source += "-" + hashlib.sha256(Path(config.data_file).read_bytes()).hexdigest()[:12]
    return (f"{source}_split{config.split_id or 'default'}_{config.n_way}way_{config.k_shot}shot_"
            f"{config.n_query}q_{config.eval_episodes}ep_seed{config.eval_seed}.json.gz")


def episodes_path(store: RunStore, config: RunConfig) -> Path:
    """The shared test-episode file of a task, inside the runs folder."""
    return store.root / "bench" / "episodes" / episodes_file_name(config)


def write_test_episodes(config: RunConfig, folder: Path) -> Path:
    """The task's test episodes saved in ``folder`` under ``episodes_file_name`` (written once, then reused)."""
    path = Path(folder) / episodes_file_name(config)
    if not path.exists():
        dataset, _ = load_run_dataset(config)
        episodes = evaluation_episodes(dataset, config)
        description = {key: getattr(config, key) for key in
                       ("dataset", "split_id", "n_way", "k_shot", "n_query", "eval_episodes", "eval_seed")}
        save_episodes(episodes, path, description)
    return path


def ensure_episodes(store: RunStore, config: RunConfig) -> Path:
    return write_test_episodes(config, episodes_path(store, config).parent)


def pre_embed(pool: EncoderPool, config: RunConfig) -> float:
    """Put every test sentence of a task in the shared embedding cache before any cell is timed."""
    episodes = evaluation_episodes(load_run_dataset(config)[0], config)
    texts = list(dict.fromkeys(text for episode in episodes for text in episode.support_texts + episode.query_texts))
    return pool.warm(config.encoder, config.encoder_options, texts, resolve_device(config.device))


def finished_cells(store: RunStore) -> dict[str, str]:
    """Cell name → id of its newest finished run (read once: a full bench has hundreds of cells)."""
    finished: dict[str, str] = {}
    for record in store.list_runs(statuses=("done",)):  # newest first
        if record.evaluation:
            finished.setdefault(record.name, record.id)
    return finished


def finished_cell(store: RunStore, name: str) -> str | None:
    return finished_cells(store).get(name)


def run_cell(
    store: RunStore, pool: EncoderPool, config: RunConfig, name: str, settings: BenchSettings, report: BenchReport
) -> tuple[str, str]:
    """Train and evaluate one cell; its evaluation gains time, memory, device and budget. → (run id, status)."""
    config.episodes_file = str(ensure_episodes(store, config))
    task_key = f"{config.encoder}:{config.episodes_file}"
    if task_key not in report.embedding_seconds:
        report.embedding_seconds[task_key] = pre_embed(pool, config)
    run_id = store.create_run(config, name, claimed_by=os.getpid())
    with PeakMemory() as peak:
        status = execute_run(store, run_id, encoder_pool=pool)
    record = store.get_run(run_id)
    if status != "done" or not record.evaluation:
        return run_id, status if status != "done" else "failed"
    evaluation = dict(record.evaluation)
    evaluation.update(
        train_seconds=max(0.0, (record.duration() or 0.0) - evaluation.get("seconds", 0.0)),
        peak_memory_mb=peak.cuda_mb if peak.cuda_mb else peak.rss_mb,
        memory_kind="CUDA peak allocated" if peak.cuda_mb else "process peak RSS",
        device=describe_device(resolve_device(config.device)),
        train_budget=_budget(settings),
    )
    store.set_evaluation(run_id, evaluation)
    return run_id, "done"


class CellExecutor(Protocol):
    """Runs a bench cell elsewhere (a run manager on the Ray backend): queue it, cancel it."""

    def submit(self, config: RunConfig, name: str = "") -> str: ...


def run_bench(
    settings: BenchSettings,
    store: RunStore,
    on_progress: ProgressCallback | None = None,
    encoder_pool: EncoderPool | None = None,
    embedding_file: Path | None = None,
    executor: CellExecutor | None = None,
    in_flight: int = 1,
) -> BenchReport:
    """Run every cell of ``settings`` not already finished in ``store``.

    An interrupted bench resumes where it stopped: finished cells are found by their key
    (everything that determines the result) and skipped; an unfinished cell starts over.
    ``embedding_file`` keeps the frozen encoder's embeddings between bench commands (read at the
    start when it exists, written at the end), so a rerun does not embed every sentence again.
    """
    started = time.perf_counter()
    if executor is not None:  # cells run elsewhere (Ray), ``in_flight`` at a time; the store stays here
        report = BenchReport()
        _run_cells_elsewhere(settings, store, executor, max(1, in_flight), report, on_progress)
        report.seconds = time.perf_counter() - started
        return report
    pool = encoder_pool or EncoderPool()
    frozen = None if settings.encoder == "scratch" else pool.pristine(settings.encoder, settings.encoder_options)
    loaded = load_embeddings(frozen, embedding_file) if embedding_file is not None and frozen is not None else 0
    report = BenchReport(embeddings_loaded=loaded)
    try:
        _run_cells(settings, store, pool, report, on_progress)
    finally:  # an interrupted bench keeps what it embedded
        if embedding_file is not None and frozen is not None:
            save_embeddings(frozen, embedding_file)
    report.seconds = time.perf_counter() - started
    return report


def _run_cells(
    settings: BenchSettings, store: RunStore, pool: EncoderPool, report: BenchReport,
    on_progress: ProgressCallback | None,
) -> None:
    configs = bench_configs(settings)
    not_meta_trained: set[str] = set()  # seed groups whose first seed did not meta-train
    finished_before = finished_cells(store)
    for index, config in enumerate(configs):
        name, group = cell_name(config), seed_group_key(config)
        finished = None
        if group in not_meta_trained:
            report.single_run.append(name)
            status = "one run: not meta-trained"
        # Asked again just before running: another bench process on the same store may have finished it since.
        elif (finished := finished_before.get(name) or finished_cell(store, name)) is not None:
            report.reused.append(finished)
            status = "reused"
        else:
            run_id, status = run_cell(store, pool, config, name, settings, report)
            if status == "done":
                report.computed.append(run_id)
                finished = run_id
            else:
                report.failed.append((config, store.get_run(run_id).error or status))
        if finished is not None and not store.get_run(finished).evaluation.get("meta_trained", True):
            not_meta_trained.add(group)
        if on_progress:
            on_progress(index + 1, len(configs), config, status)


def _run_cells_elsewhere(
    settings: BenchSettings, store: RunStore, executor: CellExecutor, in_flight: int, report: BenchReport,
    on_progress: ProgressCallback | None, poll: float = 0.2,
) -> None:
    """Queue the cells not finished yet, ``in_flight`` at a time, and collect them as they end.

    The seeds after the first of a method that does not meta-train in its configuration are not
    run (as locally, where the first seed's run tells; here the configuration tells up front).
    """
    configs = bench_configs(settings)
    finished_before = finished_cells(store)
    running: dict[str, tuple[RunConfig, str]] = {}
    done = 0

    def collect(block: bool) -> None:
        nonlocal done
        while running:
            ended = [run_id for run_id in running if store.get_run(run_id).status not in ("queued", "running")]
            for run_id in ended:
                config, name = running.pop(run_id)
                record = store.get_run(run_id)
                if record.status == "done" and record.evaluation:
                    evaluation = dict(record.evaluation)
                    evaluation.update(train_seconds=max(0.0, (record.duration() or 0.0) - evaluation.get("seconds", 0.0)),
                                      device="Ray worker", train_budget=_budget(settings))
                    store.set_evaluation(run_id, evaluation)
                    report.computed.append(run_id)
                    status = "done"
                else:
                    report.failed.append((config, record.error or record.status))
                    status = record.status
                done += 1
                if on_progress:
                    on_progress(done, len(configs), config, status)
            if ended or not block:
                return
            time.sleep(poll)

    for config in configs:
        name = cell_name(config)
        skipped = config.seed != settings.training_seeds()[0] and not _meta_trains(config)
        if skipped or (finished := finished_before.get(name)) is not None:
            if skipped:
                report.single_run.append(name)
            else:
                report.reused.append(finished)
            done += 1
            if on_progress:
                on_progress(done, len(configs), config, "one run: not meta-trained" if skipped else "reused")
            continue
        while len(running) >= in_flight:
            collect(block=True)
        config.episodes_file = str(ensure_episodes(store, config))
        running[executor.submit(config, name=name)] = (config, name)
        collect(block=False)
    while running:
        collect(block=True)


def _meta_trains(config: RunConfig) -> bool:
    return bool(config.train_steps) and would_meta_learn(config.method, config.method_options, config.encoder)


def _budget(settings: BenchSettings) -> str:
    return "fixed" if settings.train_steps is not None else "recommended"
