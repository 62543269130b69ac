"""Conformance checks: does a method honour what the ``Method`` contract *means*, not only its form?

Like scikit-learn's ``check_estimator``, every check is a plain function that builds the method,
drives it through ``train_step`` / ``adapt`` / ``predict_logits`` and raises ``AssertionError``
with a message that says what went wrong. Generic checks apply to every method; each method also
has checks of its own mechanism, registered here by method name with ``@method_check``.

    from metanlp.methods.conformance import check_method
    check_method(MyMethod)                      # every check, tiny from-scratch encoder
    check_method(MyMethod, encoder="frozen")    # the same encoder frozen, as MiniLM is used

A method added by a library user registers its own mechanism check the same way::

    @method_check("my_method")
    def check_my_mechanism(subject: Subject) -> None: ...

Checks run in seconds: a tiny from-scratch encoder (1 layer, 32 units) and an easy synthetic task
whose classes are sentences made of their own topic's words (so even an untrained method on a
random encoder can tell them apart). A check that does not apply to a configuration raises
``unittest.SkipTest`` (pytest reports it as skipped).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import unittest
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from metanlp.data.types import Episode, Example
from metanlp.encoders import build_encoder
from metanlp.methods.base import AuxiliaryDataset, Method
from metanlp.methods.options import build_options

TINY_ENCODER = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "feedforward_size": 64, "max_length": 24}
#: "scratch": the tiny encoder trained with the method (``finetune="auto"`` → full). "frozen": the same
#: encoder frozen (``finetune="frozen"``) with unit-length embeddings, as MiniLM is used by default.
ENCODER_SETTINGS = ("scratch", "frozen")
FIT_ACCURACY = 0.75  # support accuracy an adapted model must reach on the easy task (chance: 1/3)
MAX_STEPS_TO_FIRST_UPDATE = 8  # train steps within which a method that accumulates a meta-batch must step
PREPARATION_STEPS = 2  # meta-training before most checks, so zero-initialised parts have moved

Check = Callable[["Subject"], None]


# ----- the easy synthetic task -------------------------------------------------------------------
#: Each class is a topic; its sentences are 4 of the topic's 6 words (one WordPiece token each).
TOPICS = {
    "colours": "red green blue yellow purple orange",
    "animals": "cat dog horse cow sheep goat",
    "fruit": "apple banana cherry grape lemon mango",
    "vehicles": "car bus train truck bike boat",
    "weather": "rain snow wind storm cloud sun",
    "instruments": "piano guitar drum violin flute harp",
    "sports": "soccer tennis golf hockey rugby boxing",
    "body": "arm leg hand foot knee elbow",
    "metals": "gold silver iron copper zinc tin",
}
TASK_TOPICS = ("colours", "animals", "fruit")  # the task the checks adapt to
TRAINING_TOPICS = tuple(topic for topic in TOPICS if topic not in TASK_TOPICS)  # meta-training classes


def topic_sentences(topic: str, count: int, rng: random.Random) -> list[str]:
    """``count`` distinct sentences of 4 words of ``topic`` in random order."""
    words = TOPICS[topic].split()
    sentences: list[str] = []
    while len(sentences) < count:
        sentence = " ".join(rng.sample(words, 4))
        if sentence not in sentences:
            sentences.append(sentence)
    return sentences


def synthetic_episode(topics: Sequence[str], k_shot: int, n_query: int, seed: int) -> Episode:
    """An N-way K-shot episode over ``topics``; support and query sentences are distinct."""
    rng = random.Random(seed)
    support_texts, support_labels, query_texts, query_labels = [], [], [], []
    for label, topic in enumerate(topics):
        sentences = topic_sentences(topic, k_shot + n_query, rng)
        support_texts += sentences[:k_shot]
        support_labels += [label] * k_shot
        query_texts += sentences[k_shot:]
        query_labels += [label] * n_query
    return Episode(list(topics), support_texts, support_labels, query_texts, query_labels)


def task_episode(seed: int = 1) -> Episode:
    """The 3-way 3-shot task the checks adapt to (3 queries per class serve as the probe texts)."""
    return synthetic_episode(TASK_TOPICS, k_shot=3, n_query=3, seed=seed)


def training_episode(index: int) -> Episode:
    """The ``index``-th 3-way 3-shot meta-training episode, over classes the task never uses."""
    topics = random.Random(1000 + index).sample(TRAINING_TOPICS, 3)
    return synthetic_episode(topics, k_shot=3, n_query=3, seed=2000 + index)


# ----- what the checks may assume about a method -------------------------------------------------
@dataclass(frozen=True)
class Expectations:
    """Departures from the defaults the checks assume, each with its reason (``reason`` is required)."""

    reason: str = ""
    fit_train_steps: int = 0  # meta-training steps before the method can fit an easy support set
    options: dict = field(default_factory=dict, hash=False)  # fast stand-ins for costly defaults
    exempt: dict = field(default_factory=dict, hash=False)  # check name → why it does not apply


_EXPECTATIONS: dict[str, Expectations] = {}
_SPECIFIC_CHECKS: dict[str, list[Check]] = {}


def declare_expectations(name: str, expectations: Expectations) -> None:
    """Record what the checks may assume about method ``name`` (e.g. that it needs meta-training)."""
    if not expectations.reason.strip():
        raise ValueError(f"expectations for {name!r} must say why they depart from the defaults")
    _EXPECTATIONS[name] = expectations


def expectations_of(name: str) -> Expectations:
    return _EXPECTATIONS.get(name, Expectations())


def method_check(*names: str) -> Callable[[Check], Check]:
    """Decorator: register a check of the named methods' own mechanism."""

    def register(check: Check) -> Check:
        for name in names:
            _SPECIFIC_CHECKS.setdefault(name, []).append(check)
        return check

    return register


