"""Attention: per-layer, per-head maps of a sentence, and how training changed them."""

import streamlit as st

from metanlp.dashboard import state
from metanlp.dashboard.attention import (
    attention_array,
    compare_attention,
    encoder_was_frozen,
    initial_encoder,
    select_map,
    task_sentences,
)
from metanlp.dashboard.charts import attention_heatmap, attention_pair
from metanlp.dashboard.forms import UPLOADS_FOLDER
from metanlp.dashboard.run_view import run_label, runs_with_checkpoint
from metanlp.dashboard.text import plain_markdown
from metanlp.dashboard.widgets import all_heads_grid, layer_head_selector
from metanlp.engine.checkpoint import CheckpointError

MAX_SENTENCE = 300

st.title("Attention")
st.caption(
    "Each map shows, for every token (row), how much it attends to every other token (column): "
    "row i is softmax(q_i Kᵀ / √d_k), so each row sums to 1."
)

store = state.run_store()
finished = runs_with_checkpoint(store)
labels = {state.BASE_MODEL: state.BASE_MODEL} | {record.id: run_label(record) for record in finished}
source = st.selectbox(
    "Model", list(labels), index=1 if finished else 0, format_func=labels.get, key=state.ATTENTION_SOURCE
)

record = None if source == state.BASE_MODEL else store.get_run(source)
config = record.config if record else {"dataset": "clinc150"}
suggestions = task_sentences(config, str(store.root / UPLOADS_FOLDER)) or ["book a table for two at seven tonight"]
left, right = st.columns(2)
suggested = left.selectbox("A sentence from the task", suggestions)
typed = right.text_input("…or type your own", max_chars=MAX_SENTENCE)
text = typed.strip() or suggested

if record is None:
    encoder = state.pretrained_encoder()
    tokens, attentions = attention_array(encoder, text)
    layer, head = layer_head_selector(attentions.shape[0], attentions.shape[1], key="attention_base")
    st.plotly_chart(
        attention_heatmap(tokens, select_map(attentions, layer, head), f"MiniLM, layer {layer + 1}"),
        key="heatmap_base",
    )
    all_heads_grid(tokens, attentions, "MiniLM, every head", key="attention_base")
    st.stop()

try:
    method = state.run_method(str(store.root), record.id, record.finished_at)
except CheckpointError as error:  # the selector above still offers the other runs and the base model
    st.error(plain_markdown(error), icon=":material/broken_image:")
    st.caption("Pick another run, or the pretrained model, above.")
    st.stop()
starting = initial_encoder(record.config, state.pretrained_encoder() if record.config.get("encoder") == "minilm" else None)
comparison = compare_attention(starting, method.encoder, text)
layer, head = layer_head_selector(comparison.before.shape[0], comparison.before.shape[1], key="attention_run")
where = f"layer {layer + 1}, " + (head if isinstance(head, str) else f"head {head + 1}")
st.plotly_chart(
    attention_pair(
        comparison.tokens,
        select_map(comparison.before, layer, head),
        select_map(comparison.after, layer, head),
        (f"Before training · {where}", f"After training · {where}"),
    ),
    key="heatmap_before_after",
)
all_heads_grid(comparison.tokens, comparison.after, "Every head after training", key="attention_run")
st.subheader("Difference (after − before)")
if comparison.identical:
    if encoder_was_frozen(record.config):
        st.info(
            "This run kept its encoder frozen (only the method's own parameters learned), so its attention is "
            "exactly the starting encoder's: the difference is zero everywhere."
        )
    else:
        st.info("Training left this sentence's attention unchanged: the difference is zero everywhere.")
else:
    st.plotly_chart(
        attention_heatmap(
            comparison.tokens, select_map(comparison.difference, layer, head), f"Change · {where}", difference=True
        ),
        key="heatmap_difference",
    )

snapshots = store.attention_snapshots(record.id)
if snapshots:
    st.subheader("During training")
    st.markdown(f"Snapshots of the sentence: _{plain_markdown(record.config.get('attention_text', ''))}_")
    steps = [snapshot.step for snapshot in snapshots]
    step = st.select_slider("Training step", steps, value=steps[-1]) if len(steps) > 1 else steps[0]
    snapshot = snapshots[steps.index(step)]
    snapshot_layer = min(layer, snapshot.attentions.shape[0] - 1)
    st.plotly_chart(
        attention_heatmap(
            snapshot.tokens, select_map(snapshot.attentions, snapshot_layer, head), f"Step {step} · {where}"
        ),
        key="heatmap_snapshot",
    )
