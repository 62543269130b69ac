"""The one interface every transfer-learning and meta-learning method implements.

A method learns across tasks (``train_step``), adapts to one task's support set
(``adapt`` → a ``TaskModel``) and predicts on its queries. It never picks a device
(the engine calls ``.to(device)``), never writes files (the engine saves ``state_dict``)
and never imports Streamlit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.data.types import Episode, Example
from metanlp.encoders import Encoder
from metanlp.encoders.cache import shared_cache, unchanged_weights_cache
from metanlp.methods.options import check_choice, option

Metrics = dict[str, float]
InnerStepCallback = Callable[[Metrics], None]
REQUIRED_METRICS = ("support_loss", "query_loss", "query_accuracy")
FINETUNE_MODES = ("auto", "frozen", "top", "full")


@dataclass(frozen=True)
class MethodCard:
    """What the dashboard and CLI show about a method."""

    name: str  # registry key, e.g. "protonet"
    title: str  # e.g. "Prototypical Networks"
    family: str  # "meta-learning", "transfer learning" or "baseline"
    summary: str  # one or two sentences: what it does
    formula: str  # LaTeX of its key equation
    paper: str  # citation
    paper_url: str = ""
    # A measured shortcoming of the defaults (e.g. a budget too small to learn): shown with every result of the method.
    caveat: str = ""


@dataclass
class EncoderOptions:
    """Which encoder layers a method trains: frozen, the top ``top_k`` layers, or all.

    ``auto`` freezes a pretrained encoder (MiniLM: fast, cached features) and trains a
    from-scratch one fully (a frozen random encoder has learned nothing to reuse).
    """

    finetune: str = option("auto", choices=FINETUNE_MODES)
    top_k: int = option(1, low=1, high=48)


def resolve_finetune_mode(finetune: str, encoder: Encoder) -> str:
    """``auto`` → ``full`` for a from-scratch encoder, ``frozen`` for a pretrained one."""
    check_choice("finetune", finetune, FINETUNE_MODES)
    if finetune == "auto":
        return "full" if encoder.kind == "scratch" else "frozen"
    return finetune


def trainable_layer_count(finetune: str, top_k: int) -> int | None:
    """Argument for ``Encoder.set_trainable_layers``: 0 frozen, ``top_k``, or None (all)."""
    if finetune == "auto":
        raise ValueError("resolve 'auto' with resolve_finetune_mode first: it depends on the encoder")
    check_choice("finetune", finetune, FINETUNE_MODES)
    return {"frozen": 0, "top": top_k, "full": None}[finetune]


def parse_dataset_names(text: str) -> list[str]:
    """Comma-separated dataset names, duplicates dropped: "a, b:03,a" → ["a", "b:03"] ("b:03": class split 03)."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


@dataclass(frozen=True)
class DataRequest:
    """Data a method trains on besides its episodes, named by one of its options.

    The option holds dataset names (``parse_dataset_names``); the engine loads each and hands
    ``Method.receive_data`` the examples of ``splits``. Methods never load data themselves, so a
    method rebuilt from a checkpoint (which adapts and predicts without this data) reads no dataset.
    """

    option: str  # e.g. "target_dataset"
    splits: tuple[str, ...] = ("train",)  # whose examples the method may use

    def dataset_names(self, options: Any) -> list[str]:
        return parse_dataset_names(str(getattr(options, self.option)))


@dataclass(frozen=True)
class AuxiliaryDataset:
    """One requested dataset as a method receives it: the examples of the requested splits only."""

    name: str  # as the option names it, e.g. "banking77:03"
    examples: list[Example]
    classes: list[str]  # the classes of the requested splits, in the dataset's order


AuxiliaryData = Mapping[str, list[AuxiliaryDataset]]  # option name → its datasets, in the option's order


class TaskModel(ABC):
    """A model adapted to one task; classes are the task's 0..N-1."""

    @abstractmethod
    def predict_logits(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised class scores (len(texts), N)."""

    def predict_proba(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return torch.softmax(self.predict_logits(texts).float(), dim=-1)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cross-entropy (a tensor, for backprop) and accuracy (a float in [0, 1])."""
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(-1) == labels).float().mean().item() if len(labels) else float("nan")
    return loss, accuracy