def specific_checks(name: str) -> list[Check]:
    return list(_SPECIFIC_CHECKS.get(name, []))


@dataclass(frozen=True)
class Subject:
    """A method class in one encoder setting, with the options the checks build it with."""

    method_class: type[Method]
    encoder: str = "scratch"
    options: dict = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.encoder not in ENCODER_SETTINGS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODER_SETTINGS)}; got {self.encoder!r}")

    @property
    def name(self) -> str:
        return self.method_class.card.name

    def __str__(self) -> str:
        return f"{self.name}[{self.encoder}]"

    def method_options(self, **overrides) -> dict:
        """Example options (``example_options`` ClassVar), fast stand-ins, the subject's own, overrides."""
        options = {
            **getattr(self.method_class, "example_options", {}),
            **expectations_of(self.name).options,
            **self.options,
            **overrides,
        }
        if self.encoder == "frozen":
            options["finetune"] = "frozen"
        return options

    def build(self, seed: int = 0, **overrides) -> Method:
        """A fresh method on a fresh tiny encoder; everything random follows ``seed``."""
        seed_all(seed)
        encoder = build_encoder("scratch", **TINY_ENCODER)
        if self.encoder == "frozen":
            encoder.normalize = True  # unit-length embeddings, like MiniLM's
        options = build_options(self.method_class.Options, self.method_options(**overrides))
        method = self.method_class(encoder, options)
        method.receive_data(stand_in_auxiliary_data(self.method_class, options))
        return method.to("cpu")


def stand_in_auxiliary_data(method_class: type[Method], options) -> dict[str, list[AuxiliaryDataset]]:
    """Synthetic stand-ins for the datasets a method's options name, so the checks read no dataset:
    each gets 8 sentences of every meta-training topic, labelled by topic."""
    rng = random.Random(3)
    return {
        request.option: [
            AuxiliaryDataset(
                name,
                [Example(text, topic) for topic in TRAINING_TOPICS for text in topic_sentences(topic, 8, rng)],
                list(TRAINING_TOPICS),
            )
            for name in request.dataset_names(options)
        ]
        for request in method_class.auxiliary_data
    }


def encoder_settings(method_class: type[Method]) -> list[str]:
    """``frozen`` applies to methods with a ``finetune`` option; the others choose their encoder mode."""
    fields = {option.name for option in dataclasses.fields(method_class.Options)}
    return list(ENCODER_SETTINGS) if "finetune" in fields else ["scratch"]


# ----- running a method ------------------------------------------------------------------------------
def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def meta_train(method: Method, steps: int, first: int = 0) -> None:
    """``steps`` train steps on synthetic meta-training episodes (none if nothing is meta-learned)."""
    if method.learns_across_tasks:
        for index in range(first, first + steps):
            method.train_step(training_episode(index))


def prepared(subject: Subject, seed: int = 0, steps: int = PREPARATION_STEPS, **overrides) -> Method:
    method = subject.build(seed, **overrides)
    meta_train(method, steps)
    return method


