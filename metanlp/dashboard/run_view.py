"""What the Runs page says about a run: progress, ETA, labels and the downloadable files."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from metanlp.bench.plan import BENCH_PREFIX
from metanlp.methods.registry import resolved_options
from metanlp.runs.tags import (  # noqa: F401 - the pages' and tests' names for them
    TAGS_FILE,
    change_tags,
    clean_run_ids,
    clean_tag,
    forget_tags,
    is_run_id,
    load_tags,
)

ACTIVE_STATUSES = ("queued", "running")
STATUS_ICONS = {  # Material Symbols, bundled with Streamlit (emoji fonts may be missing offline)
    "queued": ":material/hourglass_empty:",
    "running": ":material/directions_run:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
}
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


def run_title(record) -> str:
    """What a run is called on the page: its name; a bench cell (named ``bench:<key>`` in the store,
    a key only the bench reads) is described from its config instead."""
    config = record.config or {}
    method, dataset = config.get("method", "?"), config.get("dataset", "?")
    if record.name and not record.name.startswith(BENCH_PREFIX):
        return record.name
    if not record.name:
        return f"{method} on {dataset}"
    parts = ["bench", method, f"{dataset} {config.get('n_way', '?')}-way {config.get('k_shot', '?')}-shot"]
    split = (config.get("data_options") or {}).get("split")
    if split:
        parts[-1] += f" ({split})"
    parts.append(f"seed {config.get('seed', 0)}")
    return " · ".join(parts)


SHORT_ID = 6  # hex characters of a run id shown in labels: enough to tell runs apart on one page


def run_label(record) -> str:
    """Short label for selectors and chart legends: the title plus the start of the id."""
    return f"{run_title(record)} · {record.id[:SHORT_ID]}"


def no_curve_message(records: Sequence) -> str:
    """Why the chart is empty when none of ``records`` recorded a training step."""
    if not records:
        return "No run to show."
    stopped = [record for record in records if record.status in ("failed", "cancelled")]
    if len(stopped) == len(records):
        if len(records) == 1:
            what = "failed" if records[0].status == "failed" else "was cancelled"
            return f"No curve to draw: this run {what} before its first training step (see below)."
        return "No curve to draw: these runs failed or were cancelled before their first training step (see below)."
    if all(record.status == "done" for record in records):
        return "No training steps were recorded for this run."
    return "No training steps recorded yet: the curves appear with the first step."


def runs_table(records: Sequence, tags: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """One row per run for the overview table (user-chosen names are shown as plain text).

    Test accuracy is a number (percent) or missing for a run without a result; the page shows
    missing values as "—" (``st.dataframe(placeholder=...)``).
    """
    rows = []
    for record in records:
        config = record.config or {}
        evaluation = record.evaluation or {}
        accuracy = evaluation.get("mean_accuracy")
        rows.append({
            "status": record.status,
            "name": run_title(record),
            "method": config.get("method"),
            "dataset": config.get("dataset"),
            "setting": f"{config.get('n_way')}-way {config.get('k_shot')}-shot",
            "encoder": config.get("encoder"),
            "test accuracy": float("nan") if accuracy is None else round(100 * accuracy, 2),
            "tags": ", ".join((tags or {}).get(record.id, [])),
            "created": pd.to_datetime(record.created_at, unit="s").strftime("%Y-%m-%d %H:%M"),
            "id": record.id,
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------- filters
@dataclass(frozen=True)
class RunFilter:
    """What the Runs page lists: every field empty means no restriction."""

    statuses: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # a run matches if it has any of them
    text: str = ""  # every word must occur in the run's title, id, method, dataset, tags or error

    @property
    def active(self) -> bool:
        return bool(self.statuses or self.methods or self.datasets or self.tags or self.text.strip())


def filter_values(records: Sequence, field: str) -> list[str]:
    """The distinct values of a config field (method, dataset) among ``records``, sorted."""
    return sorted({str((record.config or {}).get(field)) for record in records if (record.config or {}).get(field)})


def _search_text(record, tags: Sequence[str]) -> str:
    config = record.config or {}
    return " ".join(
        str(part) for part in (run_title(record), record.name, record.id, config.get("method"),
                               config.get("dataset"), config.get("encoder"), record.status, record.error, *tags) if part
    ).lower()


def filter_runs(records: Sequence, run_filter: RunFilter, tags: Mapping[str, Sequence[str]] | None = None) -> list:
    """The records that pass every restriction of ``run_filter``, in their order."""
    tags = tags or {}
    words = run_filter.text.lower().split()
    kept = []
    for record in records:
        config = record.config or {}
        own_tags = tags.get(record.id, [])
        if run_filter.statuses and record.status not in run_filter.statuses:
            continue
        if run_filter.methods and config.get("method") not in run_filter.methods:
            continue
        if run_filter.datasets and config.get("dataset") not in run_filter.datasets:
            continue
        if run_filter.tags and not set(run_filter.tags) & set(own_tags):
            continue
        if words:
            haystack = _search_text(record, own_tags)
            if not all(word in haystack for word in words):
                continue
        kept.append(record)
    return kept


def metrics_csv(metrics: pd.DataFrame) -> bytes:
    return metrics.to_csv(index=False).encode("utf-8")


#: Run settings a comparison leaves out: they do not change what is learned or how it is scored.
NOT_COMPARED = ("name", "attention_text", "attention_every", "episodes_file", "device")


def flat_settings(record) -> dict[str, object]:
    """A run's settings as one flat mapping: run settings, then every method option (defaults filled in)."""
    config = dict(record.config)
    flat: dict[str, object] = {}
    for key, value in config.items():
        if key in NOT_COMPARED or key.endswith("_options"):
            continue
        flat[key] = value
    try:
        options = resolved_options(config.get("method", ""), config.get("method_options") or {})
    except ValueError:  # an old run whose options no longer validate: compare them as given
        options = dict(config.get("method_options") or {})
    for prefix, values in (("option", options), ("encoder option", config.get("encoder_options") or {}),
                           ("data option", config.get("data_options") or {})):
        for key, value in sorted(values.items()):
            flat[f"{prefix}: {key}"] = value
    return flat


def config_diff(records: Sequence) -> pd.DataFrame:
    """The settings that differ between runs: one row per setting, one column per run (its label).

    A setting one run has and another lacks (e.g. an option of another method) shows as "—".
    """
    settings = {run_label(record): flat_settings(record) for record in records}
    names = list(dict.fromkeys(name for flat in settings.values() for name in flat))
    rows = []
    for name in names:
        values = [flat.get(name, MISSING) for flat in settings.values()]
        if len({json.dumps(value, sort_keys=True, default=str) for value in values}) > 1:
            rows.append({"setting": name, **{label: _shown(value) for label, value in zip(settings, values, strict=True)}})
    return pd.DataFrame(rows, columns=["setting", *settings])


MISSING = object()


def _shown(value: object) -> str:
    if value is MISSING:
        return "—"
    return value if isinstance(value, str) else json.dumps(value)


def runs_metrics_csv(records: Sequence, metrics: Mapping[str, pd.DataFrame]) -> bytes:
    """Every shown run's metrics in one CSV, each row with its run's id and name (a bulk export)."""
    frames = [frame.assign(run_id=record.id, run_name=record.name) for record in records
              if (frame := metrics.get(record.id)) is not None and not frame.empty]
    if not frames:
        return b""
    combined = pd.concat(frames, ignore_index=True)
    first = ["run_id", "run_name"]
    return combined[first + [column for column in combined.columns if column not in first]].to_csv(index=False).encode()


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
