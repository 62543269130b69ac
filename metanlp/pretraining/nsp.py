"""Next-sentence-prediction pairs (Devlin et al. 2019, arXiv:1810.04805, section 3.1).

A pair is ``[CLS] A [SEP] B [SEP]`` with segment ids 0 for ``[CLS] A [SEP]`` and 1 for ``B [SEP]``.
Half the pairs of a batch take B as the sentence after A in the same document (is_next = 1), the
other half take B from a different document (is_next = 0).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from metanlp.pretraining.corpus import PretrainingCorpus

TokenIds = list[int]


@dataclass
class TokenizedCorpus:
    """Documents of sentences as WordPiece (or character) ids, without [CLS] / [SEP]."""

    documents: list[list[TokenIds]]
    cls_token_id: int
    sep_token_id: int
    pad_token_id: int

    def __post_init__(self) -> None:
        # Every (document, sentence) that has a next sentence, so it can be the A of a pair.
        self.first_sentences = [
            (d, s) for d, document in enumerate(self.documents) for s in range(len(document) - 1)
        ]
        if len(self.documents) < 2 or not self.first_sentences:
            raise ValueError("NSP needs at least two documents and one document of two or more sentences")


def tokenize_corpus(corpus: PretrainingCorpus, tokenizer, max_length: int, batch_size: int = 512) -> TokenizedCorpus:
    """Tokenise every sentence once, through the tokenizer's plain ``tokenizer(texts, max_length)`` call.

    That call adds [CLS] ... [SEP]; both are stripped here so pairs can be assembled later.
    Sentences longer than ``max_length - 2`` tokens are cut, as the encoder would cut them anyway.
    """
    corpus.check_usable()
    flat = [sentence for document in corpus.documents for sentence in document]
    ids: list[TokenIds] = []
    for start in range(0, len(flat), batch_size):
        batch = tokenizer(flat[start : start + batch_size], max_length=max_length)
        lengths = batch["attention_mask"].sum(1).tolist()
        for row, length in zip(batch["input_ids"].tolist(), lengths, strict=True):
            ids.append(row[1 : int(length) - 1])
    documents, position = [], 0
    for document in corpus.documents:
        documents.append(ids[position : position + len(document)])
        position += len(document)
    return TokenizedCorpus(documents, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)


@dataclass
class SentencePair:
    first: TokenIds
    second: TokenIds
    is_next: int  # 1: B follows A in one document; 0: B comes from another document


def sample_pairs(corpus: TokenizedCorpus, count: int, rng: random.Random) -> list[SentencePair]:
    """``count`` pairs, exactly ``count // 2`` of them real (one more, at random, when count is odd)."""
    labels = [1] * (count // 2) + [0] * (count // 2)
    if count % 2:
        labels.append(rng.randint(0, 1))
    rng.shuffle(labels)
    pairs = []
    for is_next in labels:
        document, sentence = rng.choice(corpus.first_sentences)
        first = corpus.documents[document][sentence]
        if is_next:
            second = corpus.documents[document][sentence + 1]
        else:
            other = rng.randrange(len(corpus.documents) - 1)
            other += other >= document  # any document but this one
            second = rng.choice(corpus.documents[other])
        pairs.append(SentencePair(first, second, is_next))
    return pairs


def truncate_pair(first: TokenIds, second: TokenIds, max_tokens: int) -> tuple[TokenIds, TokenIds]:
    """Trim the longer sentence from its end until both fit in ``max_tokens`` (BERT's rule)."""
    first, second = list(first), list(second)
    while len(first) + len(second) > max_tokens:
        if len(first) >= len(second):
            first.pop()
        else:
            second.pop()
    return first, second


@dataclass
class PairBatch:
    """Tensors for one batch, all (B, S) except ``is_next`` (B,)."""

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    attention_mask: torch.Tensor
    is_next: torch.Tensor

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(tensor.to(device) for tensor in (self.input_ids, self.token_type_ids,
                                                            self.attention_mask, self.is_next)))


def encode_pairs(pairs: list[SentencePair], corpus: TokenizedCorpus, max_length: int) -> PairBatch:
    """``[CLS] A [SEP] B [SEP]`` rows, right-padded to the longest row of the batch."""
    rows, segments = [], []
    for pair in pairs:
        first, second = truncate_pair(pair.first, pair.second, max_length - 3)
        rows.append([corpus.cls_token_id, *first, corpus.sep_token_id, *second, corpus.sep_token_id])
        segments.append([0] * (len(first) + 2) + [1] * (len(second) + 1))
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), corpus.pad_token_id, dtype=torch.long)
    token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, (row, segment) in enumerate(zip(rows, segments, strict=True)):
        input_ids[index, : len(row)] = torch.tensor(row)
        token_type_ids[index, : len(row)] = torch.tensor(segment)
        attention_mask[index, : len(row)] = 1
    is_next = torch.tensor([pair.is_next for pair in pairs], dtype=torch.long)
    return PairBatch(input_ids, token_type_ids, attention_mask, is_next)