def adapted_logits(
    method: Method, episode: Episode, texts: list[str] | None = None, seed: int = 0, on_inner_step=None
) -> torch.Tensor:
    """Logits (len(texts), N) of the model adapted to ``episode``; ``texts`` default to its queries.

    The global seeds are reset first, so dropout or sampling inside ``adapt`` repeats exactly.
    """
    seed_all(seed)
    task_model = method.adapt(episode, on_inner_step)
    with torch.no_grad():
        return (
            task_model.predict_logits(episode.query_texts if texts is None else texts).detach().float().cpu()
        )


def support_loss(method: Method, episode: Episode) -> float:
    """Cross-entropy of the adapted model on its own support set."""
    logits = adapted_logits(method, episode, episode.support_texts)
    return F.cross_entropy(logits, torch.tensor(episode.support_labels)).item()


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 1e-4) -> None:
    """Equal up to ``rtol`` times the larger of 1 and the largest expected magnitude."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(1.0, expected.abs().max().item())
    difference = (actual - expected).abs().max().item()
    assert difference <= rtol * scale, (
        f"{what}: they differ by {difference:.3g} (tolerance {rtol * scale:.3g})"
    )


def changes(before: torch.Tensor, after: torch.Tensor) -> float:
    """Largest change of log-probabilities (a shift common to every logit does not count)."""
    return (F.log_softmax(after, -1) - F.log_softmax(before, -1)).abs().max().item()


def snapshot(parameters: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in parameters]


def restore(parameters: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for parameter, value in zip(parameters, values, strict=True):
            parameter.copy_(value)


def replace_support(episode: Episode, label: int, texts: list[str]) -> Episode:
    """``episode`` with class ``label``'s support sentences replaced by ``texts`` (same count)."""
    replacements = iter(texts)
    support = [
        next(replacements) if y == label else text
        for text, y in zip(episode.support_texts, episode.support_labels, strict=True)
    ]
    return dataclasses.replace(episode, support_texts=support)


def other_sentences(topic: str, count: int, avoid: Sequence[str], seed: int = 7) -> list[str]:
    """``count`` sentences of ``topic`` that are not in ``avoid``."""
    candidates = [
        s for s in topic_sentences(topic, count + len(avoid) + 5, random.Random(seed)) if s not in avoid
    ]
    return candidates[:count]


def not_applicable(reason: str) -> None:
    raise unittest.SkipTest(reason)


# ----- generic checks ----------------------------------------------------------------------------
def check_adapt_uses_support_only(subject: Subject) -> None:
    """Other query texts and labels (or none), or reporting inner steps, leave the adapted model alone."""
    method = prepared(subject)
    task = task_episode()
    probe = task.query_texts
    rng = random.Random(3)
    other_queries = [s for topic in TRAINING_TOPICS[:2] for s in topic_sentences(topic, 2, rng)]
    variants = {
        "other query texts and labels": dataclasses.replace(
            task, query_texts=other_queries, query_labels=[rng.randrange(task.n_way) for _ in other_queries]
        ),
        "no queries": dataclasses.replace(task, query_texts=[], query_labels=[]),
    }
    reference = adapted_logits(method, task, probe)
    for what, variant in variants.items():
        assert_close(
            adapted_logits(method, variant, probe),
            reference,
            f"{subject}: adapting with {what} changed the predictions (adapt must use the support set only)",
        )
    reports: list[dict] = []
    reported = adapted_logits(
        method, variants["other query texts and labels"], probe, on_inner_step=reports.append
    )
    assert reports, f"{subject}: adapt reported no inner step to on_inner_step"
    assert_close(
        reported,
        reference,
        f"{subject}: reporting inner steps (which may read query labels) changed the adapted model",
    )


def check_adapt_leaves_state_unchanged(subject: Subject) -> None:
    """``adapt`` must leave ``state_dict()`` bit-identical (and which parameters train)."""
    method = prepared(subject)
    before = {key: value.detach().clone() for key, value in method.state_dict().items()}
    trainable = {name: parameter.requires_grad for name, parameter in method.named_parameters()}
    task = task_episode()
    adapted_logits(method, task)
    adapted_logits(method, task, on_inner_step=lambda metrics: None)
    after = method.state_dict()
    assert set(after) == set(before), (
        f"{subject}: adapt added or removed state: {sorted(set(after) ^ set(before))}"
    )
    changed = [key for key, value in before.items() if not torch.equal(value, after[key])]
    assert not changed, f"{subject}: adapt changed the method's state: {changed[:8]}"
    now_trainable = {name: parameter.requires_grad for name, parameter in method.named_parameters()}
    assert now_trainable == trainable, f"{subject}: adapt changed which parameters are trainable"


