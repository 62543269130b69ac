"""The dashboard in a real browser: launch a run, watch its live curve, open its attention.

Starts ``streamlit run app.py`` on a free loopback port with a temporary runs folder and drives
Debian's headless Chromium through Playwright (``metanlp.dashboard.browser_probe``, shared with
``python -m metanlp bench dashboard``). Every wait polls an explicit condition with a generous
deadline, so a slow shared machine makes the test slower, not flaky. Screenshots of every page go
to ``test-artifacts/``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from metanlp.dashboard.browser_probe import (
    CURVE_POINTS,
    HEATMAPS,
    PAGE_SECONDS,
    VIEWPORT,
    chromium,
    launch_scratch_protonet,
    open_page,
    running_dashboard,
    wait_until_idle,
)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
BAR_CHARTS = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .filter(chart => (chart._fullData || []).some(trace => trace.type === 'bar')).length"""
HEATMAP_TRACES = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .flatMap(chart => chart._fullData || []).filter(trace => trace.type === 'heatmap').length"""


def no_exceptions(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    time.sleep(0.5)  # let charts finish their transition
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


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

        open_page(page, server, "Sweep", "Sweep")  # no sweep yet: the form to start one
        page.get_by_text("No sweep yet in this runs folder.").wait_for(timeout=PAGE_SECONDS * 1000)
        page.get_by_role("button", name="Launch the sweep").wait_for(timeout=PAGE_SECONDS * 1000)
        no_exceptions(page)
        screenshot(page, "sweep")

        # Offline means offline: every request of the whole tour went to the dashboard itself.
        outside = sorted({url for url in requested if not url.startswith((server.url, "data:", "blob:"))})
        assert not outside, f"requests left the machine: {outside}"
