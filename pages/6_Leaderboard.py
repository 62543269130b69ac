"""Leaderboard: bench results from the run store, with paired comparisons between methods."""

import streamlit as st

from metanlp.bench import bench_results, paired_results
from metanlp.dashboard import state
from metanlp.dashboard.leaderboard import (
    accuracy_bars,
    bench_settings,
    filter_results,
    leaderboard_table,
    paired_sentence,
)
from metanlp.dashboard.text import plain_markdown

st.title("Leaderboard")
st.caption(
    "Every method on the same saved test episodes (meta-test classes only). Fill it with "
    "`python -m metanlp bench` (or `--quick` for a smoke check); it reads the same run store as the Runs page."
)

store = state.run_store()
results = bench_results(store)
if results.empty:
    st.info("No bench results yet. Run `python -m metanlp bench --quick` in a terminal, then reload this page.")
    st.stop()

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
st.plotly_chart(accuracy_bars(shown), width="stretch")

st.subheader("Paired comparison")
st.caption(
    "Both methods saw exactly the same episodes, so we compare them episode by episode: the mean of the "
    "per-episode accuracy differences with a 95% CI (1.96 · std / √E). If the interval excludes 0, the "
    "difference is real at that level."
)
tasks = sorted({(row.dataset, int(row.k_shot)) for row in shown.itertuples()})
task = st.selectbox("Task", tasks, format_func=lambda t: f"{t[0]} · {t[1]}-shot")
candidates = shown[(shown["dataset"] == task[0]) & (shown["k_shot"] == task[1])]
if len(candidates) < 2:
    st.info("This task has fewer than two methods in the store.")
    st.stop()
names = dict(zip(candidates["run_id"], candidates["title"], strict=True))
first, second = st.columns(2)
run_a = first.selectbox("Method A", list(names), format_func=names.get, index=0)
run_b = second.selectbox("Method B", list(names), format_func=names.get, index=1)
if run_a == run_b:
    st.warning("Pick two different methods.")
else:
    comparison = paired_results(store, run_a, run_b)
    st.markdown(plain_markdown(paired_sentence(names[run_a], names[run_b], comparison)))
    st.metric("Mean difference (A − B)", f"{100 * comparison.mean_difference:+.2f} points",
              f"95% CI ± {100 * comparison.ci95:.2f}", delta_color="off")
