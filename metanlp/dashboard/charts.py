"""Plotly figure builders for the dashboard: pure functions from data to ``go.Figure``.

Plotly draws offline (the JavaScript ships with Streamlit), so every chart works without a
network. Plotly reads a few HTML tags inside labels, so every text a user typed goes through
``text.plot_text`` before it reaches a figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from metanlp.dashboard.text import plot_text

RUN_COLORS = qualitative.Plotly
LOSS_DASH = {"support_loss": "dash", "query_loss": "solid"}
LOSS_NAMES = {"support_loss": "support loss", "query_loss": "query loss"}
# MLM pretraining reports its own objective under its own names; the chart says what each one is.
PRETRAINING_LOSS_DASH = {"mlm_loss": "dashdot", "nsp_loss": "longdash"}
ACCURACY_DASH = {"query_accuracy": "solid", "nsp_accuracy": "dot"}
METRIC_NAMES = {
    **LOSS_NAMES,
    "mlm_loss": "MLM loss (masked words)",
    "nsp_loss": "NSP loss (next sentence)",
    "query_accuracy": "query accuracy",
    "nsp_accuracy": "NSP accuracy (next sentence)",
}
METRIC_ORDER = (  # colours of one run
    "query_loss", "support_loss", "query_accuracy", "validation_accuracy", "mlm_loss", "nsp_loss", "nsp_accuracy",
)
MARKERS_UP_TO = 60  # draw point markers while a curve is short, so its first points are visible
LONG_LABEL = 18  # characters of a token shown on an axis


def run_color(index: int) -> str:
    return RUN_COLORS[index % len(RUN_COLORS)]


def inner_step_positions(frame: pd.DataFrame) -> pd.Series:
    """x positions of inner-loop events: spread between the previous outer step and theirs.

    Inner step i of n during outer step s sits at s - 1 + i / (n + 1), so the inner curve of
    step s is drawn just before step s's own point and never on top of it.
    """
    if frame.empty:
        return pd.Series(dtype=float)
    counts = frame.groupby("step")["inner_step"].transform("max")
    return frame["step"] - 1 + frame["inner_step"] / (counts + 1)


def _mode(points: int) -> str:
    return "lines+markers" if points <= MARKERS_UP_TO else "lines"


def training_curves(
    runs: Mapping[str, pd.DataFrame],
    validation: Mapping[str, pd.DataFrame] | None = None,
    smoothing: int = 0,
) -> go.Figure:
    """Losses (left) and accuracies (right) against the outer step.

    ``runs`` maps a run label to its metrics table (``RunStore.metrics``: columns step, phase,
    inner_step, support_loss, query_loss, query_accuracy, plus extra metrics such as MLM
    pretraining's mlm_loss, nsp_loss and nsp_accuracy, drawn under their own names). One run: one
    colour per metric. Several runs: one colour per run, query loss solid and support loss dashed
    (MLM loss dash-dot, NSP loss long dashes, NSP accuracy dotted). Inner-loop losses
    are faint dotted lines between steps; other phases (e.g. pre-training) get their own legend
    entries. Validation accuracy is drawn as diamonds with its 95% interval. ``smoothing`` > 1
    adds the running mean over that many steps and fades the raw train-phase curves behind it
    (each step is one random episode, so raw curves are noisy).
    """
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    single = len(runs) == 1
    for index, (label, frame) in enumerate(runs.items()):
        name = "" if single else f"{plot_text(label)}: "
        if frame is None or frame.empty:
            continue

        def color(metric: str, index: int = index) -> str:
            return run_color(METRIC_ORDER.index(metric)) if single else run_color(index)

        phases = frame["phase"].fillna("train") if "phase" in frame else pd.Series("train", index=frame.index)
        for phase in dict.fromkeys(phases):
            rows = frame[phases == phase].sort_values(["step", "inner_step"] if "inner_step" in frame else "step")
            inner = phase == "inner"
            x = inner_step_positions(rows) if inner and "inner_step" in rows else rows["step"]
            suffix = "" if phase == "train" else f" ({phase})"
            smooth = smoothing > 1 and not inner
            for metric, dash in {**LOSS_DASH, **PRETRAINING_LOSS_DASH}.items():
                if metric not in rows or rows[metric].isna().all():
                    continue
                kept = rows[metric].notna()
                title = f"{METRIC_NAMES[metric]}{suffix}"
                figure.add_trace(
                    go.Scatter(
                        x=x[kept],
                        y=rows.loc[kept, metric],
                        mode="lines" if inner else _mode(int(kept.sum())),
                        name=f"{name}{title}",
                        legendgroup=label,
                        line={"color": color(metric), "dash": "dot" if inner else dash, "width": 1 if inner else 2},
                        opacity=0.45 if inner else 0.3 if smooth else 1.0,
                        hovertemplate=f"step %{{x}}<br>{title} %{{y:.4f}}<extra>{name}</extra>",
                    ),
                    row=1,
                    col=1,
                )
                if smooth:
                    _add_running_mean(figure, rows.loc[kept], metric, smoothing, f"{name}{title}",
                                      color(metric), dash, label, column=1)
            for metric, dash in ACCURACY_DASH.items():
                if inner or metric not in rows or rows[metric].isna().all():
                    continue
                kept = rows[metric].notna()
                title = f"{METRIC_NAMES[metric]}{suffix}"
                if metric == "query_accuracy" and phase != "train":
                    dash = "dashdot"
                figure.add_trace(
                    go.Scatter(
                        x=rows.loc[kept, "step"],
                        y=rows.loc[kept, metric],
                        mode=_mode(int(kept.sum())),
                        name=f"{name}{title}",
                        legendgroup=label,
                        line={"color": color(metric), "dash": dash},
                        opacity=0.3 if smooth else 1.0,
                        hovertemplate=f"step %{{x}}<br>{title} %{{y:.1%}}<extra>{name}</extra>",
                    ),
                    row=1,
                    col=2,
                )
                if smooth:
                    _add_running_mean(figure, rows.loc[kept], metric, smoothing, f"{name}{title}",
                                      color(metric), dash, label, column=2)
        checks = (validation or {}).get(label)
        if checks is not None and not checks.empty:
            figure.add_trace(
                go.Scatter(
                    x=checks["step"],
                    y=checks["query_accuracy"],
                    error_y={"type": "data", "array": checks.get("ci95"), "visible": "ci95" in checks},
                    mode="markers+lines",
                    marker={"symbol": "diamond", "size": 9, "color": color("validation_accuracy")},
                    line={"color": color("validation_accuracy"), "dash": "dot"},
                    name=f"{name}validation accuracy",
                    legendgroup=label,
                    hovertemplate=f"step %{{x}}<br>validation %{{y:.1%}}<extra>{name}</extra>",
                ),
                row=1,
                col=2,
            )
    figure.update_xaxes(title_text="step", row=1, col=1)
    figure.update_xaxes(title_text="step", row=1, col=2)
    figure.update_yaxes(title_text="cross-entropy", row=1, col=1)
    figure.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    figure.update_layout(
        height=420,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.2},
        hovermode="closest",
    )
    return figure


def _add_running_mean(
    figure: go.Figure, rows: pd.DataFrame, metric: str, window: int, name: str, color: str, dash: str,
    group: str, column: int,
) -> None:
    """The mean of the last ``window`` steps at every step (shorter at the start), drawn bold."""
    figure.add_trace(
        go.Scatter(
            x=rows["step"],
            y=rows[metric].rolling(window, min_periods=1).mean(),
            mode="lines",
            name=f"{name} (mean of {window})",
            legendgroup=group,
            line={"color": color, "dash": dash, "width": 3},
            hovertemplate=f"step %{{x}}<br>running mean %{{y:.4f}}<extra>{name}</extra>",
        ),
        row=1,
        col=column,
    )


def _token_labels(tokens: Sequence[str]) -> list[str]:
    shown = []
    for token in tokens:
        token = str(token)
        shown.append(plot_text(token if len(token) <= LONG_LABEL else token[: LONG_LABEL - 1] + "…"))
    return shown


def _heatmap_trace(tokens: Sequence[str], weights: np.ndarray, value_name: str, **style) -> go.Heatmap:
    weights = np.asarray(weights, dtype=float)
    if weights.shape != (len(tokens), len(tokens)):
        raise ValueError(f"weights of shape {weights.shape} do not match {len(tokens)} tokens")
    labels = _token_labels(tokens)
    positions = list(range(len(tokens)))
    hover = np.array([[(labels[row], labels[col]) for col in positions] for row in positions], dtype=object)
    return go.Heatmap(
        z=weights,
        x=positions,
        y=positions,
        customdata=hover,
        hovertemplate=f"%{{customdata[0]}} → %{{customdata[1]}}<br>{value_name} %{{z:.3f}}<extra></extra>",
        **style,
    )


def _token_axes(figure: go.Figure, tokens: Sequence[str], columns: int) -> None:
    """Tokens as tick labels on numeric axes (a repeated word keeps its own row), square cells."""
    axis = {"tickmode": "array", "tickvals": list(range(len(tokens))), "ticktext": _token_labels(tokens), "showgrid": False}
    for column in range(1, columns + 1):
        x_name = "x" if column == 1 else f"x{column}"
        figure.update_xaxes(title_text="key token (attended to)", tickangle=-60, constrain="domain", row=1, col=column, **axis)
        figure.update_yaxes(
            title_text="query token" if column == 1 else None, autorange="reversed", scaleanchor=x_name,
            scaleratio=1, constrain="domain", row=1, col=column, **axis,
        )


def _side(tokens: Sequence[str]) -> int:
    return max(360, min(760, 22 * len(tokens) + 200))


def attention_heatmap(
    tokens: Sequence[str], weights: np.ndarray, title: str = "", difference: bool = False
) -> go.Figure:
    """Heatmap of one (S, S) attention matrix: row = query token, column = key token.

    ``difference=True`` uses a diverging scale centred on zero (after − before).
    """
    weights = np.asarray(weights, dtype=float)
    if difference:
        limit = max(float(np.abs(weights).max()) if weights.size else 0.0, 1e-6)
        style = {"colorscale": "RdBu_r", "zmin": -limit, "zmax": limit, "zmid": 0.0}
    else:
        style = {"colorscale": "Viridis", "zmin": 0.0, "zmax": float(weights.max()) if weights.size else 1.0}
    value_name = "change" if difference else "attention"
    trace = _heatmap_trace(tokens, weights, value_name, colorbar={"title": {"text": value_name}}, **style)
    figure = make_subplots(rows=1, cols=1)
    figure.add_trace(trace, row=1, col=1)
    _token_axes(figure, tokens, 1)
    figure.update_layout(
        title={"text": plot_text(title)}, height=_side(tokens), margin={"l": 10, "r": 10, "t": 50, "b": 10}
    )
    return figure


def attention_pair(
    tokens: Sequence[str], before: np.ndarray, after: np.ndarray, titles: tuple[str, str]
) -> go.Figure:
    """Two attention maps side by side on one colour scale (e.g. before and after training)."""
    top = float(max(np.max(before), np.max(after)))
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=[plot_text(title) for title in titles], horizontal_spacing=0.12
    )
    for column, weights in enumerate((before, after), start=1):
        figure.add_trace(
            _heatmap_trace(tokens, weights, "attention", coloraxis="coloraxis"), row=1, col=column
        )
    _token_axes(figure, tokens, 2)
    figure.update_layout(
        coloraxis={"colorscale": "Viridis", "cmin": 0.0, "cmax": top, "colorbar": {"title": {"text": "attention"}}},
        height=_side(tokens),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return figure


def pca_2d(points: np.ndarray) -> np.ndarray:
    """Project (n, d) points onto their first two principal components → (n, 2).

    Uses the SVD of the centred data; component signs are fixed (largest loading positive) so the
    picture does not flip between reruns. Fewer than two directions of variance give zeros there.
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"expected a non-empty (n, d) array, got shape {points.shape}")
    centred = points - points.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    projected = centred @ components.T
    if projected.shape[1] < 2:
        projected = np.hstack([projected, np.zeros((len(points), 2 - projected.shape[1]))])
    return projected


