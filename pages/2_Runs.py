"""Runs: live loss and accuracy curves, progress with ETA, comparison, downloads, cancel and delete."""

import streamlit as st

from metanlp.dashboard import state
from metanlp.dashboard.access import write_access
from metanlp.dashboard.charts import training_curves
from metanlp.dashboard.run_view import (
    STATUS_ICONS,
    clean_run_ids,
    config_json,
    format_duration,
    latest_values,
    metrics_csv,
    refresh_seconds,
    run_label,
    run_progress,
    runs_table,
    training_seconds,
)
from metanlp.dashboard.text import plain_markdown
from metanlp.engine.config import NO_META_TRAINING

st.title("Runs")

store = state.run_store()
manager = state.run_manager()
manager.poll()
records = store.list_runs()
can_change = write_access("cancel or delete runs")
if not records:
    st.info("No runs yet. Launch one from the Train page.")
    st.page_link("pages/1_Train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

labels = {record.id: run_label(record) for record in records}
requested = clean_run_ids(st.query_params.get_all("run"))
current = clean_run_ids(st.session_state.get(state.SELECTED_RUNS, []))
if requested and st.session_state.get(state.RUNS_QUERY_SEEN) != requested:
    current = requested  # arriving from a link: show that run (once; the user may change it)
    st.session_state[state.RUNS_QUERY_SEEN] = requested
st.session_state[state.SELECTED_RUNS] = [run_id for run_id in current if run_id in labels] or [records[0].id]
left, right = st.columns([4, 1])
selected = left.multiselect(
    "Runs to show (pick several to compare them on one chart)",
    list(labels),
    format_func=labels.get,
    key=state.SELECTED_RUNS,
)
smoothing = int(
    right.number_input(
        "Running mean (steps)", 0, 1000, 10, key=state.RUNS_SMOOTHING,
        help="Each step is one random episode, so raw curves are noisy; 0 or 1 draws them as they are.",
    )
)

with st.expander(f"All runs ({len(records)})"):
    st.dataframe(runs_table(records), hide_index=True, width="stretch")


def run_panel(record, metrics) -> None:
    """Status, progress, result and the run's buttons."""
    progress = run_progress(record, train_seconds=training_seconds(metrics))
    with st.container(border=True):
        st.markdown(f"{STATUS_ICONS.get(record.status, '')} **{plain_markdown(record.name)}** · `{record.id}` · {record.status}")
        if record.is_active:
            st.progress(progress.fraction, text=plain_markdown(progress.text))
        if record.error:
            st.error(plain_markdown(record.error), icon=":material/error:")
        for warning in store.warnings(record.id):
            st.warning(plain_markdown(warning))
        for notice in store.notices(record.id):
            st.info(plain_markdown(notice), icon=":material/info:")
        if record.evaluation:
            evaluation = record.evaluation
            columns = st.columns(4)
            columns[0].metric("Test accuracy", f"{100 * evaluation['mean_accuracy']:.2f}%")
            columns[1].metric("95% interval", f"± {100 * evaluation['ci95']:.2f}")
            columns[2].metric("Test episodes", evaluation.get("episodes", "—"))
            if "meta_learned_parameters" in evaluation:
                columns[3].metric(
                    "Meta-learned parameters", f"{evaluation['meta_learned_parameters']:,}",
                    help="Parameters meta-training changed that can change a prediction on a new task; "
                    "0 means this run was a per-task baseline (no meta-training in this configuration).",
                )
        st.caption(f"Running time: {format_duration(record.duration())}")
        buttons = st.columns(4)
        buttons[0].download_button(
            "Metrics (CSV)", metrics_csv(metrics), file_name=f"run_{record.id}_metrics.csv",
            mime="text/csv", on_click="ignore", key=f"csv_{record.id}",
        )
        buttons[1].download_button(
            "Config (JSON)", config_json(record), file_name=f"run_{record.id}_config.json",
            mime="application/json", on_click="ignore", key=f"json_{record.id}",
        )
        if record.is_active and buttons[2].button("Cancel", key=f"cancel_{record.id}", disabled=not can_change):
            manager.cancel(record.id)
            st.rerun(scope="app")
        if buttons[3].button("Delete", key=f"delete_{record.id}", disabled=not can_change):
            manager.delete(record.id)
            st.rerun(scope="app")


def selected_records(run_ids: list[str]) -> list:
    records = []
    for run_id in run_ids:
        try:
            records.append(store.get_run(run_id))
        except ValueError:  # deleted meanwhile
            continue
    return records


def live_view(run_ids: list[str], interval: float | None) -> None:
    """Curves and panels of the selected runs; as a fragment it refreshes without a page rerun."""
    manager.poll()
    shown = selected_records(run_ids)
    metrics = {record.id: store.metrics(record.id) for record in shown}
    curves = {run_label(record): metrics[record.id] for record in shown}
    checks = {run_label(record): store.validation(record.id) for record in shown}
    if any(not frame.empty for frame in curves.values()):
        st.plotly_chart(training_curves(curves, checks, smoothing), key="training_curves")
        tiles = latest_values(metrics[shown[0].id])
        if tiles and len(shown) == 1:
            columns = st.columns(4)
            columns[0].metric("Step", int(tiles.get("step", 0)))
            for column, key in zip(columns[1:], ("support_loss", "query_loss", "query_accuracy"), strict=True):
                if key in tiles:
                    value = f"{100 * tiles[key]:.1f}%" if key == "query_accuracy" else f"{tiles[key]:.4f}"
                    column.metric(key.replace("_", " "), value)
    elif shown and all(store.notices(record.id) for record in shown):
        st.caption(f"{NO_META_TRAINING.capitalize()}: no training curve to draw (see below).")
    else:
        st.caption("No training steps recorded yet: the curves appear with the first step.")
    for record in shown:
        run_panel(record, metrics[record.id])
    if interval is not None and refresh_seconds(shown) != interval:
        st.rerun(scope="app")  # finished, or no longer new: one full rerun sets the new pace


interval = refresh_seconds(selected_records(selected))
st.fragment(run_every=interval)(live_view)(selected, interval)
