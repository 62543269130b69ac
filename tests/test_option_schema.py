"""Method options declare their kind, range and choices; checks, widgets and error fields come from that.

These fail if a range lives only inside ``validate()`` again, if the form goes back to reading
error text to place a message, or if a subclass that changes a default loses its base's declaration.
"""

from __future__ import annotations

import math

import pytest

from metanlp.dashboard import forms
from metanlp.data.registry import load_dataset
from metanlp.methods import get_method_class, method_names
from metanlp.methods import options as options_module
from metanlp.methods.options import OptionError, OptionSpec, build_options, option_specs

ALL_SPECS = [
    pytest.param(method, spec, id=f"{method}.{spec.name}")
    for method in method_names()
    for spec in option_specs(get_method_class(method).Options)
]


def outside(spec: OptionSpec) -> list[float]:
    """Values just past each declared bound (of the option's own kind)."""
    step = 1 if spec.kind == "int" else max(abs(spec.high or spec.low or 1.0) * 0.5, 1e-9)
    values = []
    if spec.low is not None:
        values.append(spec.low - step)
    if spec.high is not None:
        values.append(spec.high + step)
    return values


@pytest.mark.parametrize("method, spec", ALL_SPECS)
def test_every_option_declares_what_it_accepts(method, spec):
    options_class = get_method_class(method).Options
    if spec.kind in ("int", "float"):
        assert spec.low is not None and spec.high is not None, f"{method}.{spec.name} has no declared range"
        assert math.isfinite(spec.low) and math.isfinite(spec.high) and spec.low <= spec.default <= spec.high
        for value in outside(spec):
            with pytest.raises(OptionError) as caught:
                build_options(options_class, {spec.name: value})
            assert caught.value.option == spec.name
    elif spec.kind == "choice":
        assert spec.default in spec.choices
        for choice in spec.choices:  # every declared choice is accepted on its own
            assert getattr(build_options(options_class, {spec.name: choice}), spec.name) == choice
        with pytest.raises(OptionError) as caught:
            build_options(options_class, {spec.name: "no-such-choice"})
        assert caught.value.option == spec.name
    else:
        assert spec.kind in ("bool", "text")


def test_a_subclass_that_changes_a_default_keeps_its_base_declaration():
    specs = {spec.name: spec for spec in option_specs(get_method_class("maml").Options)}
    assert specs["head_init"].kind == "choice" and specs["head_init"].default == "prototype"
    assert set(specs["head_init"].choices) == {"zero", "prototype"}
    assert (specs["meta_batch"].default, specs["meta_batch"].low, specs["meta_batch"].high) == (8, 1, 256)


def test_the_form_places_errors_by_declared_field_not_by_message_text(monkeypatch):
    """Reword every range message: the Train form must still put it beside the right option."""

    def reworded(name, value, low=None, high=None):
        if value != value or (low is not None and value < low) or (high is not None and value > high):
            raise OptionError("that value will not do", name)

    monkeypatch.setattr(options_module, "check_range", reworded)
    values = {
        "method": "protonet", "dataset": "reuters", "n_way": 5, "k_shot": 1, "n_query": 5, "train_steps": 10,
        "eval_episodes": 5, "encoder": "scratch", "seed": 0, "device": "cpu", "method_options": {"scale": 1e9},
    }
    result = forms.validate_run_form(values, load_dataset("reuters"))
    assert result.errors == {"option:scale": "that value will not do"}


def test_widget_specs_come_from_the_declaration():
    """The dashboard reads choices and ranges from the schema (no bogus value validated to list them)."""
    assert forms.option_specs("relation") == option_specs(get_method_class("relation").Options)
    specs = {spec.name: spec for spec in forms.option_specs("protonet")}
    assert specs["head"].choices and specs["lr"].high == 1.0