POINT_SYMBOLS = {"support": "circle", "query": "x", "prototype": "star"}
POINT_SIZES = {"support": 10, "query": 10, "prototype": 20}


def embedding_scatter(points: pd.DataFrame, classes: Sequence[str]) -> go.Figure:
    """2-D scatter of an episode: support (circles), queries (crosses), prototypes (stars).

    ``points`` has columns x, y, kind ("support"/"query"/"prototype"), label (class index), text,
    and for queries ``correct`` (bool): wrong predictions get a red ring.
    """
    figure = go.Figure()
    for label, name in enumerate(classes):
        color = run_color(label)
        for kind, symbol in POINT_SYMBOLS.items():
            rows = points[(points["kind"] == kind) & (points["label"] == label)]
            if rows.empty:
                continue
            texts = [plot_text(text) for text in rows["text"]]
            line = {"width": 1, "color": "white"}
            if kind == "query" and "correct" in rows:
                line = {"width": [0 if ok else 3 for ok in rows["correct"]], "color": "crimson"}
            figure.add_trace(
                go.Scatter(
                    x=rows["x"],
                    y=rows["y"],
                    mode="markers",
                    name=f"{plot_text(name)} · {kind}",
                    legendgroup=str(label),
                    marker={"symbol": symbol, "size": POINT_SIZES[kind], "color": color, "line": line},
                    customdata=texts,
                    hovertemplate=f"{kind}: %{{customdata}}<extra>{plot_text(name)}</extra>",
                )
            )
    figure.update_layout(
        height=480,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        xaxis_title="principal component 1",
        yaxis_title="principal component 2",
        legend={"font": {"size": 11}},
    )
    return figure


