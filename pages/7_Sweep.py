"""Sweep: tune a method's options with Optuna; trials arrive live, with Optuna's charts and the best configuration."""

import optuna
import pandas as pd
import streamlit as st
from optuna.importance import PedAnovaImportanceEvaluator

from metanlp.dashboard import state
from metanlp.dashboard.access import write_access
from metanlp.dashboard.background import job_status, start_job
from metanlp.dashboard.sweep_view import (
    best_config,
    load_sweep,
    params_from_frame,
    space_frame,
    sweep_arguments,
    sweep_names,
)
from metanlp.dashboard.text import plain_markdown
from metanlp.data.errors import DataError
from metanlp.data.registry import available_names
from metanlp.engine.config import ConfigError, RunConfig
from metanlp.methods import OptionError, get_method_class, method_names, would_meta_learn
from metanlp.sweeps.runner import SweepSpec, check_sweep, trials_table
from metanlp.sweeps.space import default_space

REFRESH_SECONDS = 2.0

st.title("Sweep")
st.caption(
    "Tune a method's options with Optuna (TPE sampler, median pruning). Every trial is an ordinary run, tagged "
    "sweep:NAME on the Runs page, scored by its accuracy on meta-validation classes (test classes are never "
    "sampled); the best configuration is then evaluated once on the saved test episodes. A sweep runs in the "
    "background and resumes where it stopped if started again with the same name."
)
store = state.run_store()
root = store.root


def job_key(name: str) -> str:
    return f"sweep-{name}"


with st.expander("Start a sweep", icon=":material/tune:", expanded=not sweep_names(root)):
    left, middle, right = st.columns(3)
    methods = [name for name in method_names() if name != "dann"]
    method = left.selectbox("Method", methods, index=methods.index("maml"),
                            format_func=lambda name: get_method_class(name).card.title)
    datasets = available_names()
    dataset = middle.selectbox("Dataset", datasets, index=datasets.index("clinc150"))
    encoder = right.selectbox("Encoder", ["minilm", "scratch"],
                              format_func={"minilm": "Pretrained MiniLM", "scratch": "From scratch"}.get)
    columns = st.columns(4)
    n_way = int(columns[0].number_input("N-way", 2, 20, 5))
    k_shot = int(columns[1].number_input("K-shot", 1, 20, 1))
    steps = int(columns[2].number_input("Meta-training steps per trial", 1, 100_000, 200))
    val_episodes = int(columns[3].number_input("Validation episodes per trial", 1, 1000, 30))
    columns = st.columns(3)
    trials = int(columns[0].number_input("Trials", 1, 1000, 20))
    parallel = int(columns[1].number_input("Trials at once", 1, 8, 1, help="Each running trial takes a worker process."))
    test_episodes = int(columns[2].number_input("Test episodes for the best configuration", 1, 100_000, 300))
    st.markdown("**Search space** (each option's range must lie within what the option accepts)")
    edited = st.data_editor(space_frame(default_space(method)), num_rows="dynamic", hide_index=True,
                            key=f"sweep_space_{method}", width="stretch")
    name = st.text_input("Sweep name", value=f"{method}-{dataset}-{n_way}way-{k_shot}shot", max_chars=80)
    base = RunConfig(method=method, dataset=dataset, n_way=n_way, k_shot=k_shot, train_steps=steps,
                     eval_episodes=test_episodes, encoder=encoder)
    if not would_meta_learn(method, {}, encoder):
        st.info(f"{get_method_class(method).card.title} has no meta-training with this encoder on its defaults, "
                "so every trial would score the same: pick another method or the from-scratch encoder.")
    if st.button("Launch the sweep", type="primary", disabled=not write_access("start sweeps")):
        try:
            space = params_from_frame(method, edited)
            spec = SweepSpec(name=name, base=base, space=space, trials=trials, parallel=parallel,
                             test_episodes=test_episodes, val_episodes=val_episodes)
            check_sweep(spec)
            arguments = sweep_arguments(root, name, base, space, trials, parallel, val_episodes)
        except (ConfigError, DataError, OptionError) as error:
            st.error(plain_markdown(error), icon=":material/warning:")
        else:
            if start_job(root, job_key(name), arguments):
                st.session_state["sweep_shown"] = name
                st.success(f"Sweep {name} started in the background.", icon=":material/play_arrow:")
            else:
                st.warning(f"A sweep named {name} is already running.")

names = sweep_names(root)
if not names:
    st.info("No sweep yet in this runs folder.")
    st.stop()
shown = st.session_state.get("sweep_shown")
chosen = st.selectbox("Sweep", names, index=names.index(shown) if shown in names else 0)


def sweep_view(name: str) -> None:
    """Trials so far, Optuna's charts, and a button for the best configuration; refreshed while it runs."""
    study, spec = load_sweep(root, name)
    job = job_status(root, job_key(name))
    rows = pd.DataFrame(trials_table(study))
    done = int((rows["state"] != "running").sum()) if len(rows) else 0
    total = int(spec.get("trials", len(rows)) or len(rows))
    status = "running" if job.running else "not running"
    st.markdown(f"**{plain_markdown(name)}** · {status} · {done} of {total} trials ended")
    if not job.running and done < total and job.log_tail:
        with st.expander("Its last lines"):
            st.code(job.log_tail, language=None)
    if len(rows):
        st.dataframe(rows, hide_index=True, width="stretch",
                     column_config={"validation accuracy": st.column_config.NumberColumn(format="%.3f")})
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not completed:
        st.caption("Charts appear once a trial has completed.")
        return
    charts = st.tabs(["Optimisation history", "Parallel coordinates", "Parameter importances", "Intermediate values"])
    figures = [
        lambda: optuna.visualization.plot_optimization_history(study),
        lambda: optuna.visualization.plot_parallel_coordinate(study),
        lambda: optuna.visualization.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()),
        lambda: optuna.visualization.plot_intermediate_values(study),
    ]
    for tab, figure, key in zip(charts, figures, ("history", "parallel", "importance", "intermediate"), strict=True):
        with tab:
            try:
                st.plotly_chart(figure(), key=f"sweep_{key}")
            except (ValueError, RuntimeError) as error:  # e.g. too few trials for importances yet
                st.caption(f"Not available yet: {error}")
    best = study.best_trial
    st.markdown(f"Best so far: trial {best.number}, validation accuracy **{100 * best.value:.2f}%**, "
                + plain_markdown(", ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                                           for key, value in best.params.items())))
    if st.button("Launch the best configuration as a normal run", key=f"best_{name}",
                 disabled=not write_access("launch runs")):
        run_id = state.run_manager().submit(best_config(spec, best.params))
        st.success(f"Queued run {run_id}.")
        st.page_link("pages/2_Runs.py", label="Watch it on the Runs page", icon=":material/monitoring:",
                     query_params={"run": run_id})


running = job_status(root, job_key(chosen)).running
st.fragment(run_every=REFRESH_SECONDS if running else None)(sweep_view)(chosen)
