"""The dashboard in a real browser: launch a run, watch its live curve, open its attention.

Starts ``streamlit run app.py`` on a free loopback port with a temporary runs folder and drives
Debian's headless Chromium through Playwright (never ``playwright install``: nothing is
downloaded). Every wait polls an explicit condition with a generous deadline, so a slow shared
machine makes the test slower, not flaky. Screenshots of every page go to ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_SECONDS = 90
PAGE_SECONDS = 120  # first render of a page that loads MiniLM on a busy 2-core machine
VIEWPORT = {"width": 1400, "height": 2600}  # Streamlit scrolls inside the page: screenshots see the viewport

# JavaScript: the largest number of points in any line trace of the first Plotly chart on the page.
# ``_fullData`` holds Plotly's decoded traces (``data`` may carry numbers as base64 blocks).
CURVE_POINTS = """() => {
  const chart = document.querySelector('.js-plotly-plot');
  const traces = (chart && chart._fullData) || [];
  return Math.max(0, ...traces.filter(t => t.type === 'scatter').map(t => (t.x || []).length || 0));
}"""
HEATMAPS = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .filter(chart => (chart._fullData || []).some(trace => trace.type === 'heatmap')).length"""
BAR_CHARTS = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .filter(chart => (chart._fullData || []).some(trace => trace.type === 'bar')).length"""
HEATMAP_TRACES = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .flatMap(chart => chart._fullData || []).filter(trace => trace.type === 'heatmap').length"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DashboardServer:
    """``streamlit run app.py`` in a subprocess, headless, on 127.0.0.1 (stopped on exit)."""

    def __init__(self, runs_dir: Path, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "METANLP_RUNS_DIR": str(runs_dir),
            "METANLP_PRELOAD_ENCODERS": "",
            "OMP_NUM_THREADS": "1",
            **(extra_env or {}),
        }
        command = [
            sys.executable, "-m", "streamlit", "run", "app.py",
            "--server.headless", "true",
            "--server.address", "127.0.0.1",
            "--server.port", str(self.port),
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
        ]
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = SERVER_START_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {self.process.returncode}; see {self.log.name}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                if response.read().decode().strip() == "ok":
                    return
            time.sleep(0.3)
        raise TimeoutError(f"streamlit did not become healthy within {timeout} s; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.log.close()


@contextlib.contextmanager
def running_dashboard(runs_dir: Path, log_path: Path, extra_env: dict[str, str] | None = None) -> Iterator[DashboardServer]:
    server = DashboardServer(runs_dir, log_path, extra_env)
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(page, server: DashboardServer, path: str, heading: str) -> None:
    """Go to a page and wait until its title is drawn and no script is running."""
    page.goto(f"{server.url}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for(timeout=PAGE_SECONDS * 1000)
    wait_until_idle(page)


def wait_until_idle(page, timeout: float = PAGE_SECONDS) -> None:
    """Streamlit shows a status widget while a script runs; wait until it has gone for a moment."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 0.8:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the page was still running its script after {timeout} s")


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label``."""
    page.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_until_idle(page)


def type_number(page, label: str, value: int) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(str(value))
    field.press("Enter")
    wait_until_idle(page)


def no_exceptions(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(0.5)  # let charts finish their transition
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def launch_scratch_protonet(page, server: DashboardServer, steps: int = 40, eval_episodes: int = 10) -> float:
    """Fill the Train form for a short from-scratch ProtoNet run and click Launch; returns the click time."""
    open_page(page, server, "Train", "Train a few-shot model")
    choose(page, "Method", "Prototypical Networks")
    choose(page, "Encoder", "From scratch (random init)")
    type_number(page, "Training steps", steps)
    type_number(page, "Test episodes (final evaluation)", eval_episodes)
    launch = page.get_by_role("button", name="Launch")
    assert launch.is_enabled()
    clicked = time.perf_counter()
    launch.click()
    return clicked


@pytest.mark.browser
def test_launch_watch_and_inspect_attention(tmp_path):
    with running_dashboard(tmp_path / "runs", tmp_path / "streamlit.log") as server, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))

        open_page(page, server, "", "metanlp: few-shot NLP with transfer learning and meta-learning")
        no_exceptions(page)
        screenshot(page, "home")

        launch_scratch_protonet(page, server)
        link = page.get_by_role("link", name="Watch it on the Runs page")
        link.wait_for(timeout=PAGE_SECONDS * 1000)
        no_exceptions(page)
        screenshot(page, "train")

        link.click()
        page.get_by_role("heading", name="Runs").first.wait_for(timeout=PAGE_SECONDS * 1000)
        page.wait_for_function(f"({CURVE_POINTS})() >= 2", timeout=PAGE_SECONDS * 1000)
        # The run finishes (training, then evaluation) and the page shows its test accuracy.
        page.get_by_text("Test accuracy").first.wait_for(timeout=PAGE_SECONDS * 1000)
        assert page.evaluate(CURVE_POINTS) >= 2
        wait_until_idle(page)
        no_exceptions(page)
        screenshot(page, "runs")

        open_page(page, server, "Attention", "Attention")
        page.wait_for_function(f"({HEATMAPS})() >= 1", timeout=PAGE_SECONDS * 1000)
        no_exceptions(page)
        screenshot(page, "attention")

        open_page(page, server, "Live_adaptation", "Live adaptation")
        page.get_by_role("button", name="Adapt").click()
        page.get_by_text("Classify new sentences").wait_for(timeout=PAGE_SECONDS * 1000)
        # Attention before and after adaptation: wait for the charts themselves, not for a quiet moment.
        page.wait_for_function(f"({HEATMAP_TRACES})() >= 2", timeout=PAGE_SECONDS * 1000)
        wait_until_idle(page)
        no_exceptions(page)
        screenshot(page, "live_adaptation")

        open_page(page, server, "Episodes", "Episodes")
        page.get_by_text("Queries labelled right").wait_for(timeout=PAGE_SECONDS * 1000)
        no_exceptions(page)
        screenshot(page, "episodes")

        # The Leaderboard reads bench results from the same store the dashboard writes.
        from metanlp.bench import run_bench
        from metanlp.runs import RunStore
        from tests.test_bench import tiny_settings

        assert len(run_bench(tiny_settings(), RunStore(tmp_path / "runs")).computed) == 2
        open_page(page, server, "Leaderboard", "Leaderboard")
        page.wait_for_function(f"({BAR_CHARTS})() >= 1", timeout=PAGE_SECONDS * 1000)
        page.get_by_text("shared episodes").first.wait_for(timeout=PAGE_SECONDS * 1000)
        no_exceptions(page)
        screenshot(page, "leaderboard")

        # Offline means offline: every request of the whole tour went to the dashboard itself.
        outside = sorted({url for url in requested if not url.startswith((server.url, "data:", "blob:"))})
        assert not outside, f"requests left the machine: {outside}"
