"""A controlled corpus in which pretraining's benefit is visible within seconds.

Each topic has interchangeable words (fruit: apple, banana, ...). The unlabelled pretraining text
puts three words of one topic in every sentence. A downstream few-shot episode then builds each
class's support sentences from one half of its topic's words and its queries from the other half,
so a support and a query of the same class share no topic word. An encoder that knows nothing
links "apple" with "mango" only by chance; one pretrained on the corpus has seen them in the same
contexts. That is the distributional hypothesis MLM pretraining exploits (Harris 1954), and this
module lets a test or a lesson show it without hours of pretraining on real text.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from metanlp.data.types import Episode
from metanlp.pretraining.corpus import PretrainingCorpus

TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "fruit": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear"),
    "animal": ("horse", "sheep", "goat", "tiger", "lion", "zebra", "wolf", "bear"),
    "vehicle": ("car", "bus", "truck", "train", "bike", "boat", "ship", "plane"),
    "colour": ("red", "blue", "green", "yellow", "purple", "pink", "brown", "black"),
    "instrument": ("piano", "guitar", "violin", "drum", "flute", "trumpet", "harp", "cello"),
    "sport": ("soccer", "tennis", "golf", "hockey", "rugby", "boxing", "cricket", "baseball"),
    "body": ("arm", "leg", "hand", "foot", "knee", "elbow", "shoulder", "neck"),
    "weather": ("rain", "snow", "wind", "storm", "fog", "thunder", "hail", "frost"),
    "metal": ("gold", "silver", "copper", "iron", "steel", "tin", "zinc", "lead"),
}
# Frames shared by every topic, so the words around the topic words say nothing about the class.
# One frame is the default: with several, a small encoder first spends its steps on the frames.
FRAMES = (
    "i think the {} and the {} go with the {}",
    "there is a {} next to a {} and a {}",
    "we talked about {} , {} and {} today",
    "my list says {} then {} then {}",
    "do you prefer the {} the {} or the {}",
    "she wrote {} and {} but not {}",
)
WORDS_PER_SENTENCE = 3


def topic_sentence(words: Sequence[str], rng: random.Random, frames: Sequence[str] = FRAMES[:1]) -> str:
    """One sentence with three distinct words drawn from ``words`` in a randomly chosen frame."""
    return rng.choice(list(frames)).format(*rng.sample(list(words), WORDS_PER_SENTENCE))


def topic_corpus(sentences_per_topic: int = 60, seed: int = 0, frames: Sequence[str] = FRAMES[:1]) -> PretrainingCorpus:
    """Unlabelled text: one document per topic (so a 'next sentence' stays on the topic)."""
    rng = random.Random(seed)
    documents = [
        [topic_sentence(words, rng, frames) for _ in range(sentences_per_topic)] for words in TOPIC_WORDS.values()
    ]
    return PretrainingCorpus(
        documents,
        f"synthetic topic corpus: {len(TOPIC_WORDS)} topics × {sentences_per_topic} sentences, "
        f"{WORDS_PER_SENTENCE} words of one topic per sentence, {len(frames)} frame(s)",
        ["synthetic"],
    )


def disjoint_word_episodes(
    n_episodes: int,
    n_way: int = 5,
    k_shot: int = 1,
    n_query: int = 5,
    seed: int = 0,
    frames: Sequence[str] = FRAMES[:1],
) -> list[Episode]:
    """Episodes whose support and query sentences of a class use disjoint halves of its words."""
    if not 1 < n_way <= len(TOPIC_WORDS):
        raise ValueError(f"n_way must be between 2 and {len(TOPIC_WORDS)}, got {n_way}")
    rng = random.Random(seed)
    episodes = []
    for _ in range(n_episodes):
        topics = rng.sample(sorted(TOPIC_WORDS), n_way)
        support_texts, support_labels, query_texts, query_labels = [], [], [], []
        for label, topic in enumerate(topics):
            words = rng.sample(TOPIC_WORDS[topic], len(TOPIC_WORDS[topic]))
            half = len(words) // 2
            support_texts += [topic_sentence(words[:half], rng, frames) for _ in range(k_shot)]
            support_labels += [label] * k_shot
            query_texts += [topic_sentence(words[half:], rng, frames) for _ in range(n_query)]
            query_labels += [label] * n_query
        episodes.append(Episode(topics, support_texts, support_labels, query_texts, query_labels))
    return episodes
