"""Read models: a run's metrics, validations, per-episode results and attention, ready to chart.

The dashboard pages and the bench read through here; they get pandas frames and numpy arrays and
never see SQL, so the tables can change without touching a page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metanlp.runs.database import METRIC_COLUMNS, StoreRoom, validate_run_id


@dataclass
class AttentionSnapshot:
    """One recorded attention map of the config's ``attention_text`` at a training step."""

    step: int
    tokens: list[str]
    attentions: np.ndarray  # (layers, heads, S, S) float32, rows sum to 1 (stored as float16)


class RunReadModels(StoreRoom):
    """Frames and snapshots of what a run recorded, for charts and reports."""

    def _frame(self, query: str, parameters: tuple) -> pd.DataFrame:
        with self.database.connect() as connection:
            return pd.read_sql_query(query, connection, params=parameters)

    @staticmethod
    def _expand_extra(frame: pd.DataFrame) -> pd.DataFrame:
        """Turn the JSON ``extra`` column into one numeric column per extra metric."""
        extra = frame.pop("extra")
        if extra.notna().any():
            parsed = pd.DataFrame([json.loads(value) if isinstance(value, str) else {} for value in extra], index=frame.index)
            for column in parsed.columns:
                if column not in frame.columns:
                    frame[column] = pd.to_numeric(parsed[column], errors="coerce")
        return frame

    def metrics(self, run_id: str, phases: tuple[str, ...] | None = None) -> pd.DataFrame:
        """One row per step event, in order: ``METRIC_COLUMNS`` + any extra numeric metric columns.

        ``phase`` is "train" for outer-loop steps and "inner" for inner-loop steps (``inner_step``
        1, 2, ...; NaN on outer rows). ``phases`` keeps only those phases.
        """
        validate_run_id(run_id)
        query = f"SELECT {', '.join(METRIC_COLUMNS)}, extra FROM steps WHERE run_id = ?"
        parameters: tuple = (run_id,)
        if phases is not None:
            query += f" AND phase IN ({', '.join('?' for _ in phases)})"
            parameters += tuple(phases)
        frame = self._frame(query + " ORDER BY rowid", parameters)
        for column in ("inner_step", "support_loss", "query_loss", "query_accuracy", "lr", "elapsed"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        return self._expand_extra(frame)

    def validation(self, run_id: str) -> pd.DataFrame:
        """Validation accuracy during training: step, query_accuracy, ci95."""
        validate_run_id(run_id)
        return self._frame(
            "SELECT step, query_accuracy, ci95 FROM validations WHERE run_id = ? ORDER BY rowid", (run_id,)
        )

    def episode_results(self, run_id: str) -> pd.DataFrame:
        """The final evaluation, one row per test episode: episode, query_accuracy, query_loss (+ extras)."""
        validate_run_id(run_id)
        frame = self._frame(
            "SELECT episode, query_accuracy, query_loss, extra FROM episode_results WHERE run_id = ?"
            " ORDER BY episode",
            (run_id,),
        )
        return self._expand_extra(frame)

    def attention_snapshots(self, run_id: str) -> list[AttentionSnapshot]:
        """Attention maps of the config's ``attention_text``, in training order."""
        validate_run_id(run_id)
        with self.database.connect() as connection:
            rows = connection.execute(
                "SELECT step, tokens, shape, data FROM attention WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()
        return [
            AttentionSnapshot(
                step=step,
                tokens=json.loads(tokens),
                attentions=np.frombuffer(data, dtype=np.float16).reshape(json.loads(shape)).astype(np.float32),
            )
            for step, tokens, shape, data in rows
        ]

    def messages(self, run_id: str, kind: str | None = None) -> list[dict]:
        """Warnings and other non-metric events, oldest first, each with its ``event`` kind."""
        validate_run_id(run_id)
        query, parameters = "SELECT kind, payload FROM messages WHERE run_id = ?", [run_id]
        if kind is not None:
            query += " AND kind = ?"
            parameters.append(kind)
        with self.database.connect() as connection:
            rows = connection.execute(query + " ORDER BY rowid", parameters).fetchall()
        return [{"event": row_kind, **json.loads(payload)} for row_kind, payload in rows]

    def notices(self, run_id: str) -> list[str]:
        """What the engine said about the run's configuration (e.g. that it had nothing to meta-learn)."""
        return [str(message.get("message", "")) for message in self.messages(run_id, "no_meta_training")]

    def warnings(self, run_id: str) -> list[str]:
        """Data warnings the run raised (e.g. about a user file), for display beside the run."""
        return [str(message.get("message", "")) for message in self.messages(run_id, "warning")]
