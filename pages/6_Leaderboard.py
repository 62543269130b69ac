"""Leaderboard: bench results from the run store, with paired comparisons between methods."""

import pandas as pd
import streamlit as st

from metanlp.bench import bench_results
from metanlp.bench.results import bench_runs, load_exported_results, paired_runs
from metanlp.dashboard import state
from metanlp.dashboard.access import write_access
from metanlp.dashboard.leaderboard import (
    SHIPPED_RESULTS,
    accuracy_bars,
    bench_settings,
    filter_results,
    leaderboard_table,
    paired_sentence,
)
from metanlp.dashboard.quick_bench import quick_bench_status, start_quick_bench
from metanlp.dashboard.text import plain_markdown
from metanlp.evaluation import EpisodeMismatch
from metanlp.runs import RunStore

st.title("Leaderboard")
st.caption(
    "Every method on the same saved test episodes (meta-test classes only). Fill it with "
    "`python -m metanlp bench` (or `--quick` for a smoke check); it reads the same run store as the Runs page."
)

store = state.run_store()


@st.cache_data(max_entries=4, show_spinner="Reading bench results…")
def load_results(root: str, finished_runs: tuple[str, ...]) -> pd.DataFrame:
    """Pooled rows; recomputed only when the set of finished bench runs changes."""
    return bench_results(RunStore(root))


def quick_bench_progress() -> None:
    """While the quick bench runs: how far it is; when it ends, the page reloads with its results."""
    status = quick_bench_status(store.root)
    if status.running:
        st.progress(status.done / max(status.total, 1),
                    text=f"Quick bench running: {status.done} of {status.total} methods done…")
    else:
        st.rerun(scope="app")


def quick_bench_panel() -> None:
    """Start the quick bench from here (every method on one small task, in the background)."""
    status = quick_bench_status(store.root)
    if status.running:
        st.fragment(run_every=2.0)(quick_bench_progress)()
        return
    if status.log_tail and status.done < status.total:
        with st.expander("The last quick bench stopped before it finished; its last lines"):
            st.code(status.log_tail, language=None)
    st.caption(
        f"A quick bench runs {status.total} methods (all but domain adaptation, which needs a target domain) on "
        "CLINC150 5-way 1-shot with 10 meta-training steps and "
        "30 test episodes each (a smoke check, not a measurement): a few minutes on a laptop CPU, in the background. "
        "The full bench is `python -m metanlp bench` in a terminal."
    )
    if st.button("Run a quick bench here", icon=":material/play_arrow:",
                 disabled=not write_access("start a quick bench")):
        start_quick_bench(store.root)
        st.rerun()


results = load_results(str(store.root), tuple(sorted(run.id for run in bench_runs(store))))
shipped = None
if results.empty:
    st.info("No bench results in this runs folder yet: run a quick bench below, or `python -m metanlp bench` "
            "in a terminal for the full one.")
    quick_bench_panel()
    shipped = load_exported_results(SHIPPED_RESULTS)
    if shipped is None:
        st.stop()
    results, about = shipped
    st.subheader("Results shipped with metanlp")
    st.caption(plain_markdown(
        f"Measured by the project with: {about['command']}, on {about['machine']} (details in docs/results.md). "
        "Your own bench results replace them here. Pair-by-pair comparisons need every episode's result, so they "
        "appear once you run a bench yourself."
    ))
    if about.get("note"):
        with st.expander("How these were measured"):
            st.markdown(plain_markdown(about["note"]))

settings = bench_settings(results)
setting = st.selectbox(
    "Bench setting", settings, help="Only runs with the same test episodes and training budget are compared."
)
results = results[results["setting"] == setting]
left, right = st.columns(2)
datasets = left.multiselect("Datasets", sorted(results["dataset"].unique()), default=sorted(results["dataset"].unique()))
shots = right.multiselect("K-shot", sorted(results["k_shot"].unique()), default=sorted(results["k_shot"].unique()))
shown = filter_results(results, datasets, shots)
if shown.empty:
    st.warning("Nothing matches these filters.")
    st.stop()

st.dataframe(leaderboard_table(shown), hide_index=True, width="stretch")
st.caption(
    "Accuracy is the mean over training seeds; *meta-learned params* counts what meta-training can change that "
    "changes a prediction, and a method with nothing to meta-learn says so and runs once. *vs ProtoNet* is the "
    "paired difference with Prototypical Networks on the same episodes."
)
st.plotly_chart(accuracy_bars(shown), width="stretch")

if shipped is not None:
    st.stop()

st.subheader("Paired comparison")
st.caption(
    "Both methods saw exactly the same episodes (checked by a hash of their content), so we compare them episode "
    "by episode: each episode's accuracy is first averaged over a method's training seeds, then the mean of the "
    "per-episode differences gets a 95% CI (Student's t · sample std / √E). If the interval excludes 0, the "
    "difference is real at that level."
)
tasks = sorted({(row.dataset, row.split, int(row.k_shot)) for row in shown.itertuples()})
task = st.selectbox(
    "Task", tasks, format_func=lambda t: f"{t[0]} · {t[2]}-shot" + ("" if t[1] == "default" else f" · split {t[1]}")
)
candidates = shown[(shown["dataset"] == task[0]) & (shown["split"] == task[1]) & (shown["k_shot"] == task[2])]
if len(candidates) < 2:
    st.info("This task has fewer than two methods in the store.")
    st.stop()
names = dict(enumerate(candidates["title"]))
first, second = st.columns(2)
row_a = first.selectbox("Method A", list(names), format_func=names.get, index=0)
row_b = second.selectbox("Method B", list(names), format_func=names.get, index=1)
if row_a == row_b:
    st.warning("Pick two different methods.")
else:
    try:
        comparison = paired_runs(store, candidates["run_ids"].iloc[row_a], candidates["run_ids"].iloc[row_b])
    except EpisodeMismatch as error:
        st.error(str(error))
        st.stop()
    st.markdown(plain_markdown(paired_sentence(names[row_a], names[row_b], comparison)))
    st.metric("Mean difference (A − B)", f"{100 * comparison.mean_difference:+.2f} points",
              f"95% CI ± {100 * comparison.ci95:.2f}", delta_color="off")
