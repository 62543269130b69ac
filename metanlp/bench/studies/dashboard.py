"""Dashboard latency through a real browser: Launch → first loss point, and each page's first render.

Starts ``streamlit run app.py`` (temporary runs folder, workers preloading MiniLM as in normal use)
and drives headless Chromium with Playwright (``metanlp.dashboard.browser_probe``, as the browser
test does). Writes the ``dashboard`` section of docs/results_dashboard.md.

- **Launch → first point**: from the click on Launch (Train page, ProtoNet, 5-way 1-shot on
  CLINC150) until the Runs page's loss chart holds its first point: queueing, the worker picking
  the run up, loading data and encoder, one training step, the event reaching SQLite, the page
  polling it and Plotly drawing it. Measured with the from-scratch and the MiniLM encoder, on a
  warm worker (the steady state: workers start when the dashboard opens), plus once on a fresh
  server where the worker is still starting (the very first run after ``streamlit run``).
- **Page render**: from navigation until the page's title is drawn, and until its script has
  finished (every element drawn). The first visit to a page that loads MiniLM pays that load.

    python -m metanlp bench dashboard --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from metanlp.bench.machine import load_average, machine_description
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import write_section
from metanlp.dashboard.browser_probe import (
    CURVE_POINTS,
    HEATMAPS,
    PAGE_SECONDS,
    VIEWPORT,
    chromium,
    launch_protonet,
    launch_scratch_protonet,
    running_dashboard,
    wait_until_idle,
)
from metanlp.device import resolve_device

NAME = "dashboard"
DESCRIPTION = "Launch → first loss point and page render times, through a real headless browser"

RESULTS = "docs/results_dashboard.md"
# (url path, title, name, what shows the page's main content is drawn)
PAGES = [
    ("", "metanlp: few-shot NLP with transfer learning and meta-learning", "Home", "text=Recent runs"),
    ("Train", "Train a few-shot model", "Train", "button:Launch"),
    ("Runs", "Runs", "Runs", "chart"),
    ("Attention", "Attention", "Attention", "heatmap"),
    ("Live_adaptation", "Live adaptation", "Live adaptation", "button:Adapt"),
    ("Episodes", "Episodes", "Episodes", "chart"),
]
HEATMAPS_OR_SCATTER = "document.querySelectorAll('.js-plotly-plot').length >= 1"
TARGETS = {"scratch": 3.0, "minilm": 8.0}
ENCODER_LABELS = {"scratch": "From scratch (random init)", "minilm": "Pretrained MiniLM"}


#: The method each case launches. On frozen MiniLM ProtoNet has nothing to meta-train (no loss point
#: would ever be drawn), so that case launches MAML, which meta-trains on MiniLM's cached features.
METHOD_LABELS = {"scratch": "Prototypical Networks", "minilm": "MAML (model-agnostic meta-learning)"}


def launch(page, server, encoder: str) -> float:
    """Queue a run with ``encoder`` from the Train form; returns the moment Launch was clicked."""
    return launch_protonet(page, server, ENCODER_LABELS[encoder], steps=200, eval_episodes=5,
                           method_label=METHOD_LABELS[encoder])


def seconds_to_first_point(page, server, encoder: str) -> float:
    """Launch, follow the link to the Runs page, wait for the first loss point, then cancel the run."""
    clicked = launch(page, server, encoder)
    link = page.get_by_role("link", name="Watch it on the Runs page")
    link.wait_for(timeout=PAGE_SECONDS * 1000)
    link.click()
    page.wait_for_function(f"({CURVE_POINTS})() >= 1", timeout=PAGE_SECONDS * 1000, polling=50)
    elapsed = time.perf_counter() - clicked
    page.get_by_role("button", name="Cancel").first.click()  # free the worker for the next repeat
    page.get_by_text("cancelled").first.wait_for(timeout=PAGE_SECONDS * 1000)
    wait_until_idle(page)
    return elapsed


def wait_for_content(page, ready: str) -> None:
    timeout = PAGE_SECONDS * 1000
    if ready.startswith("text="):
        page.get_by_text(ready.removeprefix("text=")).first.wait_for(timeout=timeout)
    elif ready.startswith("button:"):
        page.get_by_role("button", name=ready.removeprefix("button:")).first.wait_for(timeout=timeout)
    elif ready == "chart":
        page.wait_for_function(f"({CURVE_POINTS})() >= 1 || {HEATMAPS_OR_SCATTER}", timeout=timeout, polling=50)
    else:
        page.wait_for_function(f"({HEATMAPS})() >= 1", timeout=timeout, polling=50)


def page_render_seconds(page, server, path: str, heading: str, ready: str) -> tuple[float, float]:
    """(title drawn, main content drawn) in seconds after navigation."""
    start = time.perf_counter()
    page.goto(f"{server.url}/{path}")
    page.get_by_role("heading", name=heading).first.wait_for(timeout=PAGE_SECONDS * 1000)
    titled = time.perf_counter() - start
    wait_for_content(page, ready)
    content = time.perf_counter() - start
    wait_until_idle(page)
    return titled, content


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def machine() -> str:
    import streamlit

    return (f"{machine_description(resolve_device('auto'), load=False)}, Streamlit {streamlit.__version__}, "
            "Chromium headless (Playwright)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path(RESULTS))


def run(arguments: argparse.Namespace) -> int:
    repeats = arguments.repeats
    load_before = load_average()
    preload = {"METANLP_PRELOAD_ENCODERS": "minilm"}

    with tempfile.TemporaryDirectory() as folder, chromium() as browser:
        folder = Path(folder)
        page = browser.new_page(viewport=VIEWPORT)

        # 1. A fresh server: the first run waits for its worker to start.
        with running_dashboard(folder / "cold", folder / "cold.log", preload) as server:
            cold_first_point = seconds_to_first_point(page, server, "scratch")
        print(f"fresh server, first scratch run: {cold_first_point:.2f} s", flush=True)

        with running_dashboard(folder / "warm", folder / "warm.log", preload) as server:
            # 2. Page renders. The Runs and Attention pages draw a finished run, so a short one comes
            #    first; then the first visit of each page (in page order), then warm repeats.
            launch_scratch_protonet(page, server, steps=5, eval_episodes=2)
            page.get_by_role("link", name="Watch it on the Runs page").click()
            page.get_by_text("Test accuracy").first.wait_for(timeout=PAGE_SECONDS * 1000)
            first_visit: dict[str, tuple[float, float]] = {}
            warm_visits: dict[str, list[tuple[float, float]]] = {name: [] for _, _, name, _ in PAGES}
            for path, heading, name, ready in PAGES:
                first_visit[name] = page_render_seconds(page, server, path, heading, ready)
            for _ in range(repeats):
                for path, heading, name, ready in PAGES:
                    warm_visits[name].append(page_render_seconds(page, server, path, heading, ready))
            print("pages measured", flush=True)

            # 3. Launch → first point on a warm worker; one untimed run per encoder warms it up
            #    (by now the idle worker has had time to preload MiniLM, as in normal use).
            first_points: dict[str, list[float]] = {}
            for encoder in ("scratch", "minilm"):
                seconds_to_first_point(page, server, encoder)
                first_points[encoder] = [seconds_to_first_point(page, server, encoder) for _ in range(repeats)]
                print(f"{encoder}: {spread(first_points[encoder])}", flush=True)

    load_after = load_average()
    lines = [
        f"Machine: {machine()}. System load (1-minute average) {load_before:.1f} at the start and "
        f"{load_after:.1f} at the end of the measurement.",
        "",
        "Measured by `python -m metanlp bench dashboard "
        f"--repeats {repeats}` through headless Chromium driving `streamlit run app.py` on 127.0.0.1; "
        "one run worker (`METANLP_MAX_CONCURRENT` default on CPU), workers preloading MiniLM while idle. "
        "The machine's two cores are shared with the browser, the Streamlit server and the worker, "
        "and with other work on the machine, so expect 10–50% noise between sessions.",
        "",
        "## Launch → first loss point on the Runs chart",
        "",
        "CLINC150, 5-way 1-shot, 5 queries per class: ProtoNet with the from-scratch encoder, MAML with MiniLM "
        "(ProtoNet on frozen MiniLM has nothing to meta-train, so it would draw no loss point). From the click on "
        "Launch until the "
        "Runs page's Plotly chart holds a point (includes following the link to the Runs page, whose "
        "live part polls the store every 0.5 s while a run is new, then every second).",
        "",
        "| encoder | worker | median | min | max | repeats | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for encoder, values in first_points.items():
        verdict = "met" if statistics.median(values) < TARGETS[encoder] else "missed"
        lines.append(
            f"| {encoder} | warm | {statistics.median(values):.2f} s | {min(values):.2f} s | {max(values):.2f} s | "
            f"{len(values)} | < {TARGETS[encoder]:g} s ({verdict}) |"
        )
    lines.append(f"| scratch | fresh server (first run; the worker started when the Train page opened, seconds before Launch) | {cold_first_point:.2f} s | | | 1 | |")
    lines += [
        "",
        "## Page render",
        "",
        "From navigation (a full page load, new session) until the title is drawn, and until the "
        "page's main content is drawn (Home: the recent runs; Train: the Launch button; Runs: the chart "
        "of a run; Attention: a heatmap; Live adaptation: the Adapt button; Episodes: the PCA chart). "
        "Measured after one short from-scratch run (so Runs and Attention have a run to draw). The "
        "first visit pays one-off costs (the run's checkpoint on Attention, the MiniLM load on "
        "Episodes); later visits reuse `st.cache_resource`.",
        "",
        "| page | first visit: title | first visit: content | warm: title (median, min–max) | warm: content (median, min–max) |",
        "|---|---|---|---|---|",
    ]
    for _, _, name, _ in PAGES:
        titled, complete = first_visit[name]
        warm_titles = [value[0] for value in warm_visits[name]]
        warm_complete = [value[1] for value in warm_visits[name]]
        lines.append(
            f"| {name} | {titled:.2f} s | {complete:.2f} s | {statistics.median(warm_titles):.2f} s "
            f"({min(warm_titles):.2f}–{max(warm_titles):.2f}) | {statistics.median(warm_complete):.2f} s "
            f"({min(warm_complete):.2f}–{max(warm_complete):.2f}) |"
        )
    body = "\n".join(lines)
    print(body)
    write_section(arguments.output, "dashboard", "Dashboard latency (real browser)", body)
    return 0


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
