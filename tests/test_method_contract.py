"""The common conformance test: every registered method honours the ``Method`` contract, in form and meaning.

Form: metrics, shapes, inner-step reports, a save/load round trip, the engine. Meaning: the checks
of ``metanlp.methods.conformance`` (generic ones and each method's own), parametrized over the
registry × encoder settings × checks like scikit-learn's ``check_estimator``, so a new method is
covered the moment it registers.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from metanlp.methods import REQUIRED_METRICS, create_method, get_method_class, method_names
from metanlp.methods.conformance import (
    GENERIC_CHECKS,
    Subject,
    encoder_settings,
    expectations_of,
    method_checks,
    specific_checks,
)
from metanlp.methods.options import OptionError

METHODS = method_names()

#: Real bugs the conformance checks found, kept visible until fixed:
#: (method, encoder setting or "*", check) → what is wrong. ``strict``: the test fails as soon as the
#: bug is fixed, so the entry cannot outlive it.
KNOWN_BUGS: dict[tuple[str, str, str], str] = {}


def conformance_cases() -> list:
    cases = []
    for name in METHODS:
        method_class = get_method_class(name)
        for encoder in encoder_settings(method_class):
            for check in method_checks(Subject(method_class, encoder)):
                bug = KNOWN_BUGS.get((name, encoder, check.__name__)) or KNOWN_BUGS.get(
                    (name, "*", check.__name__)
                )
                marks = [pytest.mark.xfail(reason=bug, strict=True, raises=AssertionError)] if bug else []
                cases.append(
                    pytest.param(name, encoder, check, id=f"{name}-{encoder}-{check.__name__}", marks=marks)
                )
    return cases


@pytest.mark.parametrize("name, encoder, check", conformance_cases())
def test_conformance(name, encoder, check):
    check(Subject(get_method_class(name), encoder))


def test_registry_has_the_reference_methods():
    assert {"finetune", "protonet"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_has_a_check_of_its_own_mechanism(name):
    assert specific_checks(name), (
        f"{name} has no method-specific check: register one with @method_check({name!r})"
    )


@pytest.mark.parametrize("name", METHODS)
def test_expectations_give_reasons_and_name_real_checks(name):
    expectations = expectations_of(name)
    known = {check.__name__ for check in (*GENERIC_CHECKS, *specific_checks(name))}
    assert set(expectations.exempt) <= known, f"{name} is exempt from checks that do not exist"
    assert all(reason.strip() for reason in expectations.exempt.values())
    if expectations.exempt or expectations.options or expectations.fit_train_steps:
        assert expectations.reason.strip()


@pytest.mark.parametrize("name", METHODS)
def test_card_and_options(name):
    method_class = get_method_class(name)
    card = method_class.card
    assert card.name == name
    for field in ("title", "family", "summary", "formula", "paper"):
        assert getattr(card, field).strip(), f"{name} card lacks {field}"
    options = method_class.Options()
    if hasattr(options, "validate"):
        options.validate()
    with pytest.raises(OptionError, match="unknown option"):
        create_method(name, None, {"no_such_option": 1})


@pytest.mark.parametrize("name", METHODS)
def test_contract(name, tiny_encoder, clinc_episodes, tmp_path):
    """Form on real text: metrics, inner-step reports, shapes, and a save/load round trip."""
    from metanlp.engine.auxiliary import build_method
    from metanlp.engine.checkpoint import load_method, save_method

    torch.manual_seed(0)
    example = getattr(get_method_class(name), "example_options", {})
    method = build_method(name, tiny_encoder, {**example, **expectations_of(name).options}).to("cpu")
    for episode in clinc_episodes[:2]:
        metrics = method.train_step(episode)
        for key in REQUIRED_METRICS:
            assert key in metrics, f"{name}.train_step lacks {key}"
            assert math.isfinite(metrics[key]), f"{name}.train_step {key} = {metrics[key]}"
        assert 0.0 <= metrics["query_accuracy"] <= 1.0  # each method computes its own

    episode = clinc_episodes[2]
    inner_steps: list[dict] = []
    task_model = method.adapt(episode, on_inner_step=inner_steps.append)
    assert inner_steps, f"{name}.adapt reported no inner step"
    assert all(math.isfinite(step["support_loss"]) for step in inner_steps)
    logits = task_model.predict_logits(episode.query_texts)
    assert logits.shape == (len(episode.query_texts), episode.n_way)
    assert torch.isfinite(logits).all(), f"{name} predicts non-finite logits"
    assert math.isfinite(method.evaluate_episode(episode)["query_loss"])

    # Save/load round trip: the reloaded method adapts and predicts identically.
    folder = save_method(method, tmp_path / "checkpoint")
    reloaded = load_method(folder, "cpu")
    torch.manual_seed(1)
    before = method.adapt(episode).predict_logits(episode.query_texts)
    torch.manual_seed(1)
    after = reloaded.adapt(episode).predict_logits(episode.query_texts)
    assert torch.allclose(before, after, atol=1e-5), f"{name} changed after save/load"
    assert dataclasses.asdict(reloaded.options) == dataclasses.asdict(method.options)


@pytest.mark.parametrize(
    "name, encoder",
    [(name, encoder) for name in METHODS for encoder in encoder_settings(get_method_class(name))],
)
def test_runs_through_the_engine(name, encoder):
    """The engine meta-trains exactly the configurations that learn across tasks, and says when it skips."""
    from metanlp.engine import RunConfig, run_training
    from tests.conftest import TINY_ENCODER

    subject = Subject(get_method_class(name), encoder)
    events: list[dict] = []
    config = RunConfig(
        method=name,
        dataset="clinc150",
        n_way=3,
        k_shot=1,
        n_query=2,
        train_steps=2,
        eval_episodes=2,
        encoder="scratch",
        encoder_options=TINY_ENCODER,
        device="cpu",
        method_options=subject.method_options(),
    )
    result = run_training(config, on_event=events.append)
    steps = [e for e in events if e["event"] == "step" and e["phase"] == "train"]
    skipped = [e for e in events if e["event"] == "no_meta_training"]
    if result.method.learns_across_tasks:
        assert [e["step"] for e in steps] == [1, 2] and not skipped
        assert all(key in steps[0] for key in REQUIRED_METRICS)
    else:
        assert not result.method.meta_learned_parameters()
        assert not steps and len(skipped) == 1 and skipped[0]["requested_steps"] == 2
    assert result.evaluation is not None and result.evaluation.episodes == 2
    assert any(e["event"] == "evaluation" for e in events)


def test_methods_never_import_streamlit():
    code = "import metanlp.methods as m, sys; m.method_names(); print('streamlit' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "False"
