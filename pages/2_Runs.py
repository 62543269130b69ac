"""Runs: live loss and accuracy curves, progress with ETA, comparison, downloads, cancel and delete."""

import streamlit as st

from metanlp.dashboard import state
from metanlp.dashboard.access import write_access
from metanlp.dashboard.charts import WALL_CLOCK, training_curves
from metanlp.dashboard.run_view import (
    STATUS_ICONS,
    change_tags,
    clean_run_ids,
    config_diff,
    config_json,
    filter_runs,
    forget_tags,
    format_duration,
    latest_values,
    load_tags,
    metrics_csv,
    no_curve_message,
    refresh_seconds,
    run_label,
    run_progress,
    run_title,
    runs_metrics_csv,
    runs_table,
    training_seconds,
)
from metanlp.dashboard.store_fault import guard_store
from metanlp.dashboard.text import plain_markdown
from metanlp.dashboard.widgets import WRAP_TAGS, run_filter_form, runs_table_columns, text_row_height
from metanlp.engine.config import NO_META_TRAINING
from metanlp.methods import method_caveat
from metanlp.runs.resume import RETRYABLE_STATUSES, retry_link, saved_step

st.title("Runs")

store = state.run_store()
manager = state.run_manager()
manager.poll()
records = store.list_runs()
can_change = write_access("cancel, tag or delete runs")
if not records:
    st.info("No runs yet. Launch one from the Train page.")
    st.page_link("pages/1_Train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()

tags = load_tags(store.root)
labels = {record.id: run_label(record) for record in records}
with st.expander("Filter and search", icon=":material/filter_list:"):
    run_filter = run_filter_form(records, tags, state.RUNS_FILTERS)
matching = filter_runs(records, run_filter, tags)
requested = clean_run_ids(st.query_params.get_all("run"))
current = clean_run_ids(st.session_state.get(state.SELECTED_RUNS, []))
if requested and st.session_state.get(state.RUNS_QUERY_SEEN) != requested:
    current = requested  # arriving from a link: show that run (once; the user may change it)
    st.session_state[state.RUNS_QUERY_SEEN] = requested
listed = [record.id for record in matching]
options = listed + [run_id for run_id in requested if run_id in labels and run_id not in listed]  # a link's run stays
if run_filter.active:
    st.caption(f"{len(matching)} of {len(records)} runs match the filter.")
if not options:
    st.info("No run matches the filter.", icon=":material/filter_list_off:")
    st.stop()
st.session_state[state.SELECTED_RUNS] = [run_id for run_id in current if run_id in options] or options[:1]
selected = st.multiselect(
    "Runs to show (pick several to compare them on one chart)",
    options,
    format_func=labels.get,
    key=state.SELECTED_RUNS,
    **WRAP_TAGS,
)
chart_options = st.columns(4)
smoothing = int(
    chart_options[0].number_input(
        "Running mean (steps)", 0, 1000, 10, key=state.RUNS_SMOOTHING,
        help="Each step is one random episode, so raw curves are noisy; 0 or 1 draws them as they are.",
    )
)
x_axis = chart_options[1].radio(
    "x-axis", ["step", WALL_CLOCK], horizontal=True, key="runs_x_axis",
    format_func={"step": "training step", WALL_CLOCK: "wall-clock seconds"}.get,
    help="Wall-clock time compares runs whose steps cost differently (e.g. a larger encoder); inner-loop points "
    "have no time of their own and are left out.",
)


def retry_buttons(record, retry_slot, resume_slot) -> None:
    """Retry a failed or cancelled run as a new run, from scratch or from its last checkpoint."""
    step = saved_step(store, record.id)
    new_run = None
    if retry_slot.button("Retry", key=f"retry_{record.id}", disabled=not can_change,
                         help="Queue a new run with the same settings, from the start."):
        new_run = manager.retry(record.id)
    if step and resume_slot.button(f"Resume at step {step}", key=f"resume_{record.id}", disabled=not can_change,
                                   help="Queue a new run that starts from this run's last checkpoint."):
        new_run = manager.retry(record.id, resume=True)
    if new_run:
        st.query_params["run"] = new_run  # show the new run (the page follows a link's run once)
        st.rerun(scope="app")


def run_panel(record, metrics) -> None:
    """Status, progress, result and the run's buttons."""
    progress = run_progress(record, train_seconds=training_seconds(metrics))
    with st.container(border=True):
        st.markdown(f"{STATUS_ICONS.get(record.status, '')} **{plain_markdown(run_title(record))}** · `{record.id}` · {record.status}")
        if tags.get(record.id):
            st.caption("Tags: " + plain_markdown(", ".join(tags[record.id])))
        if record.is_active:
            st.progress(progress.fraction, text=plain_markdown(progress.text))
        if record.error or record.status == "failed":
            st.error(plain_markdown(record.error or "The run failed without a message."), icon=":material/error:")
        if record.traceback:
            with st.expander("Traceback (for developers)"):
                st.code(record.traceback, language=None)
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
            caveat = method_caveat(record.config.get("method", ""))
            if caveat:
                st.caption(f"⚠️ Note on this method's defaults: {caveat}")
        link = retry_link(store, record.id)
        if link.get("retry_of"):
            resumed = f", resumed from its checkpoint at step {link['step']}" if link.get("step") else ""
            st.caption(f"Retry of run `{link['retry_of']}`{resumed}.")
        st.caption(f"Running time: {format_duration(record.duration())}")
        buttons = st.columns(5)
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
        if record.status in RETRYABLE_STATUSES:
            retry_buttons(record, buttons[2], buttons[3])
        if buttons[4].button("Delete", key=f"delete_{record.id}", disabled=not can_change):
            manager.delete(record.id)
            forget_tags(store.root, [record.id])
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
        st.plotly_chart(training_curves(curves, checks, smoothing, x_axis), key="training_curves")
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
        st.caption(no_curve_message(shown))
    if len(shown) > 1:
        compare_runs(shown, metrics)
    for record in shown:
        run_panel(record, metrics[record.id])


def compare_runs(shown: list, metrics: dict) -> None:
    """What differs between the shown runs' settings (a diff), and all their metrics in one file."""
    with st.expander(f"Compare the settings of these {len(shown)} runs", icon=":material/difference:", expanded=True):
        diff = config_diff(shown)
        if diff.empty:
            st.caption("Their settings are the same (method options with defaults filled in).")
        else:
            st.caption("Only the settings that differ; method options with their defaults filled in.")
            st.dataframe(diff, hide_index=True, width="stretch")
        st.download_button(
            "Metrics of these runs (one CSV)", runs_metrics_csv(shown, metrics), file_name="runs_metrics.csv",
            mime="text/csv", on_click="ignore", key="bulk_metrics_csv",
        )
    if interval is not None and refresh_seconds(shown) != interval:
        st.rerun(scope="app")  # finished, or no longer new: one full rerun sets the new pace


interval = refresh_seconds(selected_records(selected))
st.fragment(run_every=interval)(guard_store(live_view))(selected, interval)

# The table is drawn only when asked for: its grid is a second large script for the browser to
# load, and on a busy machine it would compete with the first chart.
count = f"{len(matching)} of {len(records)}" if run_filter.active else f"{len(records)}"
if st.toggle(f"Table of all runs ({count})", key=state.RUNS_TABLE_SHOWN):
    st.dataframe(
        runs_table(matching, tags), hide_index=True, width="stretch", placeholder="—",
        column_config=runs_table_columns(), row_height=text_row_height(run_title(record) for record in matching),
    )


def pick_all(run_ids: list[str]) -> None:
    st.session_state[state.RUNS_MANAGED] = run_ids


def ask_to_delete() -> None:
    st.session_state[state.RUNS_CONFIRM_DELETE] = list(st.session_state.get(state.RUNS_MANAGED, []))


def delete_runs(run_ids: list[str]) -> None:
    """Callback of the confirmation: delete each run (active ones are cancelled first), forget their tags."""
    if not can_change:  # the buttons are disabled then; a crafted click changes nothing either
        return
    for run_id in run_ids:
        try:
            manager.delete(run_id)
        except ValueError:  # already deleted (e.g. from another tab)
            continue
    forget_tags(store.root, run_ids)
    st.session_state.pop(state.RUNS_CONFIRM_DELETE, None)
    st.session_state[state.RUNS_MANAGED] = []
    st.session_state[state.SELECTED_RUNS] = [
        run_id for run_id in st.session_state.get(state.SELECTED_RUNS, []) if run_id not in run_ids
    ]


def keep_runs() -> None:
    st.session_state.pop(state.RUNS_CONFIRM_DELETE, None)


def tag_runs(adding: bool) -> None:
    """Callback: reads the picked runs and the tag now, so a tag typed just before the click counts."""
    if not can_change:
        return
    tag = st.session_state.get(state.RUNS_TAG_INPUT, "")
    picked_now = st.session_state.get(state.RUNS_MANAGED, [])
    try:
        change_tags(store.root, picked_now, add=tag if adding else "", remove="" if adding else tag)
    except OSError as error:  # e.g. a read-only or full runs folder: say so, keep the page
        st.toast(f"Could not save the tags in {store.root}: {error.strerror or error}", icon=":material/error:")


with st.expander("Tag or delete runs", icon=":material/sell:", expanded=state.RUNS_CONFIRM_DELETE in st.session_state):
    st.session_state[state.RUNS_MANAGED] = [
        run_id for run_id in st.session_state.get(state.RUNS_MANAGED, []) if run_id in labels
    ]
    picked = st.multiselect("Runs", listed + [run_id for run_id in st.session_state[state.RUNS_MANAGED] if run_id not in listed],
                            format_func=labels.get, key=state.RUNS_MANAGED, **WRAP_TAGS)
    st.button(f"Pick all {len(listed)} listed", on_click=pick_all, args=(listed,), disabled=not listed,
              help="Every run that matches the filter above.")
    name, add, remove = st.columns([2, 1, 1], vertical_alignment="bottom")
    name.text_input("Tag", max_chars=40, placeholder="e.g. baseline, lr sweep", key=state.RUNS_TAG_INPUT)
    add.button("Add tag", on_click=tag_runs, args=(True,), disabled=not (can_change and picked))
    remove.button("Remove tag", on_click=tag_runs, args=(False,), disabled=not (can_change and picked))
    pending = st.session_state.get(state.RUNS_CONFIRM_DELETE)
    if not pending:
        st.button(f"Delete {len(picked)} run(s)…", on_click=ask_to_delete, disabled=not (can_change and picked),
                  icon=":material/delete:")
    else:
        st.warning(
            f"Delete {len(pending)} run(s) with their metrics and checkpoints? Active runs are cancelled first. "
            "This cannot be undone.", icon=":material/warning:",
        )
        yes, no = st.columns(2)
        yes.button(f"Yes, delete {len(pending)} run(s)", type="primary", on_click=delete_runs, args=(pending,),
                   disabled=not can_change)
        no.button("Keep them", on_click=keep_runs)
