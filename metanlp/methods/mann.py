"""Memory-augmented neural network (Santoro et al. 2016): an LSTM that learns to store and look up examples.

The paper's sequence (``presentation="online"``): at step t the controller sees example x_t together with
the label of the *previous* example, y_{t-1}, so it must hold x_{t-1} in mind until its label arrives and
bind the two in an external memory. Reads use cosine content addressing; writes go to the
least-recently-used slot or to the slot read last (LRUA). Across episodes the class→label mapping
changes, so the weights cannot memorise classes: they can only learn *how to use the memory*.

Choices where the paper leaves room:
- Each query is predicted from the memory state after the whole support sequence, as if it were the
  next item, and independently of the other queries: query order does not matter, and no query ever
  sees its own label.
- The controller writes a separate vector a_t (as in Neural Turing Machines) rather than its read key.
- A key strength β (also from Neural Turing Machines) sharpens the softmax over cosine similarities.
- With n read heads the paper marks the n least-used slots; here head j writes to the j-th least-used.
- As in the paper's equations, a step first writes (M_{t-1} → M_t) and then reads from M_t.
- Online, the training loss adds the support predictions (weight ``support_loss_weight``) to the query
  loss, as the paper trains on every step of the sequence; without them learning stalled here.

The default changes what the network is shown and where it starts, not its machinery. On frozen MiniLM
the paper's form stayed at chance on every real-text cell (19.6-20.1%, 5-way, 200-episode bench; lr 3e-3
reached 33% on CLINC150 5-way 3-shot after 2,000 episodes):
- ``presentation="episodic"``: the support set is labelled, so each example comes with its own label
  (the offset only makes the network carry x_{t-1} until y_{t-1} arrives); queries come with none and
  only read (a write first would let a query find itself).
- ``anchored_memory``: the interface and output also read the controller's input, and keys and write
  vectors start as a key-value store (``initialise_interface``), writes into least-used slots, β = 30.
- The memory starts at zero, and content addressing counts slots shorter than ``EMPTY_SLOT_NORM`` as
  empty: the paper's 1e-6 constants, and the dust soft writes leave everywhere, give 100+ nearly empty
  slots one shared direction that outvoted the few written ones (at the start 16% of the read weight fell
  on the 5 written slots of a 5-way 1-shot episode; 37% with the floor).
- The input projection has LayerNorm and no initial bias: a random bias, larger than the projections of
  unit-length features, made every key alike (cosine 0.51 between keys of different HuffPost classes,
  0.56 within one; without it 0.05 and 0.15, MiniLM's own 0.06 and 0.15).
- lr 1e-4: at 1e-3 and 3e-3 training accuracy on HuffPost stayed at chance for 600-1,000 episodes; at
  1e-4 it reached 60% on training classes after 800 (Adam moves each weight by about lr per step, and
  the initial key map's entries are about 0.03).
- Input and memory width 384 (MiniLM's size): the key map then keeps similarity (nearest neighbour by
  key against written vectors on FewRel training episodes: 37% at the paper-like 64/40, 62% at 384/384;
  MiniLM's cosine 71%). One head and 32 slots (paper: 4 and 128) cost a quarter of the time per step;
  CLINC150 validation classes 88.2% against 90.3-90.7% with 4 heads and 128 slots.
- 800 episodes: CLINC150 validation accuracy was flat from 200 on, HuffPost's still rising at 600.
On test classes (5-way 1-shot, 300 episodes, seed 0) that gives HuffPost 40.4%, CLINC150 87.2%,
FewRel 49.6%: 20-65 points above chance (20%), 6.5-8.3 below ProtoNet on the same features.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods._common import one_pass_report, step_if_trainable
from metanlp.methods.base import (
    EncoderOptions,
    InnerStepCallback,
    Method,
    MethodCard,
    Metrics,
    TaskModel,
    classification_metrics,
    label_tensor,
)
from metanlp.methods.options import OptionError, option
from metanlp.methods.registry import register_method

MEMORY_INIT = 0.0  # see the module notes: the paper's 1e-6 constants give every empty slot one shared direction
PRESENTATIONS = ("online", "episodic")
EMPTY_SLOT_NORM = 0.1  # written slots are ~sqrt(W)/2 long (tanh entries); soft-write dust is far shorter
LEAST_USED_GATE_LOGIT = -5.0  # anchored start: σ(-5) ≈ 0.007 of each write goes to the slot read last


def least_used_weights(usage: torch.Tensor, heads: int) -> torch.Tensor:
    """One-hot rows marking, for head j, the j-th least-used slot: usage (B, M) → (B, heads, M)."""
    slots = usage.topk(heads, dim=-1, largest=False).indices  # (B, heads), least used first
    return F.one_hot(slots, usage.shape[-1]).to(usage.dtype)


def lrua_write_weights(
    gate: torch.Tensor, previous_read_weights: torch.Tensor, least_used: torch.Tensor
) -> torch.Tensor:
    """w^w_t = σ(α) w^r_{t-1} + (1 - σ(α)) w^lu_{t-1}: gate σ(α) (B, heads, 1), weights (B, heads, M)."""
    return gate * previous_read_weights + (1 - gate) * least_used


def content_read_weights(keys: torch.Tensor, strength: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """w^r_t(i) = softmax_i(β · K(k_t, M_t(i))): keys (B·G, heads, W), β (B·G, heads, 1), memory (B, M, W).

    G ≥ 1 readers share each memory (the queries of one episode), without copying it. K is the cosine,
    except that a slot shorter than ``EMPTY_SLOT_NORM`` counts as that long: slots that hold only the
    dust of soft writes then resemble nothing, instead of all pointing where the writes did on average
    and outvoting the few slots that hold an example.
    """
    batch, slots, _ = memory.shape
    readers, heads, width = keys.shape
    lengths = memory.norm(dim=-1).clamp(min=EMPTY_SLOT_NORM)  # (B, M)
    grouped = F.normalize(keys, dim=-1).reshape(batch, -1, width)  # (B, G·heads, W)
    similarity = grouped @ (memory / lengths[..., None]).transpose(1, 2)  # (B, G·heads, M)
    return torch.softmax(strength * similarity.view(readers, heads, slots), dim=-1)


def read_memory(read_weights: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """r_t = Σ_i w^r_t(i) M_t(i), heads concatenated: weights (B·G, heads, M), memory (B, M, W) → (B·G, heads·W)."""
    readers = read_weights.shape[0]
    grouped = read_weights.reshape(memory.shape[0], -1, memory.shape[1])  # (B, G·heads, M)
    return (grouped @ memory).reshape(readers, -1)


@dataclass
class MemoryState:
    """Everything the network carries from one step to the next (B = sequences run in parallel)."""

    hidden: torch.Tensor  # controller h (B, C)
    cell: torch.Tensor  # controller c (B, C)
    memory: torch.Tensor  # (B, M, W)
    usage: torch.Tensor  # w^u (B, M)
    read_weights: torch.Tensor  # w^r (B, heads, M)
    reads: torch.Tensor  # r, concatenated over heads (B, heads · W)

    def repeat_each(self, count: int, memory: bool = True) -> MemoryState:
        """Each sequence's state ``count`` times in a row, e.g. once per query: batch B → B · count.

        ``memory=False`` keeps one memory per sequence, for readers that do not write to it."""
        repeated = {name: tensor.repeat_interleave(count, 0) for name, tensor in vars(self).items()}
        if not memory:
            repeated["memory"] = self.memory
        return MemoryState(**repeated)


@dataclass
class MANNOptions(EncoderOptions):
    lr: float = option(1e-4, low=1e-7, high=1.0)  # see the module notes; the paper's online form learned (slowly) at 3e-3
    input_size: int = option(384, low=1, high=4096)  # the encoder features are projected to this size before the controller
    controller_size: int = option(200, low=1, high=4096)  # LSTM units (paper: 200)
    memory_slots: int = option(32, low=2, high=100_000)  # paper: 128; a support set larger than this overwrites its least-used examples
    memory_width: int = option(384, low=1, high=4096)  # paper: 40
    read_heads: int = option(1, low=1, high=64)  # paper: 4
    usage_decay: float = option(0.95, low=0.0, high=1.0)  # γ in w^u_t = γ w^u_{t-1} + w^r_t + w^w_t
    max_ways: int = option(20, low=2, high=1000)  # size of the one-hot label input and of the output layer
    support_loss_weight: float = option(1.0, low=0.0, high=100.0)  # weight of the online support predictions in the training loss
    # "online": the paper's sequence, x_t shown with y_{t-1}, every step predicts, writes and reads.
    # "episodic": each support example is shown with its own label; queries come with no label and only
    # read (a write first would let a query find itself in memory).
    presentation: str = option("episodic", choices=PRESENTATIONS)
    # The interface (keys, write vectors, gates) and the output layer also read the controller's input,
    # not only its hidden state, and start as a key-value store (see ``initialise_interface``).
    anchored_memory: bool = True
    initial_key_strength: float = option(30.0, low=1.01, high=1000.0)  # β before meta-training (β = 1 + softplus(·) ≥ 1; random-ish ≈ 1.7)
    seed: int = option(0, low=0, high=2**31 - 1)  # shuffles the support sequence (a fixed order per call of adapt)

    def validate(self) -> None:
        if self.read_heads > self.memory_slots:
            raise OptionError(f"option 'read_heads' ({self.read_heads}) must not exceed memory_slots", "read_heads")


class MemoryTaskModel(TaskModel):
    """The state after the support sequence; each query is one more step from that state."""

    def __init__(self, method: MANN, state: MemoryState, label_input: torch.Tensor, n_way: int) -> None:
        self.method = method
        self.state = state
        self.label_input = label_input
        self.n_way = n_way

    def predict_logits(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.method.query_logits(
                self.state, self.label_input, self.method.features(texts)[None], self.n_way
            )[0]


@register_method
class MANN(Method):
    card = MethodCard(
        name="mann",
        title="Memory-Augmented Neural Network",
        family="meta-learning",
        summary=(
            "An LSTM reads the support examples one by one, each shown with the previous example's label, and "
            "stores what it needs in an external memory; queries are answered by looking that memory up. "
            "Labels are shuffled in every episode, so meta-training can only teach it how to write and read, "
            "not what the classes are. It needs far more meta-training episodes than the metric methods."
        ),
        formula=r"w^r_t(i)=\frac{\exp K(k_t,M_t(i))}{\sum_j \exp K(k_t,M_t(j))},\ r_t=\sum_i w^r_t(i)M_t(i),\ "
        r"w^w_t=\sigma(\alpha)\,w^r_{t-1}+(1-\sigma(\alpha))\,w^{lu}_{t-1},\ "
        r"w^u_t=\gamma\,w^u_{t-1}+w^r_t+w^w_t",
        paper="Santoro, Bartunov, Botvinick, Wierstra, Lillicrap. Meta-Learning with Memory-Augmented Neural "
        "Networks. ICML 2016.",
        paper_url="https://arxiv.org/abs/1605.06065",
    )
    Options = MANNOptions
    recommended_train_steps = 800

    def __init__(self, encoder: Encoder, options: MANNOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        heads, width = options.read_heads, options.memory_width
        # LayerNorm gives the controller inputs of unit scale: a pretrained encoder's unit-length
        # features have entries of about 1/sqrt(H), which the gates and keys would barely notice.
        # No bias at the start: unit-length features project to entries of about 1/sqrt(3H), less than a
        # default random bias, and a constant shared by every example would make all keys look alike.
        self.input_projection = nn.Sequential(
            nn.Linear(encoder.hidden_size, options.input_size), nn.LayerNorm(options.input_size)
        )
        nn.init.zeros_(self.input_projection[0].bias)
        self.controller = nn.LSTMCell(
            options.input_size + options.max_ways + heads * width, options.controller_size
        )
        # Per head: read key k, write vector a, gate α and key strength β.
        skip = options.input_size + options.max_ways if options.anchored_memory else 0
        self.interface = nn.Linear(options.controller_size + skip, heads * (2 * width + 2))
        self.output = nn.Linear(options.controller_size + skip + heads * width, options.max_ways)
        self.initialise_interface()
        self._shuffle_rng = random.Random(options.seed)

    @property
    def online(self) -> bool:
        return self.options.presentation == "online"

    def initialise_interface(self) -> None:
        """Start β at ``initial_key_strength``; with ``anchored_memory``, as a key-value store.

        Every write vector then starts as [k(x); v(y)]: its first half the same map of the example as the
        read key (whose second half is zero), its second half a random code of the label; and each write
        goes to a least-used slot. So from the first episode a query's key finds the stored examples that
        look like it, and what it reads back carries their labels; meta-training still has every weight
        to change, and must learn the rest (reading the label code out, using the controller's state).
        """
        heads, width = self.options.read_heads, self.options.memory_width
        rows = self.interface.weight.data.view(heads, 2 * width + 2, -1)  # columns: [hidden; input; label]
        biases = self.interface.bias.data.view(heads, 2 * width + 2)
        strength = torch.tensor(self.options.initial_key_strength - 1.0)
        biases[:, -1] = strength + torch.log(-torch.expm1(-strength))  # softplus⁻¹(β - 1)
        if not self.options.anchored_memory:
            return
        half, hidden, labels = width // 2, self.options.controller_size, self.options.max_ways
        keys, writes = rows[:, :width], rows[:, width : 2 * width]
        keys[:, :, :hidden] = 0.0  # keys start as a map of the input alone ...
        keys[:, :, -labels:] = 0.0
        keys[:, half:] = 0.0  # ... into the first half of the row
        biases[:, :width] = 0.0
        writes.zero_()
        writes[:, :half] = keys[:, :half]  # the same map, so an example finds what it wrote
        writes[:, half:, -labels:] = torch.randn(heads, width - half, labels)  # the label's code
        biases[:, width : 2 * width] = 0.0
        rows[:, 2 * width] = 0.0  # σ(α) ≈ 0: each example starts in a fresh (least-used) slot of its own
        biases[:, 2 * width] = LEAST_USED_GATE_LOGIT

    # ----- the recurrent core ------------------------------------------------------------
    def initial_state(self, batch: int, reference: torch.Tensor) -> MemoryState:
        options = self.options
        slots, heads, width = options.memory_slots, options.read_heads, options.memory_width

        def zeros(*shape: int) -> torch.Tensor:
            return reference.new_zeros(batch, *shape)

        return MemoryState(
            hidden=zeros(options.controller_size),
            cell=zeros(options.controller_size),
            memory=reference.new_full((batch, slots, width), MEMORY_INIT),
            usage=zeros(slots),
            read_weights=zeros(heads, slots),
            reads=zeros(heads * width),
        )

    def step(
        self, state: MemoryState, inputs: torch.Tensor, previous_label: torch.Tensor, write: bool = True
    ) -> tuple[MemoryState, torch.Tensor]:
        """One time step: inputs (B, input_size), label input one-hot (B, max_ways) → (state, logits).

        ``write=False`` reads the memory as it is (an episodic query)."""
        options = self.options
        heads, width = options.read_heads, options.memory_width
        hidden, cell = self.controller(
            torch.cat([inputs, previous_label, state.reads], -1), (state.hidden, state.cell)
        )
        seen = torch.cat([hidden, inputs, previous_label], -1) if options.anchored_memory else hidden
        interface = self.interface(seen).view(-1, heads, 2 * width + 2)
        keys = torch.tanh(interface[..., :width])  # k_t (B, heads, W)
        write_vectors = torch.tanh(interface[..., width : 2 * width])  # a_t (B, heads, W)
        gate = torch.sigmoid(interface[..., 2 * width : 2 * width + 1])  # σ(α) (B, heads, 1)
        strength = 1 + F.softplus(interface[..., -1:])  # β ≥ 1 (B, heads, 1)

        usage = options.usage_decay * state.usage
        memory = state.memory  # (B, M, W); without writes it may be shared by groups of readers
        if write:
            least_used = least_used_weights(state.usage, heads)  # w^lu_{t-1} (B, heads, M)
            write_weights = lrua_write_weights(gate, state.read_weights, least_used)
            # The paper clears the least-used slot before writing into it.
            erase = least_used.amax(1).unsqueeze(-1)  # (B, M, 1)
            memory = memory * (1 - erase) + write_weights.transpose(1, 2) @ write_vectors
            usage = usage + write_weights.sum(1)

        read_weights = content_read_weights(keys, strength, memory)  # (B, heads, M)
        reads = read_memory(read_weights, memory)  # (B, heads · W)
        usage = usage + read_weights.sum(1)
        logits = self.output(torch.cat([seen, reads], -1))
        return MemoryState(hidden, cell, memory, usage, read_weights, reads), logits

    def run_support(
        self, support: torch.Tensor, labels: torch.Tensor, n_way: int
    ) -> tuple[MemoryState, torch.Tensor, torch.Tensor]:
        """Feed support sequences: encoder features (B, T, H), labels (B, T).

        Returns the final state, the label input that goes with every query (B, max_ways): y_T when
        online, none when episodic, and the predictions made along the sequence (B, T, n_way). Online,
        step t is predicted before y_t is shown, so these are honest few-shot guesses; episodic, they
        saw their own label.
        """
        self.check_ways(n_way)
        batch, length = labels.shape
        inputs = self.input_projection(support)  # (B, T, E)
        one_hot = F.one_hot(labels, self.options.max_ways).to(inputs.dtype)  # (B, T, max_ways)
        state = self.initial_state(batch, inputs)
        no_label = inputs.new_zeros(batch, self.options.max_ways)
        previous_label = no_label
        predictions = []
        for t in range(length):
            shown = previous_label if self.online else one_hot[:, t]
            state, logits = self.step(state, inputs[:, t], shown)
            predictions.append(logits[:, :n_way])
            previous_label = one_hot[:, t]
        online = torch.stack(predictions, 1) if predictions else inputs.new_zeros(batch, 0, n_way)
        return state, previous_label if self.online else no_label, online

    def query_logits(
        self, state: MemoryState, label_input: torch.Tensor, queries: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Each query one step after its episode's support sequence: state of B episodes, label input
        (B, max_ways), queries (B, Q, H) → logits (B, Q, n_way)."""
        batch, count = queries.shape[:2]
        _, logits = self.step(
            state.repeat_each(count, memory=self.online),  # episodic queries only read: share the memory
            self.input_projection(queries.flatten(0, 1)),
            label_input.repeat_interleave(count, 0),
            write=self.online,
        )
        return logits[:, :n_way].view(batch, count, n_way)

    def check_ways(self, n_way: int) -> None:
        if n_way > self.options.max_ways:
            raise OptionError(
                f"{n_way}-way episodes need option 'max_ways' of at least {n_way} (it is {self.options.max_ways})", "max_ways"
            )

    # ----- the contract ------------------------------------------------------------------
    def support_order(self, size: int, rng: random.Random) -> list[int]:
        order = list(range(size))
        rng.shuffle(order)
        return order

    def train_on_sequences(
        self,
        support: torch.Tensor,
        support_labels: torch.Tensor,
        queries: torch.Tensor,
        query_labels: torch.Tensor,
        n_way: int,
    ) -> Metrics:
        """One meta-training step on B episodes at once: support (B, T, H), (B, T); queries (B, Q, H), (B, Q)."""
        self.train()
        state, label_input, online = self.run_support(support, support_labels, n_way)
        logits = self.query_logits(state, label_input, queries, n_way)
        query_loss, query_accuracy = classification_metrics(logits.flatten(0, 1), query_labels.flatten())
        if self.online:  # online guesses were made before their labels: train on them too
            support_loss, support_accuracy = classification_metrics(online.flatten(0, 1), support_labels.flatten())
            step_if_trainable(self, query_loss + self.options.support_loss_weight * support_loss)
        else:  # the support examples saw their own labels: score them as queries, for the report only
            step_if_trainable(self, query_loss)
            with torch.no_grad():
                support_logits = self.query_logits(state, label_input, support, n_way)
                support_loss, support_accuracy = classification_metrics(
                    support_logits.flatten(0, 1), support_labels.flatten()
                )
        return {
            "support_loss": support_loss.item(),
            "support_accuracy": support_accuracy,
            "query_loss": query_loss.item(),
            "query_accuracy": query_accuracy,
        }

    def train_step(self, episode: Episode) -> Metrics:
        """support_loss / support_accuracy score the online guesses along the support sequence."""
        order = self.support_order(len(episode.support_texts), self._shuffle_rng)
        texts = [episode.support_texts[i] for i in order]
        embeddings = self.features(texts + episode.query_texts)
        device = embeddings.device
        support_labels = label_tensor([episode.support_labels[i] for i in order], device)
        query_labels = label_tensor(episode.query_labels, device)
        n_support = len(texts)
        return self.train_on_sequences(
            embeddings[None, :n_support],
            support_labels[None],
            embeddings[None, n_support:],
            query_labels[None],
            episode.n_way,
        )

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        """Run the (seeded, shuffled) support sequence to fill the memory: reported as one inner step."""
        self.eval()
        order = self.support_order(len(episode.support_texts), random.Random(self.options.seed))
        with torch.no_grad():
            support = self.features([episode.support_texts[i] for i in order])
            labels = label_tensor([episode.support_labels[i] for i in order], support.device)
            state, label_input, online = self.run_support(support[None], labels[None], episode.n_way)
        task_model = MemoryTaskModel(self, state, label_input, episode.n_way)
        if on_inner_step is not None:
            metrics = one_pass_report(task_model, episode)
            if self.online:  # the honest online guesses, each made before its label was shown
                with torch.no_grad():
                    support_loss, support_accuracy = classification_metrics(online[0], labels)
                metrics.update(support_loss=support_loss.item(), support_accuracy=support_accuracy)
            on_inner_step(metrics)
        return task_model
