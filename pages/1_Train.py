"""Train: choose a method, data and settings; every field is checked before Launch queues the run."""

import contextlib
import hashlib
import json

import streamlit as st

from metanlp.dashboard import state
from metanlp.dashboard.access import write_access
from metanlp.dashboard.estimate import describe_estimate, estimate_run_time
from metanlp.dashboard.forms import (
    GENERAL,
    UPLOAD_EXTENSIONS,
    default_attention_text,
    option_field,
    option_specs,
    save_upload,
    upload_size_error,
    validate_run_form,
)
from metanlp.dashboard.run_view import ACTIVE_STATUSES, REFRESH_SECONDS, run_progress
from metanlp.dashboard.store_fault import guard_store, show_store_error
from metanlp.dashboard.text import plain_markdown
from metanlp.dashboard.widgets import FieldMessages, option_widget
from metanlp.data.errors import DataError
from metanlp.data.registry import list_datasets, load_dataset
from metanlp.data.user_data import DEFAULT_K_SHOT, DEFAULT_N_QUERY, DEFAULT_N_WAY, load_user_dataset
from metanlp.device import describe_device, resolve_device
from metanlp.engine.config import NO_META_TRAINING, ConfigError, RunConfig
from metanlp.methods import OptionError, get_method_class, method_cards, would_meta_learn
from metanlp.runs.store import StoreError

FOLDED_FIELDS = ("eval_every", "val_episodes", "eval_seed", "attention_text")  # inside "More settings"
ESTIMATE_HISTORY = 500  # newest finished runs the time estimate reads
BUILT_IN, UPLOADED = "Built-in dataset", "Upload a CSV / JSONL file"
ENCODERS = {"minilm": "Pretrained MiniLM", "scratch": "From scratch (random init)"}

st.title("Train a few-shot model")
if not write_access("launch runs or upload files"):
    st.stop()
manager = state.run_manager()  # workers warm up while the form is filled in
messages = FieldMessages()
values: dict = {}


@st.cache_data(max_entries=64, show_spinner=False)
def meta_learns(method: str, options_json: str, encoder: str) -> bool | None:
    """Whether the configuration has anything to meta-learn (None: its options are not valid yet)."""
    try:
        return would_meta_learn(method, json.loads(options_json), encoder)
    except (OptionError, DataError, ValueError):
        return None


@st.cache_resource(max_entries=2, show_spinner="Checking your file…")
def parse_upload(
    digest: str, _data: bytes, filename: str, text_column: str, label_column: str, limit: int,
    episodes: tuple[int, int, int],
):
    """Validated dataset of an upload, split for ``episodes`` (N, K, queries), as the run will split it
    (``digest`` keys the cache without hashing the bytes again)."""
    del digest
    n_way, k_shot, n_query = episodes
    return load_user_dataset(
        _data, filename=filename, text_column=text_column, label_column=label_column, max_bytes=limit,
        n_way=n_way, k_shot=k_shot, n_query=n_query,
    )


def episode_shape() -> tuple[int, int, int]:
    """N, K and queries as the form below holds them (the default ones until it has valid values)."""
    shape = tuple(
        int(st.session_state.get(f"train_{name}", default))
        for name, default in (("n_way", DEFAULT_N_WAY), ("k_shot", DEFAULT_K_SHOT), ("n_query", DEFAULT_N_QUERY))
    )
    return shape if shape[0] >= 2 and min(shape[1:]) >= 1 else (DEFAULT_N_WAY, DEFAULT_K_SHOT, DEFAULT_N_QUERY)


# ----------------------------------------------------------------- method
cards = {card.name: card for card in method_cards()}
# The default is RunConfig's (ProtoNet, the reference method), not whichever method registered first.
default_method = RunConfig().method
values["method"] = st.selectbox(
    "Method", list(cards), index=list(cards).index(default_method) if default_method in cards else 0,
    format_func=lambda name: cards[name].title,
)
messages.slot("method")
card = cards[values["method"]]
with st.container(border=True):
    st.markdown(f"**{card.title}** · _{card.family}_")
    st.write(card.summary)
    st.latex(card.formula)
    st.caption(f"{card.paper} {card.paper_url}")
    if card.caveat:
        st.warning(card.caveat, icon="⚠️")

