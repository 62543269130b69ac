"""Pretrain a from-scratch encoder with MLM + NSP, streaming the same kind of events as ``run_training``.

Events (plain dicts):

- ``{"event": "step", "phase": "pretrain", "step", "mlm_loss", "nsp_loss", "nsp_accuracy",
  "support_loss" (total training loss), "query_loss" (MLM loss on a fixed held-out batch),
  "query_accuracy" (NSP accuracy on that batch), "held_out_nsp_loss", "lr", "elapsed"}``
- ``{"event": "attention", "phase": "pretrain", "step", "tokens", "attentions"}`` at a few steps, so
  the dashboard can show attention turning from diffuse to structured
- ``{"event": "checkpoint", "phase": "pretrain", "step"}`` after ``save_checkpoint`` ran
- ``{"event": "progress", "stage": "pretrain", "done", "total"}``

This module never decides where files go: the caller passes ``save_checkpoint(step, encoder)``
(``checkpoint_to_folder(root)`` builds one that calls ``save_encoder`` under a folder it is given).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from metanlp.encoders import Encoder, save_encoder
from metanlp.pretraining.corpus import PretrainingCorpus
from metanlp.pretraining.heads import PretrainingHeads, PretrainingLosses, token_embedding_matrix
from metanlp.pretraining.masking import IGNORE_INDEX, MaskingScheme, mask_tokens
from metanlp.pretraining.nsp import PairBatch, TokenizedCorpus, encode_pairs, sample_pairs, tokenize_corpus
from metanlp.pretraining.schedules import warmup_scheduler

EventCallback = Callable[[dict], None]
CheckpointCallback = Callable[[int, Encoder], None]
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


def default_snapshot_steps(steps: int) -> list[int]:
    """Steps with an attention snapshot: the start, a few early ones (where most changes) and the end."""
    return sorted({0, steps // 20, steps // 10, steps // 4, steps // 2, steps})


def checkpoint_to_folder(root: str | Path) -> CheckpointCallback:
    """A ``save_checkpoint`` callback writing ``root/step-000500/`` (``save_encoder`` format).

    Each folder loads with ``build_encoder("scratch", checkpoint=folder)``.
    """
    root = Path(root)

    def save(step: int, encoder: Encoder) -> None:
        save_encoder(encoder, root / f"step-{step:06d}")

    return save


@dataclass
class PretrainingResult:
    heads: PretrainingHeads
    history: list[dict] = field(default_factory=list)
    steps_done: int = 0
    seconds: float = 0.0
    stopped: bool = False


def pretrain(
    encoder: Encoder,
    corpus: PretrainingCorpus,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 5e-4,
    warmup: int = 100,
    seed: int = 0,
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    weight_decay: float = 0.01,
    schedule: str = "linear",
    scheme: MaskingScheme | None = None,
    held_out_fraction: float = 0.1,
    held_out_size: int = 64,
    eval_every: int = 1,
    update_absent_tokens: bool = False,
    tied_decoder: bool = False,
    save_checkpoint: CheckpointCallback | None = None,
    checkpoint_steps: Iterable[int] = (),
    attention_text: str = "",
    attention_steps: Iterable[int] | None = None,
) -> PretrainingResult:
    """Train ``encoder`` (all layers, on its current device) with MLM + NSP for ``steps`` steps.

    AdamW with linear warm-up over ``warmup`` steps, then linear decay to zero (``schedule``
    "linear", BERT's) or a constant rate. The held-out batch comes from document tails kept out of
    training (``PretrainingCorpus.split_held_out``). ``save_checkpoint`` runs at ``checkpoint_steps``
    and after the last step; ``should_stop`` ends the run early (the encoder keeps what it learned).
    The held-out batch is scored every ``eval_every`` steps (and at the last); step events in between
    carry no ``query_*`` keys. ``tied_decoder`` ties the MLM decoder to the token embedding as BERT
    does; the default keeps them apart (see ``MaskedLanguageModelHead`` for why).
    """
    if steps < 1 or batch_size < 2 or eval_every < 1:
        raise ValueError(f"need steps >= 1, batch_size >= 2, eval_every >= 1; got {steps}, {batch_size}, {eval_every}")
    token_embedding_matrix(encoder)  # fails early, with a clear message, for a non-scratch encoder
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    started = time.perf_counter()
    torch.manual_seed(seed)

    training_text, held_out_text = corpus.split_held_out(held_out_fraction)
    training = MaskedPairSampler(tokenize_corpus(training_text, encoder.tokenizer, encoder.max_length), encoder, seed, scheme)
    held_out_sampler = MaskedPairSampler(
        tokenize_corpus(held_out_text, encoder.tokenizer, encoder.max_length), encoder, seed + 1, scheme
    )
    held_out_batch, held_out_labels = held_out_sampler.sample(held_out_size)

    encoder.set_trainable_layers(None)
    pin_first_segment(encoder)
    heads = PretrainingHeads(encoder.hidden_size, encoder.vocab_size, tied_decoder).to(encoder.device)
    parameters = [*encoder.parameters(), *heads.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    scheduler = warmup_scheduler(optimizer, warmup, steps, schedule)
    snapshots = set(default_snapshot_steps(steps) if attention_steps is None else attention_steps)
    checkpoints = {int(step) for step in checkpoint_steps} | {steps}
    result = PretrainingResult(heads=heads)

    def snapshot(step: int) -> None:
        if attention_text and step in snapshots:
            encoder.eval()
            maps = encoder.attention_maps(attention_text)
            emit({
                "event": "attention", "phase": "pretrain", "step": step, "tokens": maps.tokens,
                "attentions": maps.attentions.numpy().round(4).tolist(),
            })

    def checkpoint(step: int) -> None:
        if save_checkpoint is not None:
            encoder.eval()
            save_checkpoint(step, encoder)
            emit({"event": "checkpoint", "phase": "pretrain", "step": step})

    snapshot(0)
    for step in range(1, steps + 1):
        if stop():
            result.stopped = True
            break
        batch, labels = training.sample(batch_size)
        lr_now = optimizer.param_groups[0]["lr"]
        losses = pretraining_update(encoder, heads, optimizer, batch, labels, update_absent_tokens)
        scheduler.step()
        event = {
            "event": "step", "phase": "pretrain", "step": step,
            "mlm_loss": losses.mlm.item(), "nsp_loss": losses.nsp.item(), "nsp_accuracy": losses.nsp_accuracy,
            "support_loss": losses.total.item(),
        }
        if step % eval_every == 0 or step == steps:
            check = held_out_losses(encoder, heads, held_out_batch, held_out_labels)
            event.update(
                query_loss=check.mlm.item(), query_accuracy=check.nsp_accuracy, held_out_nsp_loss=check.nsp.item()
            )
        event.update(lr=lr_now, elapsed=time.perf_counter() - started)
        result.history.append(event)
        emit(event)
        emit({"event": "progress", "stage": "pretrain", "done": step, "total": steps})
        result.steps_done = step
        snapshot(step)
        if step in checkpoints:
            checkpoint(step)
    if result.stopped and result.steps_done and result.steps_done not in checkpoints:
        checkpoint(result.steps_done)
    encoder.eval()
    heads.eval()
    result.seconds = time.perf_counter() - started
    return result