def check_adapt_fits_support(subject: Subject) -> None:
    """After adapting, the task model classifies its own support set of the easy task well above chance."""
    steps = expectations_of(subject.name).fit_train_steps
    method = subject.build()
    meta_train(method, steps)
    task = task_episode()
    logits = adapted_logits(method, task, task.support_texts)
    accuracy = (logits.argmax(-1) == torch.tensor(task.support_labels)).float().mean().item()
    assert accuracy >= FIT_ACCURACY, (
        f"{subject}: after {steps} meta-training steps the adapted model gets {accuracy:.2f} of its own "
        f"support set right on an easy task (chance {1 / task.n_way:.2f}, required {FIT_ACCURACY})"
    )


def check_relabelling_permutes_logits(subject: Subject) -> None:
    """Renumbering the classes renumbers the logits: no class index is special."""
    method = prepared(subject)
    task = task_episode()
    permutation = [1, 2, 0]  # class i is called permutation[i]
    relabelled = Episode(
        classes=[task.classes[permutation.index(j)] for j in range(task.n_way)],
        support_texts=task.support_texts,
        support_labels=[permutation[y] for y in task.support_labels],
        query_texts=task.query_texts,
        query_labels=[permutation[y] for y in task.query_labels],
    )
    reference = adapted_logits(method, task)
    permuted = adapted_logits(method, relabelled)[:, permutation]
    assert_close(
        permuted, reference, f"{subject}: relabelling the support set did not permute the logits", rtol=1e-3
    )


def check_train_step_learns(subject: Subject) -> None:
    """A learner's train step changes a meta-learned parameter, and with it the predictions on a new task.

    A method with nothing to meta-learn: a train step changes no prediction (parameters it declares
    prediction-invariant may move, but no class decision may).
    """
    method = subject.build()
    task = task_episode()
    invariant = method.prediction_invariant_parameters()
    invariant_values = snapshot(invariant)
    before = adapted_logits(method, task)
    if not method.learns_across_tasks:
        assert not method.meta_learned_parameters(), (
            f"{subject}: says it learns nothing yet has meta-learned parameters"
        )
        method.train_step(training_episode(0))
        after = adapted_logits(method, task)
        assert torch.equal(after.argmax(-1), before.argmax(-1)), (
            f"{subject}: learns nothing across tasks, yet a train step changed predicted classes"
        )
        restore(invariant, invariant_values)
        assert_close(
            adapted_logits(method, task),
            before,
            f"{subject}: learns nothing across tasks, yet a train step changed the predictions",
        )
        return
    learned = method.meta_learned_parameters()
    learned_values = snapshot(learned)
    for step in range(MAX_STEPS_TO_FIRST_UPDATE):
        method.train_step(training_episode(step))
        if any(not torch.equal(p.detach(), v) for p, v in zip(learned, learned_values, strict=True)):
            break
    else:
        raise AssertionError(
            f"{subject}: {MAX_STEPS_TO_FIRST_UPDATE} train steps changed no meta-learned parameter"
        )
    restore(invariant, invariant_values)  # what remains is the meta-learned parameters' doing
    change = changes(before, adapted_logits(method, task))
    assert change > 1e-6, (
        f"{subject}: a train step changed meta-learned parameters but no prediction ({change:.2g})"
    )


def parameter_groups(method: Method) -> dict[str, list[torch.nn.Parameter]]:
    """Meta-learned parameters by the top-level module that owns them; bare parameters form one group."""
    learned = {id(parameter) for parameter in method.meta_learned_parameters()}
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, parameter in method.named_parameters():
        if id(parameter) in learned:
            owner = name.split(".")[0] if "." in name else "(the method's own parameters)"
            groups.setdefault(owner, []).append(parameter)
    return groups


def perturb(parameters: Sequence[torch.nn.Parameter], generator: torch.Generator) -> None:
    """Add noise of about each parameter's own spread (at least 0.1: zero-initialised parts move too)."""
    with torch.no_grad():
        for parameter in parameters:
            spread = 0.1 + parameter.detach().float().std(correction=0).item()
            parameter.add_(torch.randn(parameter.shape, generator=generator) * spread)


