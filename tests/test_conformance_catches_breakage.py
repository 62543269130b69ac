"""The conformance checks check meaning: each deliberately broken copy of a method fails them.

Every broken copy is a subclass that overrides one piece and is never registered: it keeps its
parent's card, so the parent's own mechanism checks apply to it. Each case runs one check (which
``method_checks`` includes for that copy) on the broken copy, where it must raise, and on the
intact parent, where it must pass — so the failure is the breakage's doing, not the check's.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from unittest import mock

import pytest
import torch
from torch import nn

from metanlp.data.types import Episode
from metanlp.methods import conformance
from metanlp.methods.conformance import Subject, method_checks
from metanlp.methods.dann import DANN
from metanlp.methods.finetune import FineTune
from metanlp.methods.hypernetwork import HyperNetwork
from metanlp.methods.induction import InductionNetwork
from metanlp.methods.maml import MAML
from metanlp.methods.matching import MatchingNetwork
from metanlp.methods.protonet import ProtoNet, class_prototypes
from metanlp.methods.relation import RelationNetwork


class MatchingByClassMeans(MatchingNetwork):
    """A metric method that ignores its own mechanism: Matching Networks run on class means, no vote."""

    def scorer(self, support, labels, n_way):
        means = class_prototypes(support, labels, n_way)
        return super().scorer(means, torch.arange(n_way, device=support.device), n_way)


def maximising(optimizer_class):
    """An optimiser that climbs its loss instead of descending it."""
    return lambda *args, **kwargs: optimizer_class(*args, **kwargs, maximize=True)


class GradientAscentFineTune(FineTune):
    """A per-task fine-tuning whose updates go the wrong way (gradient ascent on the support loss)."""

    def adapt(self, episode, on_inner_step=None):
        optimizers = {name: maximising(getattr(torch.optim, name)) for name in ("Adam", "AdamW", "SGD")}
        with mock.patch.multiple(torch.optim, **optimizers):
            return super().adapt(episode, on_inner_step)


class Silenced(nn.Module):
    """Runs a module and throws its output away (its parameters stay in the graph, with zero gradient)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return 0.0 * self.module(inputs)


class HyperNetworkIgnoringItsGenerator(HyperNetwork):
    """A generator whose output is ignored: the task's classifier is the class-mean one."""

    def __init__(self, encoder, options) -> None:
        super().__init__(encoder, options)
        self.classifier_generator = Silenced(self.classifier_generator)


class RelationWithoutComparison(RelationNetwork):
    """The learned relation module's output is ignored: only the fixed distance is left."""

    def __init__(self, encoder, options) -> None:
        super().__init__(encoder, options)
        self.relation_module = Silenced(self.relation_module)


class InductionWithoutRouting(InductionNetwork):
    """Class vectors from a single routing pass (a squashed mean), whatever ``routing_iterations`` says."""

    def __init__(self, encoder, options) -> None:
        super().__init__(encoder, dataclasses.replace(options, routing_iterations=1))


class ProtoNetPeekingAtQueries(ProtoNet):
    """An ``adapt`` that looks at the query set: queries join the prototypes with their labels."""

    def adapt(self, episode, on_inner_step=None):
        peeked = dataclasses.replace(
            episode,
            support_texts=episode.support_texts + episode.query_texts,
            support_labels=episode.support_labels + episode.query_labels,
        )
        return super().adapt(peeked, on_inner_step)


class ProtoNetLearningWhileAdapting(ProtoNet):
    """An ``adapt`` that mutates the method: it takes a training step on the task's support set."""

    def adapt(self, episode, on_inner_step=None):
        self.train_step(
            dataclasses.replace(
                episode, query_texts=episode.support_texts, query_labels=episode.support_labels
            )
        )
        return super().adapt(episode, on_inner_step)


class ProtoNetThatNeverLearns(ProtoNet):
    """A ``train_step`` that changes nothing: it trains a throwaway copy and reports its metrics."""

    def train_step(self, episode):
        return ProtoNet.train_step(copy.deepcopy(self), episode)


class ProtoNetFavouringClassZero(ProtoNet):
    """Label index 0 is special: a fixed bonus on its score."""

    def scorer(self, support, labels, n_way):
        score = super().scorer(support, labels, n_way)
        bonus = torch.zeros(n_way, device=support.device)
        bonus[0] = 0.5
        return lambda queries: score(queries) + bonus


