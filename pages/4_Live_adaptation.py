"""Live adaptation: type a few classes with examples, adapt in seconds, then classify new sentences."""

import hashlib
import time
from pathlib import Path

import streamlit as st

from metanlp.dashboard import state
from metanlp.dashboard.access import write_access
from metanlp.dashboard.attention import compare_attention, initial_encoder, select_map
from metanlp.dashboard.charts import adaptation_curve, attention_heatmap, attention_pair, confusion_heatmap
from metanlp.dashboard.classify_file import predictions_table, read_file_to_classify, score_predictions
from metanlp.dashboard.forms import (
    GENERAL,
    LIVE_MAX_CLASSES,
    LIVE_MIN_CLASSES,
    UPLOAD_EXTENSIONS,
    parse_examples,
    validate_live_classes,
)
from metanlp.dashboard.live import (
    adapt_live,
    adapt_method,
    build_live_episode,
    class_probabilities,
    examples_from_dataset,
    expected_steps,
    fresh_caption,
    fresh_methods,
    live_options,
    load_snippet,
    probability_column,
    probability_note,
    result_summary,
    save_adapted_model,
)
from metanlp.dashboard.run_view import run_label, runs_with_checkpoint
from metanlp.dashboard.text import plain_markdown
from metanlp.dashboard.widgets import FieldMessages, layer_head_selector, text_row_height
from metanlp.data.errors import DataError
from metanlp.data.registry import available_names
from metanlp.engine.checkpoint import CheckpointError
from metanlp.methods import get_method_class

DEFAULT_CLASSES = [
    ("weather", "will it rain tomorrow\nwhat is the temperature outside\nis it going to be sunny this weekend\ndo I need an umbrella today"),
    ("music", "play some jazz\nput on my workout playlist\nskip this song\nturn the volume up"),
    ("cooking", "how long should I boil an egg\ngive me a recipe for pancakes\nwhat can I make with rice and beans\nhow do I roast vegetables"),
]
DEFAULT_SENTENCES = "should I bring a jacket tonight\nplay something relaxing\nhow do I make a tomato sauce"
FRESH = "fresh"
REDRAW_SECONDS = 0.1  # the live chart is redrawn at most this often during adaptation

st.title("Live adaptation")
if not write_access("adapt models on this machine"):
    st.stop()
st.caption(
    "Give 2–5 classes with a few example sentences each. The last example of each class is held out as a "
    "query to show the query loss; the others form the support set. A fresh method works on the pretrained "
    "MiniLM, frozen, with its sentence embeddings cached, so adapting takes a moment on a CPU."
)

st.session_state.setdefault(state.LIVE_CLASS_COUNT, len(DEFAULT_CLASSES))
for index, (name, examples) in enumerate(DEFAULT_CLASSES):
    st.session_state.setdefault(f"{state.LIVE_NAME_PREFIX}{index}", name)
    st.session_state.setdefault(f"{state.LIVE_EXAMPLES_PREFIX}{index}", examples)


def fill_from_dataset(dataset: str, count: int, per_class: int, seed: int) -> None:
    """Callback: replace the form's classes with ones drawn from a dataset's meta-test classes."""
    try:
        names, examples = examples_from_dataset(dataset, count, per_class, seed)
    except DataError as error:
        st.session_state[state.LIVE_FILL_ERROR] = str(error)
        return
    st.session_state.pop(state.LIVE_FILL_ERROR, None)
    st.session_state[state.LIVE_CLASS_COUNT] = count
    for index, (name, texts) in enumerate(zip(names, examples, strict=True)):
        st.session_state[f"{state.LIVE_NAME_PREFIX}{index}"] = name
        st.session_state[f"{state.LIVE_EXAMPLES_PREFIX}{index}"] = "\n".join(texts)


with st.expander("Fill the classes from a dataset"):
    columns = st.columns(4)
    fill_dataset = columns[0].selectbox("Dataset", available_names(), index=available_names().index("clinc150"))
    fill_count = columns[1].number_input("Classes", LIVE_MIN_CLASSES, LIVE_MAX_CLASSES, 3)
    fill_examples = columns[2].number_input("Examples per class", 2, 10, 4)
    fill_seed = columns[3].number_input("Seed", 0, 10_000, 0)
    st.button(
        "Fill the form",
        on_click=fill_from_dataset,
        args=(fill_dataset, int(fill_count), int(fill_examples), int(fill_seed)),
    )
    if state.LIVE_FILL_ERROR in st.session_state:
        st.error(st.session_state[state.LIVE_FILL_ERROR], icon=":material/warning:")