def check_meta_learned_parameters_are_declared_honestly(subject: Subject) -> None:
    """``meta_learned_parameters()`` is what can change a prediction, and nothing else is.

    Every part that meta-training changes must reach a prediction (no dead generator, no head that
    only serves training); parts declared ``prediction_invariant_parameters`` (a temperature, a head
    over the meta-train classes) must not change which class a query gets.
    """
    method = prepared(subject)
    task = task_episode()
    reference = adapted_logits(method, task)
    generator = torch.Generator().manual_seed(0)
    dead = []
    for owner, parameters in parameter_groups(method).items():
        values = snapshot(parameters)
        perturb(parameters, generator)
        if changes(reference, adapted_logits(method, task)) <= 1e-6:
            dead.append(owner)
        restore(parameters, values)
    assert not dead, (
        f"{subject}: meta-learned parameters that no prediction depends on: {dead} (if they only serve "
        f"training, declare them in prediction_invariant_parameters)"
    )
    perturb(method.prediction_invariant_parameters(), generator)
    assert torch.equal(adapted_logits(method, task).argmax(-1), reference.argmax(-1)), (
        f"{subject}: perturbing its prediction-invariant parameters changed predicted classes"
    )


def check_same_seed_same_predictions(subject: Subject) -> None:
    """Same seed, same meta-training, same episode: the same predictions; adapting twice, too."""
    task = task_episode()
    runs = []
    for _ in range(2):
        method = prepared(subject, seed=3)
        runs.append(adapted_logits(method, task, seed=5))
    assert_close(runs[1], runs[0], f"{subject}: two runs with the same seed predict differently", rtol=1e-6)
    assert_close(
        adapted_logits(method, task, seed=5),
        runs[1],
        f"{subject}: adapting twice to the same episode predicts differently",
        rtol=1e-6,
    )


GENERIC_CHECKS: tuple[Check, ...] = (
    check_adapt_uses_support_only,
    check_adapt_leaves_state_unchanged,
    check_adapt_fits_support,
    check_relabelling_permutes_logits,
    check_train_step_learns,
    check_meta_learned_parameters_are_declared_honestly,
    check_same_seed_same_predictions,
)


# ----- method-specific checks --------------------------------------------------------------------
def two_sentences() -> tuple[str, str]:
    rng = random.Random(11)
    return topic_sentences(TASK_TOPICS[0], 1, rng)[0], topic_sentences(TASK_TOPICS[1], 1, rng)[0]


IDENTITY_TOLERANCE = 1e-5  # float32 keeps the identity below about 1e-7; a learned term breaks it by far more


def distance_identity_violation(method: Method) -> tuple[float, torch.Tensor]:
    """How far the logits are from a squared distance to the class mean: (relative violation, logits).

    Classes A = {a}, B = {b}, AB = {a, b}. Scores −s‖f(x) − c_k‖² (+ any shift common to a query's
    scores) give, for the query a, score_A − score_AB = (score_A − score_B) / 4, since a is at
    distance ‖a − b‖/2 from the mean of AB; likewise for b. Plain or cosine distances, or a vote
    over examples, break it.
    """
    a, b = two_sentences()
    episode = Episode(["A", "B", "AB"], [a, b, a, b], [0, 1, 2, 2], [], [])
    logits = adapted_logits(method, episode, [a, b]).double()
    gaps = []
    for row, own, other in ((0, 0, 1), (1, 1, 0)):
        full = logits[row, own] - logits[row, other]
        assert full > 0, (
            f"{method.card.name}: a support example scores its own class below another ({logits})"
        )
        gaps.append(((logits[row, own] - logits[row, 2]) - full / 4).abs().item() / full.item())
    return max(gaps), logits


def duplicated_support(episode: Episode, label: int | None = None) -> Episode:
    """Every support example of class ``label`` (of every class if None) appears twice."""
    extra = [
        (t, y)
        for t, y in zip(episode.support_texts, episode.support_labels, strict=True)
        if label in (None, y)
    ]
    return dataclasses.replace(
        episode,
        support_texts=episode.support_texts + [t for t, _ in extra],
        support_labels=episode.support_labels + [y for _, y in extra],
    )


