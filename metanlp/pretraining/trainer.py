"""MLM + NSP pretraining of a from-scratch encoder, as pieces the engine's one loop calls.

``pretraining_update`` is one gradient step on a masked pair batch (the ``mlm_pretrain`` method's
``train_step`` calls it on episode text); ``CorpusPretraining`` is the step function for a whole
corpus (samplers, heads, AdamW and schedule), which ``metanlp.engine.pretraining.pretrain`` runs
through ``metanlp.engine.loop.train_loop``. Nothing here loops over steps, seeds, stops, emits
events or writes files: the engine does.

A step reports its own names, never the episode names ``support_loss`` / ``query_loss``:
``mlm_loss`` (masked-word cross-entropy), ``nsp_loss``, ``nsp_accuracy`` (next-sentence
prediction) on the training batch; ``held_out_mlm_loss``, ``held_out_nsp_loss`` and
``held_out_nsp_accuracy`` on a fixed batch from text kept out of training.
"""

from __future__ import annotations

import random

import torch
from torch import nn

from metanlp.encoders import Encoder
from metanlp.pretraining.corpus import PretrainingCorpus
from metanlp.pretraining.heads import PretrainingHeads, PretrainingLosses, token_embedding_matrix
from metanlp.pretraining.masking import IGNORE_INDEX, MaskingScheme, mask_tokens
from metanlp.pretraining.nsp import PairBatch, TokenizedCorpus, encode_pairs, sample_pairs, tokenize_corpus
from metanlp.pretraining.schedules import warmup_scheduler

GRADIENT_CLIP = 1.0  # as in BERT


def pin_first_segment(encoder: Encoder) -> None:
    """Fold segment embedding 0 into the position embeddings and keep it at zero.

    ``Encoder.embed`` calls the encoder without ``token_type_ids`` (no segment term at all). With
    segment 0 pinned at zero, a single sentence then looks exactly like a first segment did in
    pretraining: token + position + 0. The fold is exact: position' + segment'[t] equals
    position + segment[t] for both segments.
    """
    embeddings = encoder.embeddings
    with torch.no_grad():
        first = embeddings.segment.weight[0].clone()
        embeddings.position.weight += first
        embeddings.segment.weight -= first


def _keep_first_segment_at_zero(encoder: Encoder) -> None:
    grad = encoder.embeddings.segment.weight.grad
    if grad is not None:
        grad[0].zero_()


def _only_present_tokens_learn(encoder: Encoder, batch: PairBatch, labels: torch.Tensor) -> None:
    """Zero the embedding gradient of every token absent from the batch.

    Through a tied decoder an absent token still gets a tiny gradient from the softmax
    normaliser, always pointing the same way; Adam rescales it to a full-size step, so within a
    few hundred steps every word the corpus lacks collapses onto one direction and a downstream
    task on new words loses them all. Updating only present rows (as LazyAdam / sparse embedding
    updates do) leaves unseen words as they were; the decoder bias still learns their rarity.
    """
    grad = token_embedding_matrix(encoder).grad
    if grad is None:
        return
    present = torch.zeros(grad.shape[0], dtype=torch.bool, device=grad.device)
    present[batch.input_ids.reshape(-1)] = True
    present[labels[labels != IGNORE_INDEX]] = True
    grad[~present] = 0.0


class MaskedPairSampler:
    """Seeded batches of masked NSP pairs drawn from one tokenised corpus."""

    def __init__(
        self, corpus: TokenizedCorpus, encoder: Encoder, seed: int, scheme: MaskingScheme | None = None
    ) -> None:
        self.corpus = corpus
        self.tokenizer = encoder.tokenizer
        self.vocab_size = encoder.vocab_size
        self.max_length = encoder.max_length
        self.scheme = scheme or MaskingScheme()
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int) -> tuple[PairBatch, torch.Tensor]:
        """(pairs with masked input_ids, MLM labels), on the CPU."""
        batch = encode_pairs(sample_pairs(self.corpus, batch_size, self.rng), self.corpus, self.max_length)
        masked = mask_tokens(
            batch.input_ids, batch.attention_mask, self.tokenizer.all_special_ids,
            self.tokenizer.mask_token_id, self.vocab_size, self.generator, self.scheme,
        )
        return PairBatch(masked.input_ids, batch.token_type_ids, batch.attention_mask, batch.is_next), masked.labels


