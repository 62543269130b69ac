"""Pretraining a from-scratch encoder the way BERT was (Devlin et al. 2019, arXiv:1810.04805).

Masked-language modelling plus next-sentence prediction on bundled or user text. This package holds
what a pretraining step computes (``CorpusPretraining``, ``pretraining_update``); the engine runs it
(``metanlp.engine.pretraining.pretrain``), saves it with ``save_encoder``, and any method starts from
it via ``build_encoder("scratch", checkpoint=folder)`` (a run config's ``encoder_options={"checkpoint": folder}``).
"""

from metanlp.pretraining.corpus import (
    PretrainingCorpus,
    corpus_from_datasets,
    corpus_from_lines,
    corpus_from_text_file,
)
from metanlp.pretraining.heads import PretrainingHeads
from metanlp.pretraining.masking import IGNORE_INDEX, MaskingScheme, mask_tokens
from metanlp.pretraining.nsp import encode_pairs, sample_pairs, tokenize_corpus
from metanlp.pretraining.schedules import learning_rate_factor, warmup_scheduler
from metanlp.pretraining.trainer import CorpusPretraining, pretraining_update

__all__ = [
    "IGNORE_INDEX",
    "CorpusPretraining",
    "MaskingScheme",
    "PretrainingCorpus",
    "PretrainingHeads",
    "corpus_from_datasets",
    "corpus_from_lines",
    "corpus_from_text_file",
    "encode_pairs",
    "learning_rate_factor",
    "mask_tokens",
    "pretraining_update",
    "sample_pairs",
    "tokenize_corpus",
    "warmup_scheduler",
]