def adaptation_curve(steps: Sequence[Mapping[str, float]], title: str = "Adaptation") -> go.Figure:
    """Support and query loss at each inner step of one adaptation (``on_inner_step`` records)."""
    frame = pd.DataFrame(list(steps))
    figure = go.Figure()
    if not frame.empty:
        x = frame["inner_step"] if "inner_step" in frame else pd.Series(range(1, len(frame) + 1))
        for metric, dash in LOSS_DASH.items():
            if metric in frame and frame[metric].notna().any():
                figure.add_trace(
                    go.Scatter(
                        x=x,
                        y=frame[metric],
                        mode=_mode(len(frame)),
                        name=LOSS_NAMES[metric],
                        line={"dash": dash, "color": run_color(0 if metric == "support_loss" else 1)},
                    )
                )
    figure.update_layout(
        title={"text": plot_text(title)},
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis_title="adaptation step",
        yaxis_title="cross-entropy",
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def probability_bars(classes: Sequence[str], probabilities: Sequence[float], title: str = "") -> go.Figure:
    """Horizontal bars of one sentence's class probabilities, the most likely class on top."""
    order = np.argsort(np.asarray(probabilities, dtype=float))
    figure = go.Figure(
        go.Bar(
            x=[float(probabilities[i]) for i in order],
            y=[plot_text(classes[i]) for i in order],
            orientation="h",
            marker={"color": [run_color(int(i)) for i in order]},
            hovertemplate="%{y}: %{x:.1%}<extra></extra>",
        )
    )
    figure.update_layout(
        title={"text": plot_text(title)},
        height=60 + 36 * len(classes),
        margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
        xaxis={"range": [0, 1], "tickformat": ".0%"},
    )
    return figure