class ProtoNetWithUnseededNoise(ProtoNet):
    """Randomness from outside the seeded generators: runs with the same seed disagree."""

    def scorer(self, support, labels, n_way):
        score = super().scorer(support, labels, n_way)
        noise = torch.tensor([random.SystemRandom().gauss(0.0, 0.1) for _ in range(n_way)])
        return lambda queries: score(queries) + noise.to(queries.device)


class ProtoNetWithPlainDistance(ProtoNet):
    """Euclidean distance instead of its square: still a nearest-mean classifier, not ProtoNet's."""

    def scorer(self, support, labels, n_way):
        score = super().scorer(support, labels, n_way)
        return lambda queries: -(-score(queries)).clamp(min=0).sqrt()


class MAMLWithOneInnerStep(MAML):
    """An inner loop that stops after one step, whatever ``test_inner_steps`` asks for."""

    def adapt(self, episode, on_inner_step=None):
        options = self.options
        self.options = dataclasses.replace(options, test_inner_steps=1, inner_steps=1)
        try:
            return super().adapt(episode, on_inner_step)
        finally:
            self.options = options


class DANNWithoutReversal(DANN):
    """The domain classifier only watches: its gradient never reaches the features."""

    def __init__(self, encoder, options) -> None:
        super().__init__(encoder, dataclasses.replace(options, reversal=False))


BREAKAGES = [
    # (broken copy, encoder setting, the check that must catch it)
    (MatchingByClassMeans, "frozen", "check_votes_count_support_examples"),
    (GradientAscentFineTune, "frozen", "check_adapt_fits_support"),
    (GradientAscentFineTune, "frozen", "check_finetuning_lowers_support_loss"),
    (HyperNetworkIgnoringItsGenerator, "frozen", "check_generated_classifier_departs_from_class_means"),
    (HyperNetworkIgnoringItsGenerator, "frozen", "check_meta_learned_parameters_are_declared_honestly"),
    (RelationWithoutComparison, "frozen", "check_comparison_is_learned"),
    (InductionWithoutRouting, "frozen", "check_routing_shapes_class_vectors"),
    (ProtoNetPeekingAtQueries, "scratch", "check_adapt_uses_support_only"),
    (ProtoNetLearningWhileAdapting, "scratch", "check_adapt_leaves_state_unchanged"),
    (ProtoNetThatNeverLearns, "scratch", "check_train_step_learns"),
    (ProtoNetFavouringClassZero, "frozen", "check_relabelling_permutes_logits"),
    (ProtoNetWithUnseededNoise, "frozen", "check_same_seed_same_predictions"),
    (ProtoNetWithPlainDistance, "frozen", "check_nearest_class_mean"),
    (MAMLWithOneInnerStep, "frozen", "check_inner_loop_lowers_support_loss"),
    (DANNWithoutReversal, "frozen", "check_reversed_domain_gradient_reaches_features"),
]


@pytest.mark.parametrize(
    "broken, encoder, check_name", BREAKAGES, ids=[f"{case[0].__name__}-{case[2]}" for case in BREAKAGES]
)
def test_conformance_catches_breakage(broken, encoder, check_name):
    check = getattr(conformance, check_name)
    intact = Subject(broken.__mro__[1], encoder)
    assert check in method_checks(intact) and check in method_checks(Subject(broken, encoder))
    check(intact)
    with pytest.raises(AssertionError):
        check(Subject(broken, encoder))


def test_a_broken_copy_fails_the_whole_suite():
    """``check_method`` runs every check: one broken piece is enough to fail it."""
    with pytest.raises(AssertionError, match="adapt must use the support set only"):
        conformance.check_method(ProtoNetPeekingAtQueries, encoder="frozen")
    conformance.check_method(ProtoNet, encoder="frozen")


def test_episode_helpers_keep_support_and_queries_apart():
    """The synthetic task the checks rely on: distinct sentences, each made of its own topic's words."""
    episode = conformance.task_episode()
    assert isinstance(episode, Episode) and episode.n_way == 3
    assert not set(episode.support_texts) & set(episode.query_texts)
    for text, label in zip(
        episode.support_texts + episode.query_texts,
        episode.support_labels + episode.query_labels,
        strict=True,
    ):
        assert set(text.split()) <= set(conformance.TOPICS[episode.classes[label]].split())
    training = {conformance.training_episode(index).classes[0] for index in range(10)}
    assert not training & set(episode.classes)