@method_check("protonet", "dann", "multitask", "distillation", "mlm_pretrain")
def check_nearest_class_mean(subject: Subject) -> None:
    """Scores are negative squared Euclidean distances to class means (or cosines to them)."""
    method = prepared(subject)
    task = task_episode()
    assert_close(
        adapted_logits(method, duplicated_support(task)),
        adapted_logits(method, task),
        f"{subject}: repeating every support example changed the logits; class means would not change",
    )
    if getattr(method.options, "distance", "euclidean") != "euclidean":
        return
    violation, logits = distance_identity_violation(method)
    assert violation < IDENTITY_TOLERANCE, (
        f"{subject}: logits are not a squared distance to the class mean (off by {violation:.2g})"
    )
    top = logits.max().item()
    assert top <= 1e-4 * max(1.0, logits.abs().max().item()), (
        f"{subject}: a negative squared distance is positive"
    )


@method_check("matching")
def check_votes_count_support_examples(subject: Subject) -> None:
    """Matching Networks vote: p(k|x) = Σ_{i∈S_k} a(x, x_i). Showing class 0's examples twice doubles
    its share of the attention, so its log-odds against every class rise by exactly log 2 (class
    means would not move); with full-context embeddings the examples also see each other, so the
    rise is only required to be there."""
    method = prepared(subject)
    task = task_episode()
    before = adapted_logits(method, task)
    after = adapted_logits(method, duplicated_support(task, label=0))
    rise = (after[:, :1] - after) - (before[:, :1] - before)  # log-odds of class 0 against each class
    if getattr(method.options, "full_context", False):
        assert rise[:, 1:].abs().max() > 1e-4, f"{subject}: repeating class 0's examples left the votes alone"
        return
    expected = torch.full_like(rise[:, 1:], math.log(2))
    assert_close(
        rise[:, 1:],
        expected,
        f"{subject}: repeating class 0's examples did not add log 2 to its log-odds",
        rtol=1e-3,
    )


@method_check("relation", "induction")
def check_scores_class_by_class(subject: Subject) -> None:
    """A relation score compares a query with one class: other classes' support cannot move it."""
    method = prepared(subject)
    task = task_episode()
    before = adapted_logits(method, task)
    changed_support = replace_support(task, 2, other_sentences(TASK_TOPICS[2], 3, task.support_texts))
    after = adapted_logits(method, changed_support)
    assert_close(
        after[:, :2], before[:, :2], f"{subject}: class 2's support changed the scores of classes 0 and 1"
    )
    assert (after[:, 2] - before[:, 2]).abs().max() > 1e-6, (
        f"{subject}: class 2's support does not reach its score"
    )


@method_check("relation")
def check_comparison_is_learned(subject: Subject) -> None:
    """The relation module reaches the scores: once its weights move, they are no longer a fixed distance.

    Its correction starts at zero (the untrained method is a prototype classifier), and 20 steps on a
    tiny task move it little, so the weights are also nudged here, standing in for longer training.
    """
    method = prepared(subject, steps=20)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in method.relation_module.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator).to(parameter))
    violation, _ = distance_identity_violation(method)
    assert violation > IDENTITY_TOLERANCE, (
        f"{subject}: after meta-training the scores are still a squared distance to the class mean "
        f"(off by {violation:.2g}): the learned comparison has no effect"
    )


@method_check("induction")
def check_routing_shapes_class_vectors(subject: Subject) -> None:
    """Dynamic routing re-weights a class's shots by agreement: its iterations change the scores."""
    method = subject.build()
    iterations = method.options.routing_iterations
    other = subject.build(routing_iterations=1 if iterations != 1 else 3)
    task = task_episode()
    change = (adapted_logits(other, task) - adapted_logits(method, task)).abs().max().item()
    assert change > 1e-6, f"{subject}: routing iterations do not change the class vectors (a plain mean?)"


@method_check("hypernetwork")
def check_generated_classifier_departs_from_class_means(subject: Subject) -> None:
    """After meta-training, the generated (w_k, b_k) differ from the nearest-class-mean classifier."""
    method = prepared(subject, steps=5)
    violation, _ = distance_identity_violation(method)
    assert violation > IDENTITY_TOLERANCE, (
        f"{subject}: after meta-training the task model is still the class-mean classifier (off by "
        f"{violation:.2g}): the generated classifier has no effect"
    )