messages = FieldMessages()
count = int(st.columns(4)[0].number_input("Number of classes", LIVE_MIN_CLASSES, LIVE_MAX_CLASSES, key=state.LIVE_CLASS_COUNT))
names, examples = [], []
for index in range(count):
    name_key, examples_key = f"{state.LIVE_NAME_PREFIX}{index}", f"{state.LIVE_EXAMPLES_PREFIX}{index}"
    st.session_state.setdefault(name_key, "")
    st.session_state.setdefault(examples_key, "")
    left, right = st.columns([1, 3])
    with left:
        names.append(st.text_input(f"Class {index + 1}", key=name_key, max_chars=60))
        messages.slot(f"name:{index}")
    with right:
        examples.append(parse_examples(st.text_area(f"Examples of class {index + 1}, one per line", key=examples_key, height=130)))
        messages.slot(f"examples:{index}")
messages.slot(GENERAL)

store = state.run_store()
trained = {record.id: record for record in runs_with_checkpoint(store)}
origins = {FRESH: "A fresh, untrained method on the pretrained MiniLM"} | {
    run_id: f"Trained run: {run_label(record)}" for run_id, record in trained.items()
}
origin = st.selectbox("Start from", list(origins), format_func=origins.get, key=state.LIVE_ORIGIN)
if origin == FRESH:
    with st.spinner("Checking which methods work untrained (once per server start)…"):
        ready, need_training = fresh_methods()
    left, right = st.columns(2)
    method = left.selectbox("Method", ready, format_func=lambda name: get_method_class(name).card.title)
    right.write("")  # aligns the checkbox with the select box
    tune_top = right.checkbox(
        "Fine-tune the encoder's top layer too (slower)",
        help="Lets the attention change. Only methods that fine-tune per task, such as the fine-tuning baseline, "
        "change the encoder while adapting; ProtoNet just averages embeddings into prototypes (one step).",
    )
    st.caption(fresh_caption(need_training))
else:
    st.caption("The run's trained method adapts with its own encoder and options, exactly as it was saved.")

adapt = st.button("Adapt", type="primary")
stop_slot, progress_slot, chart = st.empty(), st.empty(), st.empty()
unfinished = st.session_state.pop(state.LIVE_RUNNING, None)  # an adaptation a click (Stop) interrupted
if adapt:
    errors = validate_live_classes(names, examples)
    messages.show(errors)
    if not errors:
        episode = build_live_episode(names, examples)
        st.session_state.pop(state.LIVE_RESULT, None)
        if origin == FRESH:
            options = live_options(method, tune_top)
            total = expected_steps(method, options)
        else:
            run = trained[origin]
            try:
                model = state.run_method(str(store.root), run.id, run.finished_at)
            except CheckpointError as error:
                st.error(plain_markdown(error), icon=":material/broken_image:")
                st.stop()
            total = expected_steps(model)
        # Kept in the session until adaptation ends: a click on Stop (any click) interrupts this script
        # at its next drawing call, and the next run finds what was done so far here.
        progress = {"total": total, "steps": []}
        st.session_state[state.LIVE_RUNNING] = progress
        stop_slot.button("Stop", key=state.LIVE_STOP, icon=":material/stop_circle:")
        last_drawn = [0.0]

        def on_step(metrics: dict) -> None:
            steps = progress["steps"]
            steps.append(metrics)
            done = int(metrics.get("inner_step", len(steps) - 1))
            progress_slot.progress(min(done / total, 1.0), text=f"Adapting: step {done} of {total}")
            if time.perf_counter() - last_drawn[0] >= REDRAW_SECONDS:
                chart.plotly_chart(adaptation_curve(steps, "Adapting…", total), key=f"live_curve_{len(steps)}")
                last_drawn[0] = time.perf_counter()

        if origin == FRESH:
            result = adapt_live(method, state.pretrained_encoder(), episode, options, on_step)
        else:
            uses_minilm = run.config.get("encoder") == "minilm"
            starting = initial_encoder(run.config, state.pretrained_encoder() if uses_minilm else None)
            result = adapt_method(model, episode, on_step, encoder_before=starting)
        st.session_state.pop(state.LIVE_RUNNING, None)
        stop_slot.empty()
        progress_slot.empty()
        st.session_state[state.LIVE_RESULT] = result
elif unfinished:
    done = max((int(step.get("inner_step", 0)) for step in unfinished["steps"]), default=0)
    chart.plotly_chart(adaptation_curve(unfinished["steps"], "Stopped", unfinished["total"]), key="live_curve_stopped")
    st.warning(
        f"Adaptation stopped after step {done} of {unfinished['total']}: no adapted model to use. "
        "Click Adapt to start again (without the top layer it takes a moment).",
        icon=":material/stop_circle:",
    )
    st.stop()

result = st.session_state.get(state.LIVE_RESULT)
if result is None:
    st.stop()

title = get_method_class(result.method).card.title
chart.plotly_chart(adaptation_curve(result.steps, "Loss during adaptation"), key="live_curve_final")
kind, summary = result_summary(result)
getattr(st, kind)(summary)
note = probability_note(result)
if note:
    st.caption(note)