# ----------------------------------------------------------------- data
st.subheader("Data")
dataset = None
source = st.radio("Source", [BUILT_IN, UPLOADED], horizontal=True)
if source == BUILT_IN:
    infos = {info.name: info for info in list_datasets()}
    values["dataset"] = st.selectbox(
        "Dataset", list(infos), index=list(infos).index("clinc150") if "clinc150" in infos else 0
    )
    info = infos[values["dataset"]]
    st.caption(
        f"{info.description} · {info.n_classes} classes: "
        + ", ".join(f"{count} {split}" for split, count in info.classes_per_split.items())
        + (" (classes shared by every split; the examples are split instead)" if info.shared_classes else "")
    )
    if info.split_ids:
        values["split_id"] = st.selectbox("Class split", info.split_ids)
    messages.slot("dataset")
    dataset = load_dataset(values["dataset"], values.get("split_id"))
else:
    limit_mb = int(st.get_option("server.maxUploadSize"))
    upload = st.file_uploader(
        f"Your file (CSV, TSV or JSON Lines, up to {limit_mb} MB): one text and one label per row",
        type=[extension.lstrip(".") for extension in UPLOAD_EXTENSIONS],
        max_upload_size=limit_mb,
    )
    left, right = st.columns(2)
    text_column = left.text_input("Text column", value="text")
    label_column = right.text_input("Label column", value="label")
    messages.slot("data_file")
    values["dataset"] = "user"
    values["data_file"] = "(your upload)"  # replaced by the stored file's path at launch
    values["data_options"] = {"text_column": text_column, "label_column": label_column}
    if upload is None:
        st.caption("Upload a file to continue.")
    else:
        data = upload.getvalue()
        problem = upload_size_error(len(data), limit_mb * 2**20)
        if problem:
            st.error(problem, icon=":material/warning:")
        else:
            try:
                digest = hashlib.sha256(data).hexdigest()
                dataset, warnings = parse_upload(
                    digest, data, upload.name, text_column, label_column, limit_mb * 2**20, episode_shape()
                )
            except DataError as error:
                st.error(plain_markdown(error), icon=":material/warning:")
                st.caption("The file's first lines:")
                st.code(data[:600].decode("utf-8", errors="replace"), language=None)
            else:
                for warning in warnings:
                    st.warning(plain_markdown(warning))
                if dataset.split_note not in warnings:  # a shared-class split is a warning already
                    st.caption(plain_markdown(dataset.split_note))
                st.dataframe(
                    [{"text": example.text, "label": example.label} for example in dataset.examples[:8]],
                    hide_index=True,
                    width="stretch",
                )

# ----------------------------------------------------------------- episodes and training
st.subheader("Episodes and training")
columns = st.columns(4)
for column, (name, label, default) in zip(
    columns,
    [("n_way", "N-way (classes per episode)", 5), ("k_shot", "K-shot (examples per class)", 1),
     ("n_query", "Queries per class", 5), ("train_steps", "Training steps", 100)],
    strict=True,
):
    with column:
        values[name] = int(st.number_input(label, value=default, step=1, key=f"train_{name}"))
        messages.slot(name)

columns = st.columns(4)
with columns[0]:
    preferred = get_method_class(values["method"]).preferred_encoder
    values["encoder"] = st.selectbox(
        "Encoder", list(ENCODERS), format_func=ENCODERS.get, index=list(ENCODERS).index(preferred or "minilm"),
        key=f"train_encoder_{values['method']}",  # each method starts from the encoder it is built for
    )
    messages.slot("encoder")
with columns[1]:
    values["eval_episodes"] = int(st.number_input("Test episodes (final evaluation)", value=100, step=10))
    messages.slot("eval_episodes")
with columns[2]:
    values["seed"] = int(st.number_input("Seed", value=0, step=1))
    messages.slot("seed")
with columns[3]:
    values["device"] = st.selectbox("Device", state.available_devices())
    with contextlib.suppress(ValueError):  # an unavailable device is reported beside the field
        st.caption(describe_device(resolve_device(values["device"])))
    messages.slot("device")