@method_check("hypernetwork")
def check_modulation_summarises_whole_task(subject: Subject) -> None:
    """FiLM (γ, β) comes from a summary of the whole support set: class 2's support moves the
    log-odds between classes 0 and 1 (it cannot in a class-by-class classifier)."""
    method = prepared(subject, steps=5)
    if not getattr(method.options, "film", True):
        not_applicable(f"{subject} generates no FiLM modulation")
    task = task_episode()
    before = adapted_logits(method, task)
    after = adapted_logits(
        method, replace_support(task, 2, other_sentences(TASK_TOPICS[2], 3, task.support_texts))
    )
    change = ((after[:, 0] - after[:, 1]) - (before[:, 0] - before[:, 1])).abs().max().item()
    assert change > 1e-6, f"{subject}: the generated modulation ignores the task summary ({change:.2g})"


def assert_more_steps_lower_support_loss(
    subject: Subject, option: str, few: int, many: int, **overrides
) -> None:
    """Same weights, same task: ``many`` adaptation steps fit the support set better than ``few``."""
    task = task_episode()
    loss_few = support_loss(prepared(subject, **{option: few}, **overrides), task)
    loss_many = support_loss(prepared(subject, **{option: many}, **overrides), task)
    assert loss_many < loss_few - 0.01, (
        f"{subject}: {many} adaptation steps left a support loss of {loss_many:.4f}, {few} left "
        f"{loss_few:.4f}: the updates do not descend the support loss"
    )
    assert loss_many < math.log(task.n_way), (
        f"{subject}: support loss {loss_many:.3f} after adaptation is not below chance"
    )


@method_check("finetune")
def check_finetuning_lowers_support_loss(subject: Subject) -> None:
    assert_more_steps_lower_support_loss(subject, "adapt_steps", 1, 20)


@method_check("maml", "fomaml", "anil", "meta_transfer")
def check_inner_loop_lowers_support_loss(subject: Subject) -> None:
    """From a zero output layer and with small steps, so that one step cannot already fit the easy task
    (Proto-MAML's start does): the inner loop, not its tuning, is under test."""
    assert_more_steps_lower_support_loss(subject, "test_inner_steps", 1, 5, head_init="zero", inner_lr=0.01)


@method_check("lstm_meta_learner")
def check_learned_optimiser_lowers_support_loss(subject: Subject) -> None:
    assert_more_steps_lower_support_loss(subject, "inner_steps", 1, 5)


@method_check("maml", "fomaml")
def check_inner_loop_adapts_the_body(subject: Subject) -> None:
    """MAML's inner loop also adapts trainable encoder layers: their inner step size matters."""
    method = subject.build()
    if method.encoder.is_frozen():
        not_applicable(f"{subject}: a frozen encoder has no layer for the inner loop to adapt")
    task = task_episode()
    step = method.options.encoder_inner_lr
    other = subject.build(encoder_inner_lr=0.0 if step else 0.01)
    change = (adapted_logits(other, task) - adapted_logits(method, task)).abs().max().item()
    assert change > 1e-6, f"{subject}: the inner loop leaves the encoder layers alone"


@method_check("anil")
def check_inner_loop_adapts_only_the_head(subject: Subject) -> None:
    """ANIL's inner loop adapts the output layer only: an encoder inner step size cannot matter."""
    method = subject.build()
    task = task_episode()
    other = subject.build(encoder_inner_lr=0.0 if method.options.encoder_inner_lr else 0.01)
    assert_close(
        adapted_logits(other, task),
        adapted_logits(method, task),
        f"{subject}: the inner loop adapts more than the output layer",
    )


@method_check("maml", "fomaml", "anil")
def check_meta_gradient_order(subject: Subject) -> None:
    """Second-order and first-order meta-gradients differ: MAML differentiates through the inner loop."""
    first, second = (subject.build(first_order=order, meta_batch=1) for order in (True, False))
    if not first.learns_across_tasks:
        not_applicable(f"{subject} meta-learns nothing here")
    task = task_episode()
    for method in (first, second):
        meta_train(method, 1)
    change = changes(adapted_logits(first, task), adapted_logits(second, task))
    assert change > 1e-7, f"{subject}: first- and second-order meta-updates are identical"


@method_check("meta_transfer")
def check_starts_as_plain_transfer(subject: Subject) -> None:
    """Before meta-training (γ = 1, β = 0) meta-transfer is ANIL on the frozen encoder."""
    from metanlp.methods.registry import get_method_class

    method = subject.build()
    anil_class = get_method_class("anil")
    shared = {option.name for option in dataclasses.fields(anil_class.Options)}
    options = {k: v for k, v in dataclasses.asdict(method.options).items() if k in shared}
    anil = anil_class(
        copy.deepcopy(method.encoder), build_options(anil_class.Options, {**options, "finetune": "frozen"})
    )
    if anil.learns_across_tasks:
        not_applicable(f"{subject}: ANIL with these options has its own meta-learned layer")
    task = task_episode()
    assert_close(
        adapted_logits(method, task),
        adapted_logits(anil, task),
        f"{subject}: untrained scale and shift are not the identity",
    )