st.subheader("Classify new sentences")
sentences = parse_examples(st.text_area("One sentence per line", value=DEFAULT_SENTENCES, key=state.LIVE_SENTENCES))[:20]
table = class_probabilities(result, sentences)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={
        probability_column(name): st.column_config.ProgressColumn(name, min_value=0.0, max_value=1.0, format="%.2f")
        for name in result.classes
    }
    | {
        "sentence": st.column_config.TextColumn(width="medium"),
        "confidence": st.column_config.NumberColumn(format="%.2f", width="small"),
    },
    row_height=text_row_height(table["sentence"], chars_per_line=50) if len(table) else None,
)

st.subheader("Classify a file")
upload = st.file_uploader(
    "A CSV, TSV or JSON Lines file with a text column; with a label column too, it is scored per class",
    type=[extension.lstrip(".") for extension in UPLOAD_EXTENSIONS], key=state.LIVE_CLASSIFY_FILE,
)
if upload is not None:
    text_column, label_column = st.columns(2)
    chosen_text = text_column.text_input("Text column (empty: guess)", max_chars=100, key="live_file_text_column")
    chosen_label = label_column.text_input("Label column (empty: guess)", max_chars=100, key="live_file_label_column")
    try:
        to_classify = read_file_to_classify(upload.getvalue(), upload.name, chosen_text.strip() or None,
                                            chosen_label.strip() or None)
    except DataError as error:
        st.error(plain_markdown(error), icon=":material/warning:")
    else:
        for line in to_classify.notes:
            st.caption(line)
        cache_key = (hashlib.sha256(upload.getvalue()).hexdigest(), id(result), to_classify.text_column)
        cached = st.session_state.get(state.LIVE_CLASSIFIED)
        if not cached or cached[0] != cache_key:
            with st.spinner(f"Classifying {len(to_classify.texts):,} texts…"):
                cached = (cache_key, result.adapted.predict_proba(to_classify.texts))
            st.session_state[state.LIVE_CLASSIFIED] = cached
        predictions = predictions_table(to_classify.texts, cached[1], result.classes, to_classify.labels)
        st.dataframe(predictions, hide_index=True, width="stretch",
                     column_config={"confidence": st.column_config.NumberColumn(format="%.2f")})
        st.download_button("Predictions (CSV)", predictions.to_csv(index=False).encode(), file_name="predictions.csv",
                           mime="text/csv", on_click="ignore")
        if to_classify.labels is not None:
            scores = score_predictions(to_classify.labels, list(predictions["predicted"]), result.classes)
            if scores.other_labels:
                others = sorted(scores.other_labels)
                named = ", ".join(others[:5]) + (", …" if len(others) > 5 else "")
                st.warning(plain_markdown(
                    f"{sum(scores.other_labels.values())} rows have a label that is not one of the adapted classes "
                    f"({named}): they are predicted but not scored."
                ))
            if scores.scored:
                st.metric("Accuracy on the labelled rows", f"{100 * scores.accuracy:.1f}%",
                          help=f"{scores.scored} rows whose label is one of the adapted classes.")
                st.dataframe(scores.per_class, hide_index=True, width="stretch", column_config={
                    name: st.column_config.NumberColumn(format="%.2f") for name in ("precision", "recall", "f1")
                })
                st.plotly_chart(confusion_heatmap(scores.confusion), key="live_confusion")

st.subheader("Keep this model")
st.caption(
    "Saves the method's learned state (safetensors, with a checksum; a frozen pretrained encoder is not copied) "
    "and your classes with their examples (JSON) inside the runs folder; loading adapts it again to the same "
    "examples with the same seed, which gives the same predictions as here."
)
save_name = st.text_input("Name", value="-".join(result.classes)[:60], max_chars=60, key="live_save_name")
if st.button("Save the adapted model", icon=":material/save:"):
    st.session_state[state.LIVE_SAVED] = str(save_adapted_model(state.runs_root(), result.adapted, save_name))
saved = st.session_state.get(state.LIVE_SAVED)
if saved:
    st.success(f"Saved in `{saved}`. Use it from Python:", icon=":material/check_circle:")
    st.code(load_snippet(Path(saved), sentences), language="python")

st.subheader("Attention before vs after adaptation")
sentence = st.text_input("Sentence", value=sentences[0] if sentences else "play something relaxing", max_chars=300)
if sentence.strip():
    comparison = compare_attention(result.encoder_before, result.encoder_after, sentence.strip())
    layer, head = layer_head_selector(comparison.before.shape[0], comparison.before.shape[1], key="live_attention")
    st.plotly_chart(
        attention_pair(
            comparison.tokens,
            select_map(comparison.before, layer, head),
            select_map(comparison.after, layer, head),
            ("Before", f"After adapting ({title})"),
        ),
        key="live_before_after",
    )
    if comparison.identical:
        st.info(
            "The encoder did not change, so neither did its attention (the difference is zero everywhere). "
            "Tick 'fine-tune the top layer' with the fine-tuning baseline, or start from a run that fine-tuned "
            "its encoder, to see it move."
        )
    else:
        st.plotly_chart(
            attention_heatmap(
                comparison.tokens, select_map(comparison.difference, layer, head), "Change (after − before)", difference=True
            ),
            key="live_difference",
        )
