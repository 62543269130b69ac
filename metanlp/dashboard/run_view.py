"""What the Runs page says about a run: progress, ETA, labels and the downloadable files."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

ACTIVE_STATUSES = ("queued", "running")
STATUS_ICONS = {  # Material Symbols, bundled with Streamlit (emoji fonts may be missing offline)
    "queued": ":material/hourglass_empty:",
    "running": ":material/directions_run:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
}
RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{12}$")


def is_run_id(value: object) -> bool:
    """True for a well-formed run id (12 lowercase hex characters): nothing else reaches the store."""
    return isinstance(value, str) and bool(RUN_ID_PATTERN.match(value))


def clean_run_ids(values: Sequence[object]) -> list[str]:
    """Keep only well-formed ids, in order, without repeats (e.g. from the page's query string)."""
    return list(dict.fromkeys(value for value in values if is_run_id(value)))


def format_duration(seconds: float | None) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'; '—' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class Progress:
    fraction: float  # 0..1 within the current stage
    text: str  # shown next to the bar
    eta_seconds: float | None  # until the current stage ends


def run_progress(record, train_seconds: float | None = None, now: float | None = None) -> Progress:
    """Progress of the current stage (training, then evaluation) with its estimated time left.

    ``record`` is a ``RunRecord``; ``train_seconds`` is when training ended, in seconds after the
    start (the last train step's ``elapsed``), so the evaluation's pace excludes training time.
    The ETA extrapolates the stage's pace so far, so it is rough while a stage has just begun.
    """
    now = time.time() if now is None else now
    status = record.status
    if status == "done":
        return Progress(1.0, "finished", 0.0)
    if status in ("failed", "cancelled"):
        return Progress(0.0, status, None)
    if status == "queued" or not record.started_at:
        return Progress(0.0, "waiting in the queue", None)
    progress = record.progress or {}
    stage = progress.get("stage", "train")
    done, total = int(progress.get("done", 0)), int(progress.get("total", 0))
    if not total:
        return Progress(0.0, "starting: loading the data and the encoder", None)
    fraction = min(max(done / total, 0.0), 1.0)
    if stage == "evaluate":
        label = f"evaluating on meta-test episodes: {done} of {total}"
        stage_start = record.started_at + (train_seconds or 0.0)
    else:
        label = f"training: step {done} of {total}"
        stage_start = record.started_at
    eta = None
    if done:
        eta = max(0.0, now - stage_start) * (total - done) / done
        label += f" · about {format_duration(eta)} left in this stage"
    return Progress(fraction, label, eta)


FAST_REFRESH_SECONDS = 0.5  # while a run is queued or just started: its first points show at once
REFRESH_SECONDS = 1.0  # later: enough for a curve, light on the server
YOUNG_RUN_SECONDS = 15.0


def refresh_seconds(records: Sequence, now: float | None = None) -> float | None:
    """How often the live view should refresh: None when no run is active."""
    now = time.time() if now is None else now
    active = [record for record in records if record.status in ACTIVE_STATUSES]
    if not active:
        return None
    young = any(not record.started_at or now - record.started_at < YOUNG_RUN_SECONDS for record in active)
    return FAST_REFRESH_SECONDS if young else REFRESH_SECONDS


def runs_with_checkpoint(store) -> list:
    """Finished runs whose trained method was saved (newest first): what can be reloaded."""
    return [
        record
        for record in store.list_runs(statuses=("done",))
        if (store.checkpoint_dir(record.id) / "method.json").is_file()
    ]


def run_label(record) -> str:
    """Short label for selectors and chart legends: name (or method) plus the id."""
    config = record.config or {}
    title = record.name or f"{config.get('method', '?')} on {config.get('dataset', '?')}"
    return f"{title} · {record.id}"


def runs_table(records: Sequence) -> pd.DataFrame:
    """One row per run for the overview table (user-chosen names are shown as plain text)."""
    rows = []
    for record in records:
        config = record.config or {}
        evaluation = record.evaluation or {}
        accuracy = evaluation.get("mean_accuracy")
        rows.append({
            "status": record.status,
            "name": record.name,
            "method": config.get("method"),
            "dataset": config.get("dataset"),
            "setting": f"{config.get('n_way')}-way {config.get('k_shot')}-shot",
            "encoder": config.get("encoder"),
            "test accuracy": None if accuracy is None else round(100 * accuracy, 2),
            "created": pd.to_datetime(record.created_at, unit="s").strftime("%Y-%m-%d %H:%M"),
            "id": record.id,
        })
    return pd.DataFrame(rows)


def metrics_csv(metrics: pd.DataFrame) -> bytes:
    return metrics.to_csv(index=False).encode("utf-8")


def config_json(record) -> bytes:
    return json.dumps(record.config, indent=2, sort_keys=True).encode("utf-8")


def training_seconds(metrics: pd.DataFrame) -> float | None:
    """When training ended, in seconds after the run started (the last train step's ``elapsed``)."""
    if metrics is None or metrics.empty or "elapsed" not in metrics:
        return None
    train = metrics[metrics["phase"] == "train"] if "phase" in metrics else metrics
    elapsed = train["elapsed"].dropna()
    return float(elapsed.max()) if not elapsed.empty else None


def latest_values(metrics: pd.DataFrame) -> dict[str, float]:
    """Last train-phase support loss, query loss and query accuracy (for the metric tiles)."""
    if metrics is None or metrics.empty:
        return {}
    train = metrics[metrics["phase"] == "train"] if "phase" in metrics else metrics
    if train.empty:
        return {}
    last = train.sort_values("step").iloc[-1]
    return {
        key: float(last[key])
        for key in ("step", "support_loss", "query_loss", "query_accuracy")
        if key in last and pd.notna(last[key])
    }