def pretraining_update(
    encoder: Encoder,
    heads: PretrainingHeads,
    optimizer: torch.optim.Optimizer,
    batch: PairBatch,
    labels: torch.Tensor,
    update_absent_tokens: bool = False,
) -> PretrainingLosses:
    """One MLM + NSP gradient step (clipped at norm 1, segment 0 kept at zero)."""
    device = encoder.device
    encoder.train()
    heads.train()
    batch, labels = batch.to(device), labels.to(device)
    losses = heads.losses(encoder, batch, labels)
    optimizer.zero_grad()
    losses.total.backward()
    _keep_first_segment_at_zero(encoder)
    if not update_absent_tokens:
        _only_present_tokens_learn(encoder, batch, labels)
    nn.utils.clip_grad_norm_([*encoder.parameters(), *heads.parameters()], GRADIENT_CLIP)
    optimizer.step()
    return losses


@torch.no_grad()
def held_out_losses(encoder: Encoder, heads: PretrainingHeads, batch: PairBatch, labels: torch.Tensor) -> PretrainingLosses:
    """MLM / NSP scores without dropout on a fixed batch the encoder never trains on."""
    was_training = encoder.training
    encoder.eval()
    heads.eval()
    try:
        return heads.losses(encoder, batch.to(encoder.device), labels.to(encoder.device))
    finally:
        encoder.train(was_training)


class CorpusPretraining:
    """The step function of corpus pretraining: ``self(step)`` is one MLM + NSP update of ``encoder``.

    Trains every layer of ``encoder`` (on its current device) with AdamW, a linear warm-up over
    ``warmup`` steps, then linear decay to zero at ``steps`` (``schedule`` "linear", BERT's) or a
    constant rate. The held-out batch comes from document tails kept out of training
    (``PretrainingCorpus.split_held_out``); ``held_out()`` scores it. Pairs and masks follow
    ``seed``; the heads' initial weights follow torch's generator when this is built.
    """

    def __init__(
        self,
        encoder: Encoder,
        corpus: PretrainingCorpus,
        *,
        steps: int,
        batch_size: int = 32,
        lr: float = 5e-4,
        warmup: int = 100,
        seed: int = 0,
        weight_decay: float = 0.01,
        schedule: str = "linear",
        scheme: MaskingScheme | None = None,
        held_out_fraction: float = 0.1,
        held_out_size: int = 64,
        update_absent_tokens: bool = False,
        tied_decoder: bool = False,
    ) -> None:
        if steps < 1 or batch_size < 2:
            raise ValueError(f"need steps >= 1 and batch_size >= 2; got {steps}, {batch_size}")
        token_embedding_matrix(encoder)  # fails early, with a clear message, for a non-scratch encoder
        self.encoder = encoder
        self.batch_size = batch_size
        self.update_absent_tokens = update_absent_tokens
        training_text, held_out_text = corpus.split_held_out(held_out_fraction)
        self.sampler = MaskedPairSampler(
            tokenize_corpus(training_text, encoder.tokenizer, encoder.max_length), encoder, seed, scheme
        )
        held_out_sampler = MaskedPairSampler(
            tokenize_corpus(held_out_text, encoder.tokenizer, encoder.max_length), encoder, seed + 1, scheme
        )
        self.held_out_batch, self.held_out_labels = held_out_sampler.sample(held_out_size)

        encoder.set_trainable_layers(None)
        pin_first_segment(encoder)
        self.heads = PretrainingHeads(encoder.hidden_size, encoder.vocab_size, tied_decoder).to(encoder.device)
        parameters = [*encoder.parameters(), *self.heads.parameters()]
        self.optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
        self.scheduler = warmup_scheduler(self.optimizer, warmup, steps, schedule)

    def __call__(self, step: int) -> dict[str, float]:
        """One update; ``lr`` is the rate this update used."""
        batch, labels = self.sampler.sample(self.batch_size)
        lr = self.optimizer.param_groups[0]["lr"]
        losses = pretraining_update(
            self.encoder, self.heads, self.optimizer, batch, labels, self.update_absent_tokens
        )
        self.scheduler.step()
        return {"mlm_loss": losses.mlm.item(), "nsp_loss": losses.nsp.item(), "nsp_accuracy": losses.nsp_accuracy,
                "lr": lr}

    def held_out(self) -> dict[str, float]:
        """MLM and NSP scores on the fixed held-out batch, without dropout."""
        check = held_out_losses(self.encoder, self.heads, self.held_out_batch, self.held_out_labels)
        return {
            "held_out_mlm_loss": check.mlm.item(),
            "held_out_nsp_loss": check.nsp.item(),
            "held_out_nsp_accuracy": check.nsp_accuracy,
        }
