"""The dashboard is loopback-only by default; served on a network, changing things needs the token."""

from __future__ import annotations

import pytest
import tomllib
from streamlit import config as streamlit_config

from metanlp.dashboard.access import TOKEN_VARIABLE, is_loopback
from tests.test_pages import ROOT, add_finished_run, page_test


def test_default_config_binds_loopback_only():
    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert is_loopback(settings["server"]["address"])


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("", False), (None, False), ("0.0.0.0", False), ("192.168.1.20", False), ("::", False), ("lab-box", False)],
)
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


@pytest.fixture()
def network_served(runs_dir, monkeypatch):
    """The dashboard as if started with --server.address 0.0.0.0."""
    before = streamlit_config.get_option("server.address")
    streamlit_config.set_option("server.address", "0.0.0.0")
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    yield runs_dir
    streamlit_config.set_option("server.address", before)




def launch_buttons(app):
    return [button for button in app.button if button.label == "Launch"]


def test_on_loopback_the_train_page_launches_without_a_token(runs_dir):
    app = page_test("train")
    app.run()
    assert not app.exception
    assert launch_buttons(app)


def test_on_a_network_without_a_token_launching_is_refused(network_served):
    app = page_test("train")
    app.run()
    assert not app.exception
    assert not launch_buttons(app), "the Train page must not offer Launch to an unauthenticated network user"
    assert any(TOKEN_VARIABLE in error.value for error in app.error)
    live = page_test("live")
    live.run()
    assert not [button for button in live.button if button.label.startswith("Adapt")]


def test_on_a_network_the_token_unlocks_launching(network_served, monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, "s3cret-token")
    app = page_test("train")
    app.run()
    assert not launch_buttons(app)
    token = next(box for box in app.text_input if box.label.startswith("Access token"))
    token.set_value("wrong").run()
    assert not launch_buttons(app)
    assert any("not the access token" in error.value for error in app.error)
    token = next(box for box in app.text_input if box.label.startswith("Access token"))
    token.set_value("s3cret-token").run()
    assert not app.exception
    assert launch_buttons(app)


def test_on_a_network_without_a_token_runs_can_be_watched_but_not_deleted(network_served):
    add_finished_run(network_served)
    app = page_test("runs")
    app.run()
    assert not app.exception
    assert app.get("plotly_chart"), "the curves stay visible"
    delete = next(button for button in app.button if button.label == "Delete")
    assert delete.disabled