@method_check("mann")
def check_memory_is_read(subject: Subject) -> None:
    """Queries are answered from the external memory: blanking it changes the answers."""
    method = prepared(subject)
    task = task_episode()
    seed_all(0)
    task_model = method.adapt(task)
    with torch.no_grad():
        before = task_model.predict_logits(task.query_texts)
        task_model.state.memory = torch.full_like(
            task_model.state.memory, task_model.state.memory.mean().item()
        )
        after = task_model.predict_logits(task.query_texts)
    assert (after - before).abs().max() > 1e-6, (
        f"{subject}: the answers do not depend on the memory's contents"
    )


@method_check("dann")
def check_reversed_domain_gradient_reaches_features(subject: Subject) -> None:
    """With reversal the domain classifier's gradient reaches the features; without, it cannot."""
    task = task_episode()
    logits = {}
    for reversal in (True, False):
        method = subject.build(reversal=reversal, lambda_schedule=False, max_lambda=1.0)
        method.train_step(training_episode(0))
        logits[reversal] = adapted_logits(method, task)
    change = changes(logits[False], logits[True])
    assert change > 1e-6, f"{subject}: reversing the domain gradient changed nothing in the features"


@method_check("multitask")
def check_auxiliary_tasks_shape_shared_features(subject: Subject) -> None:
    """The auxiliary tasks' heads train the shared layers too."""
    method = subject.build()
    if not method.options.tasks.strip():
        not_applicable(f"{subject} has no auxiliary task")
    alone = subject.build(tasks="")
    task = task_episode()
    for model in (method, alone):
        model.train_step(training_episode(0))
    change = changes(adapted_logits(alone, task), adapted_logits(method, task))
    assert change > 1e-6, f"{subject}: the auxiliary tasks did not change the shared features"


@method_check("distillation")
def check_teacher_moves_student(subject: Subject) -> None:
    """With α = 0 the student learns from the teacher's soft labels alone."""
    method = subject.build(alpha=0.0)
    if not method.learns_across_tasks:
        not_applicable(
            f"{subject}: the student's encoder is frozen, so nothing it learns reaches a prediction"
        )
    task = task_episode()
    before = adapted_logits(method, task)
    method.train_step(training_episode(0))
    change = changes(before, adapted_logits(method, task))
    assert change > 1e-6, f"{subject}: the teacher's soft labels did not move the student"


# ----- expectations of the built-in methods --------------------------------------------------------
declare_expectations(
    "mann",
    Expectations(
        reason=(
            "MANN reads each label as a one-hot input of a learned LSTM, so label indices are not "
            "interchangeable before long meta-training (the paper shuffles labels over 100,000 episodes); "
            "untrained, or after a few hundred episodes, it is at chance"
        ),
        exempt={
            "check_relabelling_permutes_logits": "labels are inputs to a learned network",
            "check_adapt_fits_support": "needs thousands of meta-training episodes",
        },
    ),
)
declare_expectations(
    "finetune",
    Expectations(
        reason="20 per-task steps instead of 100: on a trainable encoder each step fine-tunes a copy of it",
        options={"adapt_steps": 20},
    ),
)
declare_expectations(
    "distillation",
    Expectations(
        reason="its default teacher is pretrained MiniLM; the from-scratch teacher keeps the checks fast",
        options={"teacher": "scratch"},
    ),
)


# ----- running the checks ------------------------------------------------------------------------
def method_checks(subject: Subject) -> list[Check]:
    """The generic checks and the method's own, less those its expectations exempt it from."""
    exempt = expectations_of(subject.name).exempt
    return [
        check for check in (*GENERIC_CHECKS, *specific_checks(subject.name)) if check.__name__ not in exempt
    ]


def check_method(method_class: type[Method], encoder: str = "scratch", options: dict | None = None) -> None:
    """Run every check on ``method_class``; raise ``AssertionError`` at the first that fails."""
    subject = Subject(method_class, encoder, options or {})
    for check in method_checks(subject):
        try:
            check(subject)
        except unittest.SkipTest:
            continue
