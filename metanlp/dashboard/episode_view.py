"""One sampled episode made visible: its sentences, ProtoNet's predictions and a 2-D picture.

ProtoNet on a frozen encoder needs no training to make sense: it embeds the support set,
averages each class into a prototype and labels each query by its nearest prototype. The PCA
plot shows exactly that geometry (support points, queries and prototypes in one plane).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from metanlp.dashboard.charts import pca_2d
from metanlp.dashboard.live import FRESH_PROTONET_SCALE
from metanlp.data.episodes import EpisodeSampler
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods.protonet import class_prototypes
from metanlp.methods.registry import create_method


def sample_episode(dataset: str, n_way: int, k_shot: int, n_query: int, seed: int, split: str = "test") -> Episode:
    """One seeded N-way K-shot episode from a dataset's ``split`` classes (``DataError`` if impossible)."""
    data = load_dataset(dataset)
    return EpisodeSampler.from_examples(examples_for_split(data, split), n_way, k_shot, n_query, seed=seed, split=split).sample()


@dataclass
class EpisodeInspection:
    episode: Episode
    support: pd.DataFrame  # class, text
    queries: pd.DataFrame  # class, text, predicted, confidence, correct
    points: pd.DataFrame  # x, y, kind, label, text, correct (see charts.embedding_scatter)
    accuracy: float
    scale: float  # ProtoNet's softmax scale s: logits -s·‖x - c‖²


def inspect_episode(encoder: Encoder, episode: Episode, distance: str = "euclidean") -> EpisodeInspection:
    """Run ProtoNet (untrained, frozen ``encoder``) on ``episode`` and project everything to 2-D.

    Its softmax scale is the live page's (``FRESH_PROTONET_SCALE``), so confidences are not all
    near 1/N; the predicted classes are the same at any scale.
    """
    options = {"finetune": "frozen", "distance": distance, "scale": FRESH_PROTONET_SCALE}
    method = create_method("protonet", encoder, options)
    task_model = method.adapt(episode)
    with torch.no_grad():
        support = method.features(episode.support_texts).float().cpu()
        queries = method.features(episode.query_texts).float().cpu()
        prototypes = class_prototypes(support, torch.tensor(episode.support_labels), episode.n_way)
        probabilities = task_model.predict_proba(episode.query_texts).cpu().numpy()
    predicted = probabilities.argmax(axis=1)
    correct = predicted == np.asarray(episode.query_labels)
    coordinates = pca_2d(torch.cat([support, queries, prototypes]).numpy())
    n_support, n_query = len(support), len(queries)
    points = pd.DataFrame({
        "x": coordinates[:, 0],
        "y": coordinates[:, 1],
        "kind": ["support"] * n_support + ["query"] * n_query + ["prototype"] * episode.n_way,
        "label": [*episode.support_labels, *episode.query_labels, *range(episode.n_way)],
        "text": [*episode.support_texts, *episode.query_texts, *(f"prototype of {c}" for c in episode.classes)],
        "correct": [True] * n_support + correct.tolist() + [True] * episode.n_way,
    })
    support_table = pd.DataFrame({
        "class": [episode.classes[label] for label in episode.support_labels],
        "text": episode.support_texts,
    })
    query_table = pd.DataFrame({
        "result": ["right" if ok else "wrong" for ok in correct],
        "class": [episode.classes[label] for label in episode.query_labels],
        "predicted": [episode.classes[index] for index in predicted],
        "confidence": probabilities.max(axis=1),
        "text": episode.query_texts,
    })
    return EpisodeInspection(
        episode=episode,
        support=support_table,
        queries=query_table,
        points=points,
        accuracy=float(correct.mean()) if len(correct) else float("nan"),
        scale=FRESH_PROTONET_SCALE,
    )
