"""Event writes: the engine's event stream, sorted into metric, validation, attention and message rows.

Only the worker (and the CLI, which runs in-process) writes here, one batch per transaction, so
a crash loses at most the batch in flight and a malformed event never blocks the run's later ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from metanlp.runs.database import METRIC_COLUMNS, StoreRoom, to_json, validate_run_id


@dataclass
class _EventRows:
    """One ``add_events`` batch sorted into table rows."""

    steps: list[tuple] = field(default_factory=list)
    validations: list[tuple] = field(default_factory=list)
    attention: list[tuple] = field(default_factory=list)
    messages: list[tuple] = field(default_factory=list)
    progress: dict | None = None
    evaluation: dict | None = None


def _number(value: Any) -> float | None:
    """A finite-or-infinite float for a REAL column; None for missing, text or NaN."""
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _extra_numbers(event: dict, known: tuple[str, ...]) -> str | None:
    """Numeric fields beyond the standard columns, as JSON (None when there are none)."""
    extra = {
        key: _number(value)
        for key, value in event.items()
        if key not in known and key != "event" and isinstance(value, (bool, int, float, np.number))
    }
    return to_json(extra) if extra else None


class EventLog(StoreRoom):
    """Appends a run's events and its final evaluation."""

    def add_events(self, run_id: str, events: list[dict]) -> None:
        """Store a batch of engine events (see ``metanlp.engine.training``) in one transaction.

        step → metrics rows, validation → validation rows, attention → float16 snapshots,
        progress → the run's latest progress, evaluation → the run's evaluation; warnings and
        any other kind are kept as messages.
        """
        validate_run_id(run_id)
        rows = self._sort_events(run_id, events)
        with self.database.write() as connection:
            self.database.require(connection, run_id)
            connection.executemany(
                "INSERT INTO steps (run_id, step, phase, inner_step, support_loss, query_loss, query_accuracy,"
                " lr, elapsed, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows.steps,
            )
            connection.executemany("INSERT INTO validations VALUES (?, ?, ?, ?)", rows.validations)
            connection.executemany("INSERT INTO attention VALUES (?, ?, ?, ?, ?)", rows.attention)
            connection.executemany("INSERT INTO messages VALUES (?, ?, ?)", rows.messages)
            if rows.progress is not None:
                connection.execute("UPDATE runs SET progress = ? WHERE id = ?", (to_json(rows.progress), run_id))
            if rows.evaluation is not None:
                connection.execute("UPDATE runs SET evaluation = ? WHERE id = ?", (to_json(rows.evaluation), run_id))

    @staticmethod
    def _sort_events(run_id: str, events: list[dict]) -> _EventRows:
        rows = _EventRows()
        for event in events:
            try:
                EventLog._sort_event(run_id, event, rows)
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                # One malformed event must not block the batch (and the run's later metrics) forever.
                kind = event.get("event") if isinstance(event, dict) else None
                problem = {"event_kind": str(kind), "error": f"{type(error).__name__}: {error}"}
                rows.messages.append((run_id, "invalid_event", to_json(problem)))
        return rows

    @staticmethod
    def _sort_event(run_id: str, event: dict, rows: _EventRows) -> None:
        kind = event.get("event")
        if kind == "step":
            inner_step = event.get("inner_step")
            rows.steps.append((
                run_id,
                int(event["step"]),
                str(event.get("phase", "train")),
                int(inner_step) if inner_step is not None else None,
                *(_number(event.get(key)) for key in ("support_loss", "query_loss", "query_accuracy", "lr", "elapsed")),
                _extra_numbers(event, METRIC_COLUMNS),
            ))
        elif kind == "validation":
            rows.validations.append(
                (run_id, int(event["step"]), _number(event.get("query_accuracy")), _number(event.get("ci95")))
            )
        elif kind == "attention":
            attentions = np.asarray(event["attentions"], dtype=np.float16)  # (layers, heads, S, S)
            if attentions.ndim != 4:
                raise ValueError(f"attentions must be (layers, heads, S, S), got shape {attentions.shape}")
            rows.attention.append((
                run_id,
                int(event["step"]),
                to_json([str(token) for token in event.get("tokens", [])]),
                to_json(list(attentions.shape)),
                attentions.tobytes(),
            ))
        elif kind == "progress":
            rows.progress = {key: event.get(key) for key in ("stage", "done", "total")}
        elif kind == "evaluation":
            rows.evaluation = {key: value for key, value in event.items() if key not in ("event", "per_episode")}
        else:
            payload = {key: value for key, value in event.items() if key != "event"}
            rows.messages.append((run_id, str(kind or "unknown"), to_json(payload)))

    def set_evaluation(self, run_id: str, evaluation: dict, per_episode: list[dict] | None = None) -> None:
        """The final evaluation (mean accuracy, 95% CI, ...) and, optionally, one row per test episode."""
        validate_run_id(run_id)
        summary = {key: value for key, value in evaluation.items() if key not in ("event", "per_episode")}
        episode_rows = [
            (
                run_id,
                int(result.get("episode", index)),
                _number(result.get("query_accuracy")),
                _number(result.get("query_loss")),
                _extra_numbers(result, ("episode", "query_accuracy", "query_loss")),
            )
            for index, result in enumerate(per_episode or [])
        ]
        with self.database.write() as connection:
            self.database.require(connection, run_id)
            connection.execute("UPDATE runs SET evaluation = ? WHERE id = ?", (to_json(summary), run_id))
            if per_episode is not None:
                connection.execute("DELETE FROM episode_results WHERE run_id = ?", (run_id,))
                connection.executemany("INSERT INTO episode_results VALUES (?, ?, ?, ?, ?)", episode_rows)
