"""What `RedrawOnce` saves in a real browser: each control change's latency and how many times the page's plots were
drawn for it, with and without it, in one server and one Chromium (issue 20).

Panel 1.9's Plotly view relays out every plot of a page after each of its layout passes, and sizes each new figure
three times; `RedrawOnce` (kdviz/explore/redraw_once.py) keeps a plot from being redrawn at a size it already has.
The two dashboards are the same app, one with the component left out, served side by side from two ports of this process;
every control is measured on both in alternation, ``--rounds`` times ``--repeats`` changes each, so the machine's
noise falls on both alike. Draws are counted from plotly's ``plotly_afterplot`` events on every plot of the page,
from the change until the page has been quiet for a second.

Run: python benchmarks/redraw_once.py [--repeats 6] [--rounds 3]   (needs Debian's chromium)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import panel as pn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import write_result
from browser import CHROMIUM_ARGS, free_port, require_chromium
from dashboard_latency import HEADS, SAMPLES, TEMPERATURES, head_shown, plots_where, visit

import kdviz.app.dashboard as dashboard_module
from kdviz.app.dashboard import session_app
from kdviz.demo.build import build_demo_runs
from kdviz.explore.library import RunLibrary

COUNT_DRAWS = """() => { window.kdDraws = 0; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot') && el.on && !el.dataset.kdCounted) {
    el.dataset.kdCounted = '1'; el.on('plotly_afterplot', () => { window.kdDraws += 1; window.kdLastDraw = performance.now(); }); }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); }"""
QUIET = "() => performance.now() - (window.kdLastDraw || 0) > 1000"


def without_redraw_once():
    """The dashboard with `RedrawOnce` left out (a plain empty spacer in its place)."""
    original = dashboard_module.redraw_once
    dashboard_module.redraw_once = lambda: pn.Spacer(width=0, height=0, margin=0)
    try:
        return session_app(LIBRARY)
    finally:
        dashboard_module.redraw_once = original


LIBRARY: RunLibrary


def change_controls(page, base: str, repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """{control: (latencies in s, plot draws per change)} for ``repeats`` changes of each, on the app at ``base``."""
    out: dict[str, tuple[list[float], list[float]]] = {}

    def timed(name: str, act, drawn_js) -> None:
        latencies, draws = [], []
        for i in range(repeats + 1):
            page.evaluate(COUNT_DRAWS)
            start = time.perf_counter()
            act(i)
            page.wait_for_function(drawn_js(i), polling="raf", timeout=60_000)
            elapsed = time.perf_counter() - start
            page.wait_for_function(QUIET, timeout=30_000)
            if i:  # the first change warms caches
                latencies.append(elapsed)
                draws.append(page.evaluate("() => window.kdDraws"))
        out[name] = (latencies, draws)

    visit(page, base, "run=digits-cnn&page=logits", "Sample")
    slider = page.locator(".kd-temperature .noUi-handle").first
    slider.focus()
    timed("temperature slider (Logits)", lambda i: page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft"),
          lambda i: plots_where(f"p.title.startsWith('Sample') && p.title.includes('T={TEMPERATURES[i % 2]} ')"))
    box = page.locator(".kd-sample input")

    def sample(i: int) -> None:
        box.fill(str(SAMPLES[i % len(SAMPLES)] % 500))
        box.press("Enter")

    timed("sample box (Logits)", sample,
          lambda i: plots_where(f"p.title.startsWith('Sample {SAMPLES[i % len(SAMPLES)] % 500}:')"))
    visit(page, base, "run=digits-vit&page=attention", "One teacher")
    menu = page.locator(".kd-teacher-head select")
    timed("teacher head menu (Attention)", lambda i: menu.select_option(label=HEADS[i % len(HEADS)]),
          lambda i: plots_where(head_shown(HEADS[i % len(HEADS)])))
    visit(page, base, "run=digits-cnn&page=features", "Which student")
    estimators = ("biased CKA", "debiased CKA")
    menu = page.locator(".kd-estimator select")
    timed("estimator menu (Features)", lambda i: menu.select_option(label=estimators[i % 2]),
          lambda i: plots_where(f"p.title.includes('({estimators[i % 2].removesuffix(' CKA')} linear CKA)')"))
    visit(page, base, "run=digits-cnn&page=attribution", "Does the student")
    methods = ("Saliency", "Integrated gradients")
    menu = page.locator(".kd-method select")
    timed("method menu (Attribution)", lambda i: menu.select_option(label=methods[i % 2]),
          lambda i: plots_where(f"p.title.startsWith('{methods[i % 2]}: where each model')"))
    return out


def main() -> None:
    global LIBRARY
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=6, help="changes of each control per round and app")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two apps")
    args = parser.parse_args()
    require_chromium()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        print("building the demo runs (with attributions) …", flush=True)
        LIBRARY = RunLibrary(build_demo_runs(Path(tmp), progress=False, attributions=True))
        servers, apps = [], {}
        for name, app in (("with RedrawOnce", lambda: session_app(LIBRARY)), ("without (Panel as it is)", without_redraw_once)):
            port = free_port()
            servers.append(pn.serve({"/": app}, port=port, address="127.0.0.1", websocket_origin=[f"localhost:{port}"],
                                    show=False, threaded=True))
            apps[name] = f"http://localhost:{port}"
        time.sleep(2)
        measured: dict[str, dict[str, tuple[list[float], list[float]]]] = {name: {} for name in apps}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            for round_ in range(args.rounds):
                for name, base in (apps.items() if round_ % 2 == 0 else reversed(apps.items())):
                    for control, (latencies, draws) in change_controls(page, base, args.repeats).items():
                        previous = measured[name].setdefault(control, ([], []))
                        previous[0].extend(latencies)
                        previous[1].extend(draws)
                print(f"round {round_ + 1} of {args.rounds} done", flush=True)
            browser.close()
        for server in servers:
            server.stop()
    with_, without = measured["with RedrawOnce"], measured["without (Panel as it is)"]
    print(f"\n{'control change':32s} {'with: median':>12s} {'p95':>6s} {'draws':>6s}   {'without: median':>15s} {'p95':>6s} "
          f"{'draws':>6s}   {'speed-up':>8s}")
    payload: dict = {"repeats": args.repeats, "rounds": args.rounds, "controls": {}}
    for control in with_:
        row = {}
        for label, source in (("with", with_), ("without", without)):
            latencies, draws = source[control]
            row[label] = {"median_ms": 1000 * statistics.median(latencies),
                          "p95_ms": 1000 * float(np.percentile(latencies, 95)),
                          "draws_median": statistics.median(draws), "latencies_ms": [1000 * t for t in latencies],
                          "draws": draws}
        row["speedup"] = row["without"]["median_ms"] / row["with"]["median_ms"]
        payload["controls"][control] = row
        w, o = row["with"], row["without"]
        print(f"{control:32s} {w['median_ms']:10.0f}ms {w['p95_ms']:4.0f}ms {w['draws_median']:6.0f}   "
              f"{o['median_ms']:13.0f}ms {o['p95_ms']:4.0f}ms {o['draws_median']:6.0f}   {row['speedup']:7.2f}×")
    print("wrote", write_result("redraw_once", payload))


if __name__ == "__main__":
    main()
