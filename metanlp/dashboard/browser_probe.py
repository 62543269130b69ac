"""Drive the dashboard in a real browser: shared by the browser test and the dashboard latency study.

Starts ``streamlit run app.py`` (from a source checkout) on a free loopback port with its own
runs folder and drives Debian's headless Chromium through Playwright (never ``playwright
install``: nothing is downloaded). Every wait polls an explicit condition with a generous
deadline, so a slow shared machine makes a measurement slower, not flaky. Playwright is imported
only when a browser starts, so the rest of metanlp never needs it.
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

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the folder of app.py in a source checkout
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DashboardServer:
    """``streamlit run app.py`` in a subprocess, headless, on 127.0.0.1 (stopped on exit)."""

    def __init__(self, runs_dir: Path, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        if not (PROJECT_ROOT / "app.py").is_file():
            raise RuntimeError(f"no app.py in {PROJECT_ROOT}: the dashboard runs from a source checkout of metanlp")
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
        self.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)

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
    """A headless Chromium (Debian's, at ``CHROMIUM``) driven by Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RuntimeError(
            "driving the dashboard in a browser needs Playwright and Debian's chromium: "
            "bash scripts/setup-tests.sh installs both (or: pip install playwright && apt-get install chromium)"
        ) from None

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


def launch_protonet(
    page, server: DashboardServer, encoder_label: str, steps: int, eval_episodes: int,
    method_label: str = "Prototypical Networks",
) -> float:
    """Fill the Train form for a run of ``method_label`` on ``encoder_label`` and click Launch; returns the click time."""
    open_page(page, server, "Train", "Train a few-shot model")
    choose(page, "Method", method_label)
    choose(page, "Encoder", encoder_label)
    type_number(page, "Training steps", steps)
    type_number(page, "Test episodes (final evaluation)", eval_episodes)
    launch = page.get_by_role("button", name="Launch")
    if not launch.is_enabled():
        raise RuntimeError("the Train page's Launch button is disabled")
    clicked = time.perf_counter()
    launch.click()
    return clicked


def launch_scratch_protonet(page, server: DashboardServer, steps: int = 40, eval_episodes: int = 10) -> float:
    """Fill the Train form for a short from-scratch ProtoNet run and click Launch; returns the click time."""
    return launch_protonet(page, server, "From scratch (random init)", steps, eval_episodes)
