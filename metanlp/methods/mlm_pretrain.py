"""BERT-style pretraining (MLM + NSP) as a method: learn from the text of training episodes.

Each ``train_step`` pretrains the from-scratch encoder on one batch of sentence pairs built from
the episode's texts, where each class is a "document" (a "next sentence" is another sentence of the
same class; see ``metanlp.pretraining.corpus``). A new task is then solved without further
training, by nearest class prototype on the pretrained features. For long pretraining on whole
datasets or uploaded text, use ``metanlp.engine.pretraining.pretrain`` and start any method from the
saved encoder (``encoder_options={"checkpoint": folder}``).

A step's metrics keep the two objectives apart. ``mlm_loss``, ``nsp_loss`` and ``nsp_accuracy`` are
the pretraining objective on the step's batch of pairs. ``support_loss``, ``query_loss`` and
``query_accuracy`` mean what they mean for every method: the classifier a new task gets (here
nearest prototype, exactly what ``adapt`` builds) scored on this episode's support set and queries,
measured before the step's update: the model the step starts from, which has not yet pretrained on
this episode's texts (the update uses the queries' text and labels, as one document per class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods.base import (
    InnerStepCallback,
    Method,
    MethodCard,
    Metrics,
    TaskModel,
    classification_metrics,
    label_tensor,
)
from metanlp.methods.options import OptionError, option
from metanlp.methods.protonet import DISTANCES, class_prototypes, prototype_logits
from metanlp.methods.registry import register_method
from metanlp.pretraining.corpus import PretrainingCorpus
from metanlp.pretraining.heads import PretrainingHeads, token_embedding_matrix
from metanlp.pretraining.masking import MaskingScheme
from metanlp.pretraining.nsp import PairBatch, tokenize_corpus
from metanlp.pretraining.trainer import MaskedPairSampler, pin_first_segment, pretraining_update


@dataclass
class MLMPretrainOptions:
    lr: float = option(5e-4, low=1e-7, high=1.0)
    weight_decay: float = option(0.01, low=0.0, high=1.0)
    pairs_per_step: int = option(32, low=2, high=4096)  # sentence pairs per pretraining batch
    mask_probability: float = option(0.15, low=0.01, high=0.9)
    distance: str = option("euclidean", choices=DISTANCES)  # for the prototype classifier on new tasks
    update_absent_tokens: bool = False  # True: let every embedding row move each step (see trainer)
    tied_decoder: bool = False  # True: BERT's decoder tied to the token embedding (stalls at small sizes)


class PretrainedPrototypeModel(TaskModel):
    def __init__(self, method: MLMPretrain, prototypes: torch.Tensor) -> None:
        self.method = method
        self.prototypes = prototypes

    def predict_logits(self, texts: list[str]) -> torch.Tensor:
        return self.method.prototype_scores(texts, self.prototypes)


@register_method
class MLMPretrain(Method):
    card = MethodCard(
        name="mlm_pretrain",
        title="Masked-language-model pretraining (BERT)",
        family="transfer learning",
        summary=(
            "Pretrains the from-scratch Transformer like BERT: it predicts 15% hidden words from their "
            "context and whether sentence B follows sentence A (here: comes from the same class). New "
            "tasks are then solved by nearest class prototype on the pretrained sentence embeddings."
        ),
        formula=r"\mathcal{L}=-\sum_{i\in M}\log p_\theta\!\left(x_i\mid \tilde{x}\right)"
        r"-\log p_\theta\!\left(\text{IsNext}\mid h_{[\mathrm{CLS}]}\right)",
        paper=(
            "Devlin, Chang, Lee, Toutanova. BERT: Pre-training of Deep Bidirectional Transformers for "
            "Language Understanding. NAACL 2019."
        ),
        paper_url="https://arxiv.org/abs/1810.04805",
        caveat=(
            "Too few steps to learn at its default budget: 200 pretraining steps leave the from-scratch encoder "
            "at word frequencies: the bench measured it 0.8 to 4.8 points below the same encoder untrained. "
            "Pretraining paid only after about 2,500 steps (+12.9 points 5-way 1-shot on CLINC150 after "
            "10,000 steps, 13 min on a 2-core CPU, 2-layer 64-wide encoder: docs/results_pretraining.md); "
            "raise the training steps to see it learn."
        ),
    )
    Options = MLMPretrainOptions
    preferred_encoder = "scratch"

    def __init__(self, encoder: Encoder, options: MLMPretrainOptions) -> None:
        super().__init__(encoder, options)
        try:
            token_embedding_matrix(encoder)
        except ValueError as error:
            raise OptionError(f"mlm_pretrain: {error}") from None
        encoder.set_trainable_layers(None)
        pin_first_segment(encoder)
        self.heads = PretrainingHeads(encoder.hidden_size, encoder.vocab_size, options.tied_decoder)
        self.scheme = MaskingScheme(mask_probability=options.mask_probability)

    def prediction_invariant_parameters(self) -> list[nn.Parameter]:
        # The MLM/NSP heads serve pretraining only; a new task is classified by prototypes of the
        # encoder's embeddings. A tied decoder's weight is the encoder's own and stays counted.
        encoder_ids = {id(parameter) for parameter in self.encoder.parameters()}
        return [parameter for parameter in self.heads.parameters() if id(parameter) not in encoder_ids]

    @torch.no_grad()
    def prototype_scores(self, texts: list[str], prototypes: torch.Tensor) -> torch.Tensor:
        self.eval()
        return prototype_logits(self.encoder.embed(texts), prototypes, self.options.distance, 1.0)

    @torch.no_grad()
    def prototypes(self, episode: Episode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prototypes (N, H), support embeddings (S, H), support labels (S,)), without dropout."""
        self.eval()
        support = self.encoder.embed(episode.support_texts)
        labels = label_tensor(episode.support_labels, support.device)
        return class_prototypes(support, labels, episode.n_way), support, labels

    def train_step(self, episode: Episode) -> Metrics:
        """Score the prototype classifier on the episode, then one MLM + NSP step on its texts."""
        metrics = self._prototype_metrics(episode)
        losses = pretraining_update(
            self.encoder, self.heads, self.optimizer(), *self._masked_pairs(episode), self.options.update_absent_tokens
        )
        return {**metrics, "mlm_loss": losses.mlm.item(), "nsp_loss": losses.nsp.item(),
                "nsp_accuracy": losses.nsp_accuracy}

    @torch.no_grad()
    def _prototype_metrics(self, episode: Episode) -> Metrics:
        """support_loss, support_accuracy, query_loss, query_accuracy of nearest-prototype classification."""
        prototypes, support, support_labels = self.prototypes(episode)
        support_loss, support_accuracy = classification_metrics(
            prototype_logits(support, prototypes, self.options.distance, 1.0), support_labels
        )
        query_logits = self.prototype_scores(episode.query_texts, prototypes)
        query_loss, query_accuracy = classification_metrics(
            query_logits, label_tensor(episode.query_labels, query_logits.device)
        )
        return {
            "support_loss": support_loss.item(), "support_accuracy": support_accuracy,
            "query_loss": query_loss.item(), "query_accuracy": query_accuracy,
        }

    def _masked_pairs(self, episode: Episode) -> tuple[PairBatch, torch.Tensor]:
        """A batch of masked sentence pairs from the episode's texts, one "document" per class."""
        texts = [episode.support_texts, episode.query_texts]
        labels = [episode.support_labels, episode.query_labels]
        documents = [
            [text for group, group_labels in zip(texts, labels, strict=True)
             for text, label in zip(group, group_labels, strict=True) if label == cls]
            for cls in range(episode.n_way)
        ]
        tokenized = tokenize_corpus(PretrainingCorpus(documents), self.encoder.tokenizer, self.encoder.max_length)
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())  # follows the run's torch seed
        return MaskedPairSampler(tokenized, self.encoder, seed, self.scheme).sample(self.options.pairs_per_step)

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        prototypes, support, labels = self.prototypes(episode)
        if on_inner_step is not None:  # one "step": computing the prototypes
            with torch.no_grad():
                support_loss, _ = classification_metrics(
                    prototype_logits(support, prototypes, self.options.distance, 1.0), labels
                )
            metrics = {"inner_step": 1, "support_loss": support_loss.item()}
            if episode.query_texts:
                logits = self.prototype_scores(episode.query_texts, prototypes)
                loss, accuracy = classification_metrics(logits, label_tensor(episode.query_labels, logits.device))
                metrics.update(query_loss=loss.item(), query_accuracy=accuracy)
            on_inner_step(metrics)
        return PretrainedPrototypeModel(self, prototypes)
