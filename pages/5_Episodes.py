"""Episodes: one N-way K-shot task up close — support, queries, ProtoNet's guesses, and a 2-D map."""

import streamlit as st

from metanlp.dashboard import state
from metanlp.dashboard.charts import embedding_scatter
from metanlp.dashboard.episode_view import inspect_episode, sample_episode
from metanlp.dashboard.text import plain_markdown
from metanlp.data.errors import DataError
from metanlp.data.registry import available_names

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
st.metric("Queries labelled right", f"{right} of {len(inspection.queries)}", f"{100 * inspection.accuracy:.0f}%", delta_color="off")

left, right_column = st.columns([3, 2])
with left:
    st.plotly_chart(embedding_scatter(inspection.points, episode.classes), key="episode_scatter")
    st.caption(
        "Principal components of the sentence embeddings: circles are support examples, crosses are queries "
        "(a red ring marks a wrong prediction), stars are class prototypes."
    )
with right_column:
    st.markdown("**Support set**")
    st.dataframe(inspection.support, hide_index=True, width="stretch")
st.markdown("**Queries and predictions**")
st.dataframe(
    inspection.queries,
    hide_index=True,
    width="stretch",
    column_config={"confidence": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f")},
)