with st.expander("Method options", expanded=False):
    values["method_options"] = {}
    specs = option_specs(values["method"])
    option_columns = st.columns(3)
    for index, spec in enumerate(specs):
        with option_columns[index % 3]:
            values["method_options"][spec.name] = option_widget(spec, key=f"train_option_{values['method']}_{spec.name}")
            messages.slot(option_field(spec.name))

with st.expander("More settings", expanded=False):
    columns = st.columns(3)
    with columns[0]:
        values["eval_every"] = int(st.number_input("Validate every (steps, 0 = never)", value=0, step=10))
        messages.slot("eval_every")
    with columns[1]:
        values["val_episodes"] = int(st.number_input("Validation episodes", value=20, step=5))
        messages.slot("val_episodes")
    with columns[2]:
        values["eval_seed"] = int(st.number_input("Evaluation seed (same episodes for every method)", value=1234))
        messages.slot("eval_seed")
    values["attention_text"] = st.text_input(
        "Sentence whose attention is recorded during training (empty: the first meta-test sentence)"
    )
    messages.slot("attention_text")

values["name"] = st.text_input("Run name (optional)", max_chars=200)
messages.slot("name")
messages.slot(GENERAL)

# ----------------------------------------------------------------- validate, then launch
if dataset is not None and not values["attention_text"]:
    values["attention_text"] = default_attention_text(dataset)
values["attention_every"] = max(1, values["train_steps"] // 5) if values["train_steps"] > 0 else 0
result = validate_run_form(values, dataset)
messages.show(result.errors)
folded = [field for field in result.errors if field.startswith("option:") or field in FOLDED_FIELDS]
if folded:
    st.warning("Some settings inside 'Method options' or 'More settings' need fixing; open them to see why.")
ready = result.ok and dataset is not None  # an upload must have been read and accepted
will_meta_learn = (
    meta_learns(values["method"], json.dumps(values["method_options"], sort_keys=True), values["encoder"])
    if result.ok else None
)
if result.ok:
    finished_runs = manager.store.list_runs(limit=ESTIMATE_HISTORY, statuses=("done",))
    st.caption(describe_estimate(estimate_run_time(result.config, finished_runs, will_meta_learn)),
               help="From the seconds per step and per test episode of finished runs with the same method, encoder "
               "and options, scaled to this run's steps, episodes and episode size.")
if will_meta_learn is False:
    st.info(
        f"**{NO_META_TRAINING.capitalize()}.** {card.title} has no parameter here that meta-training could "
        "change and that changes a prediction (e.g. a frozen pretrained encoder and a per-task head), so the "
        "training steps will be skipped and the run is a per-task baseline. To meta-train it, set `finetune` "
        "to `top` or `full` under Method options, or pick an option that adds meta-learned parameters.",
        icon=":material/info:",
    )

if st.button("Launch", type="primary", disabled=not ready):
    config = result.config
    try:
        if config.dataset == "user":
            with manager.store.database.faults():  # a full or read-only runs folder: a StoreError that says so
                config.data_file = str(save_upload(state.runs_root(), upload.getvalue(), upload.name))
        run_id = manager.submit(config, name=config.name)
    except (ConfigError, DataError, OptionError) as error:
        st.error(plain_markdown(error), icon=":material/warning:")
    except StoreError as error:
        show_store_error(error)
    else:
        st.session_state[state.LAST_LAUNCHED] = run_id
        st.session_state[state.SELECTED_RUNS] = [run_id]


def launched_status(run_id: str, was_active: bool) -> None:
    """The run just queued, refreshed while it is active (a fragment, not a page rerun)."""
    try:
        record = state.run_store().get_run(run_id)
    except ValueError:  # deleted meanwhile
        return
    progress = run_progress(record)
    with st.container(border=True):
        st.markdown(f"Run `{record.id}` is **{record.status}**: {plain_markdown(progress.text)}")
        st.progress(progress.fraction)
        st.page_link("pages/2_Runs.py", label="Watch it on the Runs page", icon=":material/monitoring:", query_params={"run": run_id})
    if was_active and record.status not in ACTIVE_STATUSES:
        st.rerun(scope="app")  # stop refreshing


launched = st.session_state.get(state.LAST_LAUNCHED)
if launched:
    active = state.run_is_active(launched)
    st.fragment(run_every=REFRESH_SECONDS if active else None)(guard_store(launched_status))(launched, active)
