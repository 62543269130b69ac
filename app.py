"""metanlp dashboard: the entry point (``streamlit run app.py``) and its Home page.

Home says what metanlp is, which device computes, how to start, and lists recent runs; the
other pages live in ``pages/`` and are registered here, so the sidebar and links know them.
"""

from pathlib import Path

import streamlit as st

from metanlp.dashboard import state
from metanlp.dashboard.run_view import runs_table
from metanlp.dashboard.store_fault import show_store_error
from metanlp.dashboard.text import plain_markdown
from metanlp.device import describe_device, resolve_device
from metanlp.runs.store import StoreError

PAGES_FOLDER = Path(__file__).resolve().parent / "pages"
ICON = Path(__file__).resolve().parent / "metanlp" / "dashboard" / "icon.png"
ICONS = {
    "Train": ":material/model_training:",
    "Runs": ":material/monitoring:",
    "Attention": ":material/grid_on:",
    "Live adaptation": ":material/bolt:",
    "Episodes": ":material/scatter_plot:",
    "Leaderboard": ":material/leaderboard:",
    "Sweep": ":material/tune:",
}


def page_files() -> list[tuple[str, str, str]]:
    """(path, title, icon) of every page in ``pages/``, in their numbered order.

    Adding a page stays what it is in any Streamlit app: drop ``<n>_<Title>.py`` into ``pages/``.
    """
    found = []
    for path in sorted(PAGES_FOLDER.glob("[0-9]*_*.py"), key=lambda path: int(path.stem.split("_", 1)[0])):
        title = path.stem.split("_", 1)[1].replace("_", " ")
        found.append((f"pages/{path.name}", title, ICONS.get(title, ":material/article:")))
    return found


PAGES = page_files()


INTRODUCTION = """
Learn, compare and demonstrate how models classify text from a **handful of examples per class**.
Each task is an *episode*: **N** classes, **K** labelled examples of each (the *support set*), and a few
*queries* to label. Methods either **transfer** what a pretrained encoder already knows (fine-tuning), or
**meta-learn** across many such tasks (Prototypical Networks, MAML, …). Every method is trained on some
classes and tested on *other* classes, so the score measures learning new classes from a few examples.
"""

QUICK_START = """
1. **Train**: pick a method, a dataset (or upload a CSV / JSONL file), N-way and K-shot, and launch a run.
2. **Runs**: watch support and query loss and accuracy live, compare runs, download metrics.
3. **Attention**: see where each layer and head of the encoder looks, before and after training.
4. **Live adaptation**: type a few classes with example sentences and adapt a model in seconds.
5. **Episodes**: look inside one N-way K-shot episode: support, queries, right and wrong predictions.

From a terminal the same runs start with `python -m metanlp train --help`.
"""


def backend_line(manager) -> str:
    """Where runs execute: the local worker processes, or a Ray cluster with its nodes, CPUs and GPUs."""
    if manager.backend == "ray":
        from metanlp.runs.ray_backend import cluster_summary

        cluster = cluster_summary()
        return (f"Runs execute on a Ray cluster: {cluster['nodes']} node(s), {cluster['cpus']} CPU(s), "
                f"{cluster['gpus']} GPU(s); at most {manager.max_concurrent} at once.")
    return (f"Runs execute in local worker processes, at most {manager.max_concurrent} at once "
            "(METANLP_BACKEND=ray runs them on a Ray cluster; see the README).")


def home() -> None:
    state.run_manager()  # start the workers now: they import torch and warm up while the user reads
    st.title("metanlp: few-shot NLP with transfer learning and meta-learning")
    st.markdown(INTRODUCTION)
    st.info(f"Device in use: **{describe_device(resolve_device('auto'))}**", icon=":material/memory:")
    st.caption(backend_line(state.run_manager()))

    st.subheader("Quick start")
    st.markdown(QUICK_START)
    for column, (path, title, icon) in zip(st.columns(len(PAGES)), PAGES, strict=True):
        column.page_link(path, label=title, icon=icon)

    st.subheader("Recent runs")
    recent = state.run_store().list_runs(limit=10)
    if recent:
        st.dataframe(runs_table(recent), hide_index=True, width="stretch")
    else:
        st.caption(f"No runs yet in {plain_markdown(state.runs_root())}. Launch one from the Train page.")


# A local icon: a Material icon as page icon makes the browser fetch it from a font host (no network here).
st.set_page_config(page_title="metanlp", page_icon=str(ICON), layout="wide")
navigation = st.navigation(
    [st.Page(home, title="Home", icon=":material/home:", default=True)]
    + [st.Page(path, title=title, icon=icon) for path, title, icon in PAGES]
)
try:
    navigation.run()
except StoreError as error:  # any page, any store call: an error box that says what to do, not a traceback
    show_store_error(error)
