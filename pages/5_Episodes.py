"""Episodes: one N-way K-shot task up close — support, queries, ProtoNet's guesses, and a 2-D map."""

import streamlit as st

from metanlp.dashboard import state
from metanlp.dashboard.charts import embedding_scatter
from metanlp.dashboard.episode_view import inspect_episode, sample_episode
from metanlp.dashboard.text import plain_markdown
from metanlp.dashboard.widgets import text_row_height
from metanlp.data.errors import DataError
from metanlp.data.registry import available_names

# Sentences get the room; short columns stay narrow (a cell's full text shows on hover).
SUPPORT_COLUMNS = {
    "class": st.column_config.TextColumn(width="medium"),
    "text": st.column_config.TextColumn(width="large"),
}
QUERY_COLUMNS = {
    "result": st.column_config.TextColumn(width="small"),
    "class": st.column_config.TextColumn(width="medium"),
    "predicted": st.column_config.TextColumn(width="medium"),
    "confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f", width="small"),
    "text": st.column_config.TextColumn(width="large"),
}

st.title("Episodes")
st.caption(
    "An episode is a small classification task: N classes, K labelled examples of each (the support set) and "
    "a few queries to label. Here ProtoNet on the frozen, pretrained MiniLM labels each query by the nearest "
    "class prototype (the mean of that class's support embeddings). Classes come from the meta-test split."
)

st.session_state.setdefault(state.EPISODE_SEED, 0)


def next_episode() -> None:
    st.session_state[state.EPISODE_SEED] = int(st.session_state[state.EPISODE_SEED]) + 1


names = available_names()
columns = st.columns([2, 1, 1, 1, 1])
dataset = columns[0].selectbox("Dataset", names, index=names.index("clinc150") if "clinc150" in names else 0)
n_way = int(columns[1].number_input("N-way", 2, 20, 5))
k_shot = int(columns[2].number_input("K-shot", 1, 20, 3))
n_query = int(columns[3].number_input("Queries per class", 1, 20, 3))
seed = int(columns[4].number_input("Seed", 0, 1_000_000, key=state.EPISODE_SEED))
st.button("Sample another episode", on_click=next_episode)

try:
    episode = sample_episode(dataset, n_way, k_shot, n_query, seed)
except DataError as error:
    st.error(plain_markdown(error), icon=":material/warning:")
    st.stop()

inspection = inspect_episode(state.pretrained_encoder(), episode)
right = int((inspection.queries["result"] == "right").sum())
# Plain numbers, no delta: st.metric's delta draws an arrow, which reads as a change.
tiles = st.columns(3)
tiles[0].metric("Queries labelled right", f"{right} of {len(inspection.queries)}")
tiles[1].metric("Accuracy", f"{100 * inspection.accuracy:.0f}%")
tiles[2].metric("Chance level", f"{100 / episode.n_way:.0f}%", help="One in N: guessing a class at random.")

st.plotly_chart(embedding_scatter(inspection.points, episode.classes), key="episode_scatter")
st.caption(
    "Principal components of the sentence embeddings: circles are support examples, crosses are queries "
    "(coloured by their true class; a dark ring around one marks a wrong prediction), stars are class "
    f"prototypes. Confidence is ProtoNet's softmax over −s·(squared distance) with s = {inspection.scale:g} "
    "(see Live adaptation for why not 1); it never changes which class wins."
)
# Full-width tables, one under the other: sentences need the room to be read whole.
st.markdown("**Support set**")
st.dataframe(
    inspection.support, hide_index=True, width="stretch", column_config=SUPPORT_COLUMNS,
    row_height=text_row_height(inspection.support["text"]),
)
st.markdown("**Queries and predictions**")
st.dataframe(
    inspection.queries, hide_index=True, width="stretch", column_config=QUERY_COLUMNS,
    row_height=text_row_height(inspection.queries["text"]),
)