def label_tensor(labels: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(labels, dtype=torch.long, device=device)


class Method(nn.Module, ABC):
    """Base class: subclasses set ``card`` and ``Options`` and implement the abstract methods.

    ``Options`` is a dataclass whose fields (with defaults) are the method's settings;
    ``validate()`` on it raises ``OptionError`` for bad values.
    """

    card: ClassVar[MethodCard]
    Options: ClassVar[type]
    #: Meta-training steps this method needs on its defaults; the bench uses it unless
    #: ``--train-steps`` is given (steps on cached features cost milliseconds).
    recommended_train_steps: ClassVar[int] = 200
    #: Options that make a working example of the method where its defaults cannot (e.g. DANN's
    #: explicit target domain); tests and the Live adaptation page build it with these.
    example_options: ClassVar[dict] = {}
    #: The encoder a method is built for when it is not free to use any ("scratch": MLM
    #: pretraining, or a small student); the bench and the Train page default to it.
    preferred_encoder: ClassVar[str | None] = None
    #: Data the method trains on besides its episodes (e.g. DANN's unlabelled target text); the
    #: engine loads it and calls ``receive_data`` before training.
    auxiliary_data: ClassVar[tuple[DataRequest, ...]] = ()

    def __init__(self, encoder: Encoder, options: Any) -> None:
        super().__init__()
        self.encoder = encoder
        self.options = options
        self._optimizer: torch.optim.Optimizer | None = None

    # ----- features -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def configure_encoder(self, finetune: str, top_k: int) -> str:
        """Apply a fine-tuning mode to the encoder; returns the mode used (``auto`` resolved)."""
        mode = resolve_finetune_mode(finetune, self.encoder)
        self.encoder.set_trainable_layers(trainable_layer_count(mode, top_k))
        return mode

    def features(self, texts: list[str]) -> torch.Tensor:
        """Sentence embeddings; memoised while the encoder is frozen (the fast path), and during an
        evaluation (``memoise_while_unchanged``) while a trainable encoder in eval mode keeps its weights."""
        if self.encoder.is_frozen():
            return shared_cache(self.encoder).embed(texts)
        evaluation_cache = unchanged_weights_cache(self.encoder)
        if evaluation_cache is not None and not self.encoder.training:
            return evaluation_cache.embed(texts)
        shared_cache(self.encoder).clear()  # weights may change from here on
        return self.encoder.embed(texts)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    def prediction_invariant_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that cannot change which class a new task's query gets.

        E.g. a softmax temperature (it rescales every logit alike), or a head over the
        meta-train classes that no new task uses. Meta-training them alone is no meta-training.
        """
        return []

    def meta_learned_parameters(self) -> list[nn.Parameter]:
        """What meta-training changes that can change a prediction on a new task."""
        invariant = {id(parameter) for parameter in self.prediction_invariant_parameters()}
        return [parameter for parameter in self.trainable_parameters() if id(parameter) not in invariant]

    def meta_learned_parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.meta_learned_parameters())

    @property
    def learns_across_tasks(self) -> bool:
        """False when this configuration has nothing to meta-learn: the engine then skips
        meta-training, says so in an event, and the method is a per-task baseline."""
        return bool(self.meta_learned_parameters())

    def optimizer(self) -> torch.optim.Optimizer:
        """The outer-loop optimiser, made on first use (after the engine moved the method)."""
        if self._optimizer is None:
            self._optimizer = torch.optim.AdamW(
                self.trainable_parameters(), lr=self.options.lr, weight_decay=getattr(self.options, "weight_decay", 0.0)
            )
        return self._optimizer

    # ----- the contract -----------------------------------------------------------------
    @abstractmethod
    def train_step(self, episode: Episode) -> Metrics:
        """One learning step across tasks; returns at least ``REQUIRED_METRICS``."""

    def train_steps(self, episodes: list[Episode]) -> list[Metrics]:
        """``train_step`` on each episode in turn; a method that can batch tasks overrides this."""
        return [self.train_step(episode) for episode in episodes]

    def episodes_per_call(self) -> int:
        """How many episodes ``train_steps`` wants at once (the engine hands it that many)."""
        return 1

    @abstractmethod
    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        """Adapt to ``episode``'s support set only.

        Query labels, when present, may be used for *reporting* query loss per inner step
        (under no_grad), never for learning.
        """

    def evaluate_episode(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> Metrics:
        """Adapt on the support set, then score the queries."""
        task_model = self.adapt(episode, on_inner_step)
        with torch.no_grad():
            logits = task_model.predict_logits(episode.query_texts).float()
            loss, accuracy = classification_metrics(logits, label_tensor(episode.query_labels, logits.device))
        return {"query_loss": loss.item(), "query_accuracy": accuracy}

    def receive_data(self, data: AuxiliaryData) -> None:
        """Take what ``auxiliary_data`` asked for, keyed by option name; called once, before training."""

    def extra_state_config(self) -> dict:
        """JSON-serialisable facts needed to rebuild this method (besides options)."""
        return {}

    def load_extra_state_config(self, config: dict) -> None:
        """Inverse of ``extra_state_config``; called before ``load_state_dict``."""
