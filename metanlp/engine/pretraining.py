"""Pretrain a from-scratch encoder on a corpus (MLM + NSP) through the engine's one loop.

``pretrain`` builds ``metanlp.pretraining.CorpusPretraining`` (the step function) and runs it with
``train_loop``, so pretraining is seeded, stopped, streamed and checkpointed exactly as a run is.
Events (plain dicts, ``phase`` "pretrain"):

- ``{"event": "step", "phase": "pretrain", "step", "mlm_loss", "nsp_loss", "nsp_accuracy", "lr", "elapsed"}``
  (training batch: masked-word cross-entropy, next-sentence loss and accuracy)
- ``{"event": "validation", "phase": "pretrain", "step", "held_out_mlm_loss", "held_out_nsp_loss",
  "held_out_nsp_accuracy"}`` every ``eval_every`` steps, on a fixed batch of held-out text
- ``{"event": "attention", "phase": "pretrain", "step", "tokens", "attentions"}`` at a few steps, so
  the dashboard can show attention turning from diffuse to structured
- ``{"event": "checkpoint", "phase": "pretrain", "step"}`` after ``save_checkpoint`` ran
- ``{"event": "progress", "stage": "pretrain", "done", "total"}``

The result is saved with ``save_encoder`` (``checkpoint_to_folder``) and any method starts from it
via ``build_encoder("scratch", checkpoint=folder)`` (a run config's ``encoder_options``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from metanlp.encoders import Encoder, save_encoder
from metanlp.engine.loop import EventCallback, attention_snapshot, seed_everything, train_loop
from metanlp.pretraining.corpus import PretrainingCorpus
from metanlp.pretraining.heads import PretrainingHeads
from metanlp.pretraining.masking import MaskingScheme
from metanlp.pretraining.trainer import CorpusPretraining

CheckpointCallback = Callable[[int, Encoder], None]


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
    history: list[dict] = field(default_factory=list)  # step and validation events
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

    The schedule, masking and held-out split are ``CorpusPretraining``'s. The held-out batch is
    scored every ``eval_every`` steps. ``save_checkpoint`` runs at ``checkpoint_steps`` and after
    the last step done; ``should_stop`` ends the run early (the encoder keeps what it learned).
    ``tied_decoder`` ties the MLM decoder to the token embedding as BERT does; the default keeps
    them apart (see ``MaskedLanguageModelHead`` for why).
    """
    if eval_every < 1:
        raise ValueError(f"need eval_every >= 1, got {eval_every}")
    seed_everything(seed)  # before the heads are built: their initial weights follow the seed
    training = CorpusPretraining(
        encoder, corpus, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, seed=seed,
        weight_decay=weight_decay, schedule=schedule, scheme=scheme, held_out_fraction=held_out_fraction,
        held_out_size=held_out_size, update_absent_tokens=update_absent_tokens, tied_decoder=tied_decoder,
    )

    def save(step: int) -> None:
        encoder.eval()
        save_checkpoint(step, encoder)

    loop = train_loop(
        training, steps, phase="pretrain", on_event=on_event, should_stop=should_stop,
        validate_every=eval_every, validate_fn=training.held_out,
        snapshot_steps=default_snapshot_steps(steps) if attention_steps is None else set(attention_steps),
        snapshot_fn=(lambda: attention_snapshot(encoder, attention_text)) if attention_text else None,
        checkpoint_steps={int(step) for step in checkpoint_steps},
        save_checkpoint=save if save_checkpoint is not None else None,
    )
    encoder.eval()
    training.heads.eval()
    return PretrainingResult(
        heads=training.heads, history=loop.history, steps_done=loop.steps_done, seconds=loop.seconds,
        stopped=loop.stopped,
    )
