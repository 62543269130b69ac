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


STYLE_KEY = "line style"  # legend group of the line-style key shown when several runs are compared
KEY_COLOR = "#7f7f7f"
MAX_POINTS = 2000  # per drawn line: longer curves are thinned evenly so a long run stays light to send and draw


def _thin(rows: pd.DataFrame, limit: int = MAX_POINTS) -> pd.DataFrame:
    """Every k-th row (and the last) when there are more than ``limit``."""
    if len(rows) <= limit:
        return rows
    stride = -(-len(rows) // limit)
    keep = np.zeros(len(rows), dtype=bool)
    keep[::stride] = True
    keep[-1] = True
    return rows[keep]


class _CurveDrawer:
    """Adds one run's lines to a training-curves figure.

    One run: one colour per metric and one legend entry per metric. Several runs: one colour
    per run, the metric told by line style, no legend entry per line (the figure adds one
    entry per run and a line-style key); ``styles`` collects the styles drawn, for that key.
    """

    def __init__(
        self, figure: go.Figure, label: str, index: int, single: bool, smoothing: int, styles: dict[str, dict],
        x_name: str = "step",
    ) -> None:
        self.figure, self.label, self.index, self.single = figure, label, index, single
        self.smoothing, self.styles, self.x_name = smoothing, styles, x_name
        self.prefix = "" if single else f"{plot_text(label)}: "

    def color(self, metric: str) -> str:
        return run_color(METRIC_ORDER.index(metric)) if self.single else run_color(self.index)

    def group(self, title: str) -> str:
        return title if self.single else self.label

    def draw(self, frame: pd.DataFrame, checks: pd.DataFrame | None) -> None:
        phases = frame["phase"].fillna("train") if "phase" in frame else pd.Series("train", index=frame.index)
        for phase in dict.fromkeys(phases):
            rows = frame[phases == phase].sort_values(["step", "inner_step"] if "inner_step" in frame else "step")
            if phase == "inner":
                self.inner_lines(rows)
                continue
            suffix = "" if phase == "train" else f" ({phase})"
            for metric, dash in {**LOSS_DASH, **PRETRAINING_LOSS_DASH}.items():
                self.line(rows, metric, dash, suffix, column=1, number=".4f")
            for metric, dash in ACCURACY_DASH.items():
                if metric == "query_accuracy" and phase != "train":
                    dash = "dashdot"
                self.line(rows, metric, dash, suffix, column=2, number=".1%")
        if checks is not None and not checks.empty:
            self.validation(checks)

    def line(self, rows: pd.DataFrame, metric: str, dash: str, suffix: str, column: int, number: str) -> None:
        """One metric of one phase; with smoothing, faint raw steps behind a bold running mean."""
        if metric not in rows or rows[metric].isna().all():
            return
        kept = rows[rows[metric].notna()]
        title = f"{METRIC_NAMES[metric]}{suffix}"
        smooth = self.smoothing > 1
        self.styles.setdefault(title, {"dash": dash})
        raw = _thin(kept)
        self.figure.add_trace(
            go.Scatter(
                x=raw["step"],
                y=raw[metric],
                mode=_mode(len(raw)),
                name=f"{self.prefix}{title}",
                legendgroup=self.group(title),
                showlegend=self.single and not smooth,
                line={"color": self.color(metric), "dash": dash},
                opacity=0.3 if smooth else 1.0,
                hovertemplate=f"{self.x_name} %{{x}}<br>{title} %{{y:{number}}}<extra>{self.prefix}</extra>",
            ),
            row=1,
            col=column,
        )
        if smooth:
            mean = kept.assign(**{metric: kept[metric].rolling(self.smoothing, min_periods=1).mean()})
            mean = _thin(mean)
            self.figure.add_trace(
                go.Scatter(
                    x=mean["step"],
                    y=mean[metric],
                    mode="lines",
                    name=f"{self.prefix}{title} (mean of {self.smoothing})",
                    legendgroup=self.group(title),
                    showlegend=self.single,
                    line={"color": self.color(metric), "dash": dash, "width": 3},
                    hovertemplate=f"{self.x_name} %{{x}}<br>running mean %{{y:{number}}}<extra>{self.prefix}</extra>",
                ),
                row=1,
                col=column,
            )

    def inner_lines(self, rows: pd.DataFrame) -> None:
        """Inner-loop losses: faint dotted lines between the outer steps."""
        x = inner_step_positions(rows) if "inner_step" in rows else rows["step"]
        for metric in LOSS_DASH:
            if metric not in rows or rows[metric].isna().all():
                continue
            kept = rows[metric].notna()
            points = _thin(pd.DataFrame({"x": x[kept], "y": rows.loc[kept, metric]}))
            title = f"{METRIC_NAMES[metric]} (inner)"
            self.styles.setdefault(title, {"dash": "dot", "width": 1})
            self.figure.add_trace(
                go.Scatter(
                    x=points["x"],
                    y=points["y"],
                    mode="lines",
                    name=f"{self.prefix}{title}",
                    legendgroup=self.group(title),
                    showlegend=self.single,
                    line={"color": self.color(metric), "dash": "dot", "width": 1},
                    opacity=0.45,
                    hovertemplate=f"step %{{x:.2f}}<br>{title} %{{y:.4f}}<extra>{self.prefix}</extra>",
                ),
                row=1,
                col=1,
            )

    def validation(self, checks: pd.DataFrame) -> None:
        """Validation accuracy: diamonds with their 95% interval."""
        title = "validation accuracy"
        self.styles.setdefault(title, {"dash": "dot", "symbol": "diamond"})
        color = self.color("validation_accuracy")
        self.figure.add_trace(
            go.Scatter(
                x=checks["step"],
                y=checks["query_accuracy"],
                error_y={"type": "data", "array": checks.get("ci95"), "visible": "ci95" in checks},
                mode="markers+lines",
                marker={"symbol": "diamond", "size": 9, "color": color},
                line={"color": color, "dash": "dot"},
                name=f"{self.prefix}{title}",
                legendgroup=self.group(title),
                showlegend=self.single,
                hovertemplate=f"{self.x_name} %{{x}}<br>validation %{{y:.1%}}<extra>{self.prefix}</extra>",
            ),
            row=1,
            col=2,
        )


def _legend_entry(name: str, group: str, rank: int, line: dict, **extra) -> go.Scatter:
    """A legend-only trace (no points): a run's colour, or one line style of the key."""
    return go.Scatter(
        x=[None], y=[None], mode=extra.pop("mode", "lines"), name=name, legendgroup=group, legendrank=rank,
        showlegend=True, line=line, hoverinfo="skip", **extra,
    )


def _add_legend_of_runs(figure: go.Figure, labels: Sequence[tuple[int, str]], styles: dict[str, dict], smoothing: int) -> None:
    """One entry per run (its colour; a click hides all its lines), then the line-style key."""
    for index, label in labels:
        figure.add_trace(_legend_entry(plot_text(label), label, index + 1, {"color": run_color(index), "width": 3}))
    key = dict(styles)
    if smoothing > 1:
        key[f"bold: mean of {smoothing} steps, faint: each step"] = {"width": 3}
    for rank, (title, style) in enumerate(key.items()):
        marker = {"symbol": style["symbol"], "color": KEY_COLOR, "size": 8} if "symbol" in style else None
        line = {"color": KEY_COLOR, "dash": style.get("dash", "solid"), "width": style.get("width", 2)}
        extra = {"legendgrouptitle": {"text": "Line style"}} if rank == 0 else {}
        figure.add_trace(
            _legend_entry(title, STYLE_KEY, 1000 + rank, line, mode="lines+markers" if marker else "lines",
                          marker=marker, **extra)
        )


WALL_CLOCK = "seconds"  # training_curves' x-axis: seconds since the run started (else the outer step)


def on_wall_clock(frame: pd.DataFrame, checks: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Metrics re-indexed by seconds since the run started (``elapsed``) instead of by step.

    Inner-loop points carry no time of their own and are left out; a validation point takes the
    time of the training step it follows.
    """
    if frame is None or frame.empty or "elapsed" not in frame:
        return frame.iloc[0:0] if frame is not None else frame, None
    outer = frame[frame["inner_step"].isna()] if "inner_step" in frame else frame
    outer = outer[outer["elapsed"].notna()]
    if "phase" in outer:
        outer = outer[outer["phase"].fillna("train") != "inner"]
    seconds = outer.groupby("step")["elapsed"].max()
    timed = outer.assign(step=outer["elapsed"].round(2))
    if checks is None or checks.empty:
        return timed, checks
    matched = checks[checks["step"].isin(seconds.index)]
    return timed, matched.assign(step=matched["step"].map(seconds).round(2))


def training_curves(
    runs: Mapping[str, pd.DataFrame],
    validation: Mapping[str, pd.DataFrame] | None = None,
    smoothing: int = 0,
    x_axis: str = "step",
) -> go.Figure:
    """Losses (left) and accuracies (right) against the outer step, or (``x_axis=WALL_CLOCK``) seconds.

    ``runs`` maps a run label to its metrics table (``RunStore.metrics``: columns step, phase,
    inner_step, support_loss, query_loss, query_accuracy, plus extra metrics such as MLM
    pretraining's mlm_loss, nsp_loss and nsp_accuracy, drawn under their own names).

    One run: one colour and one legend entry per metric. Several runs: one colour per run and
    one legend entry per run; the metric is told by line style (query loss solid, support loss
    dashed, MLM loss dash-dot, NSP loss long dashes, NSP accuracy dotted), explained once in a
    grey "Line style" key. Inner-loop losses are faint dotted lines between steps; other
    phases (e.g. pre-training) are named as such. Validation accuracy is drawn as diamonds with
    its 95% interval. ``smoothing`` > 1 adds the running mean over that many steps and fades
    the raw train-phase curves behind it (each step is one random episode, so raw curves are
    noisy). Lines longer than ``MAX_POINTS`` are thinned evenly.
    """
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    single = len(runs) == 1
    styles: dict[str, dict] = {}
    drawn: list[tuple[int, str]] = []
    x_name = "seconds" if x_axis == WALL_CLOCK else "step"
    for index, (label, frame) in enumerate(runs.items()):
        checks = (validation or {}).get(label)
        if x_axis == WALL_CLOCK:
            frame, checks = on_wall_clock(frame, checks)
        if frame is None or frame.empty:
            continue
        _CurveDrawer(figure, label, index, single, smoothing, styles, x_name).draw(frame, checks)
        drawn.append((index, label))
    if not single and drawn:
        _add_legend_of_runs(figure, drawn, styles, smoothing)
    x_title = "seconds since the run started" if x_axis == WALL_CLOCK else "step"
    figure.update_xaxes(title_text=x_title, row=1, col=1)
    figure.update_xaxes(title_text=x_title, row=1, col=2)
    figure.update_yaxes(title_text="cross-entropy", row=1, col=1)
    figure.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    legend_rows = -(-len([trace for trace in figure.data if trace.showlegend]) // 3)  # about 3 entries a row
    figure.update_layout(
        height=360 + 22 * max(legend_rows, 2),  # the legend takes room below; the plots keep theirs
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0},  # below the "step" titles
        hovermode="closest",
    )
    return figure


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


GRID_CELL_PX = 74  # side of one small map in the all-heads grid


def attention_grid(tokens: Sequence[str], attentions: np.ndarray, title: str = "") -> go.Figure:
    """Every head of every layer at a glance: a layers × heads grid of small maps (one colour scale).

    Trace ``layer * heads + head`` is that head's map, so a click on one names it (``grid_choice``).
    """
    attentions = np.asarray(attentions, dtype=float)
    if attentions.ndim != 4 or attentions.shape[2:] != (len(tokens), len(tokens)):
        raise ValueError(f"attentions must be (layers, heads, {len(tokens)}, {len(tokens)}), got {attentions.shape}")
    layers, heads = attentions.shape[:2]
    figure = make_subplots(
        rows=layers, cols=heads, horizontal_spacing=0.006, vertical_spacing=0.02,
        row_titles=[f"L{layer + 1}" for layer in range(layers)],
        column_titles=[f"H{head + 1}" for head in range(heads)],
    )
    top = float(attentions.max()) if attentions.size else 1.0
    for layer in range(layers):
        for head in range(heads):
            trace = _heatmap_trace(tokens, attentions[layer, head], f"layer {layer + 1} head {head + 1}: attention",
                                   colorscale="Viridis", zmin=0.0, zmax=top, showscale=False)
            figure.add_trace(trace, row=layer + 1, col=head + 1)
    figure.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    figure.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")
    figure.update_layout(
        title={"text": plot_text(title)}, height=GRID_CELL_PX * layers + 80,
        margin={"l": 10, "r": 30, "t": 70, "b": 10}, clickmode="event+select",
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
WRONG_RING = {"symbol": "circle-open", "size": 22, "color": "#222222", "line": {"width": 2}}


def embedding_scatter(points: pd.DataFrame, classes: Sequence[str]) -> go.Figure:
    """2-D scatter of an episode: support (circles), queries (crosses), prototypes (stars).

    ``points`` has columns x, y, kind ("support"/"query"/"prototype"), label (class index), text,
    and for queries ``correct`` (bool). Every point keeps its class colour; a wrong prediction
    is marked by a dark open ring drawn around its cross (not over it), one legend entry.
    """
    figure = go.Figure()
    for label, name in enumerate(classes):
        color = run_color(label)
        for kind, symbol in POINT_SYMBOLS.items():
            rows = points[(points["kind"] == kind) & (points["label"] == label)]
            if rows.empty:
                continue
            texts = [plot_text(text) for text in rows["text"]]
            figure.add_trace(
                go.Scatter(
                    x=rows["x"],
                    y=rows["y"],
                    mode="markers",
                    name=f"{plot_text(name)} · {kind}",
                    legendgroup=str(label),
                    marker={"symbol": symbol, "size": POINT_SIZES[kind], "color": color,
                            "line": {"width": 1, "color": "white"}},
                    customdata=texts,
                    hovertemplate=f"{kind}: %{{customdata}}<extra>{plot_text(name)}</extra>",
                )
            )
    wrong = points[(points["kind"] == "query") & ~points.get("correct", pd.Series(True, index=points.index)).astype(bool)]
    if not wrong.empty:
        figure.add_trace(
            go.Scatter(
                x=wrong["x"],
                y=wrong["y"],
                mode="markers",
                name="wrong prediction",
                marker=WRONG_RING,
                customdata=[plot_text(text) for text in wrong["text"]],
                hovertemplate="wrong prediction: %{customdata}<extra></extra>",
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


def adaptation_curve(
    steps: Sequence[Mapping[str, float]], title: str = "Adaptation", total_steps: int | None = None
) -> go.Figure:
    """Support and query loss at every step of one adaptation, from step 0 (before it began).

    ``steps`` are ``on_inner_step`` records with ``inner_step`` (0 = before adaptation);
    ``total_steps`` fixes the x axis while an adaptation is still running, so the curve grows
    into its final frame instead of rescaling at every step.
    """
    frame = pd.DataFrame(list(steps))
    figure = go.Figure()
    if not frame.empty:
        x = frame["inner_step"] if "inner_step" in frame else pd.Series(range(len(frame)))
        for metric, dash in LOSS_DASH.items():
            if metric in frame and frame[metric].notna().any():
                kept = frame[metric].notna()
                figure.add_trace(
                    go.Scatter(
                        x=x[kept],
                        y=frame.loc[kept, metric],
                        mode=_mode(int(kept.sum())),
                        name=LOSS_NAMES[metric],
                        line={"dash": dash, "color": run_color(0 if metric == "support_loss" else 1)},
                        hovertemplate=f"step %{{x}}<br>{LOSS_NAMES[metric]} %{{y:.4f}}<extra></extra>",
                    )
                )
    last = max(int(total_steps or 0), int(frame["inner_step"].max()) if "inner_step" in frame else len(frame) - 1, 1)
    figure.update_layout(
        title={"text": plot_text(title)},
        height=320,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        xaxis={"title": "adaptation step (0: before adapting)", "range": [-0.3, last + 0.3],
               "dtick": 1 if last <= 12 else None},
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


def confusion_heatmap(confusion: pd.DataFrame) -> go.Figure:
    """Counts of true class (rows) × predicted class (columns); the diagonal holds the right answers."""
    true_names = [plot_text(str(name)) for name in confusion.index]
    predicted_names = [plot_text(str(name)) for name in confusion.columns]
    counts = confusion.to_numpy()
    figure = go.Figure(go.Heatmap(
        z=counts, x=predicted_names, y=true_names, colorscale="Blues", texttemplate="%{z}",
        hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>", colorbar={"title": {"text": "rows"}},
    ))
    figure.update_xaxes(title_text="predicted class", side="bottom")
    figure.update_yaxes(title_text="true class", autorange="reversed")
    side = max(320, min(700, 60 * len(true_names) + 160))
    figure.update_layout(title={"text": "Confusion matrix"}, height=side, margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return figure
