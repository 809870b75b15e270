"""Dashboard latency in a real browser: from a visit to the first page, from a tab click to its drawn figures, and
from a control change to the redrawn plot (issue 20), each with no other visitor and again while 10 other sessions
load the same server (protocol-level visitors from tests/load.py, opening the Overview and Logits pages back to back).

Goals: the first page interactive in under 1.5 s; no page's first open over 2 s; every control change under 300 ms
median and 600 ms p95.

Pages: the Overview on a visit, then each page's first open, for every demo run (`kdviz demo`'s runs, with
attributions). Controls: the temperature slider (Logits: every sample's divergence, the histogram, the drill-down),
the sample box (Logits), the teacher-head menu (Attention: the head grid, the pair view), the estimator menu
(Features), the method and agreement menus (Attribution); the slider and the head menu also on a synthetic run of
10,000 samples (the demo ViT pair on noisy copies of the digits).

A text run of 10,000 samples at 512 tokens (a BERT pair from configs, 4 layers × 4 heads → 2 × 2, random weights,
lengths from 128 to 512; the default capture: an attention digest for every sample, exact maps for the first
samples that fit 512 KB each) is timed as a visitor meets it (issue 18): the Overview, Logits and Attention pages
opening (goal < 2 s each, from the click to the drawn plots), and the sample and teacher-head switches on the
Attention page (goal: median < 300 ms).

Printed beside each: the server-side share (time in the page's Python callback, measured in the server) and the
ratio to a baseline measured in the same server and browser: a bare Panel slider that updates one text pane (the
websocket round trip and the browser's redraw, with no kdviz work).

Run: python benchmarks/dashboard_latency.py [--repeats N] [--background 10] [--no-text]   (needs Debian's chromium)
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import panel as pn
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import write_result
from browser import CHROMIUM_ARGS, require_chromium
from load import run_clients

import kdviz
from kdviz.app.dashboard import session_app
from kdviz.demo.build import DEMO_RUNS, build_demo_runs, demo_pair
from kdviz.explore import base
from kdviz.explore.library import RunLibrary

PLOTS = """() => { const out = []; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot')) out.push({title: ((el.layout || {}).title || {}).text || '',
    sub: ((el.layout || {}).annotations || []).map(a => a.text).join('|'),
    layout_x: ((((el.layout || {}).xaxis || {}).title) || {}).text || ''});
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return out; }"""
SHOWS_TEXT = """() => { let found = false; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (!found && el.shadowRoot) { if (el.shadowRoot.textContent.includes('TEXT')) found = true; walk(el.shadowRoot); } });
  walk(document); return found; }"""
SERVER_TIMES: list[float] = []
TEMPERATURES = ("6", "4")  # the slider alternates T = 4 -> 6 -> 4 …
SAMPLES = (701, 42, 999, 1)  # the sample switch visits samples with and without exact maps


def timed_guarded(original):
    """Wrap `Page._guarded` (every redraw a control causes goes through it) to record its duration."""
    def wrapper(self, action):
        start = time.perf_counter()
        try:
            return original(self, action)
        finally:
            SERVER_TIMES.append(time.perf_counter() - start)
    return wrapper


def synthetic_run(out: Path, n: int = 10_000):
    """The demo ViT pair on ``n`` noisy copies of the held-out digits."""
    teacher, student, (x, y) = demo_pair("digits-vit")
    generator = torch.Generator().manual_seed(0)
    index = torch.randint(0, len(x), (n,), generator=generator)
    noisy = (x[index] + 0.05 * torch.randn(x[index].shape, generator=generator)).clamp(0, 1)
    return kdviz.capture(teacher, student, (noisy, y[index]), path=out / "synthetic-10k.kdviz", overwrite=True,
                         layers=["blocks.*"], class_names=[str(d) for d in range(10)], batch_size=500)


def text_run(out: Path, n: int = 10_000, tokens: int = 512):
    """A BERT pair from configs on ``n`` random sequences of 128 to ``tokens`` tokens, captured with the defaults."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    common = {"vocab_size": 1000, "max_position_embeddings": tokens, "num_labels": 4}
    teacher = BertForSequenceClassification(BertConfig(num_hidden_layers=4, num_attention_heads=4, hidden_size=64,
                                                       intermediate_size=128, **common)).eval()
    student = BertForSequenceClassification(BertConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32,
                                                       intermediate_size=64, **common)).eval()
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 1000, (n, tokens), generator=generator)
    lengths = torch.randint(128, tokens + 1, (n,), generator=generator)
    mask = (torch.arange(tokens)[None, :] < lengths[:, None]).long()
    labels = torch.randint(0, 4, (n,), generator=generator)
    return kdviz.capture(teacher, student, {"input_ids": ids * mask, "attention_mask": mask, "labels": labels},
                         path=out / f"text-{n}-{tokens}.kdviz", overwrite=True, batch_size=64)


def open_pages(page, url: str, run_name: str, repeats: int) -> dict[str, list[float]]:
    """Seconds from a visit (or a tab click) to the page's plots: Overview, Logits, Attention, ``repeats`` visits."""
    times: dict[str, list[float]] = {"Overview": [], "Logits": [], "Attention": []}
    waits = {"Overview": SHOWS_TEXT.replace("TEXT", "Student vs teacher"),  # the Overview's cards are HTML
             "Logits": plots_where("p.title.startsWith('Sample')"),
             "Attention": plots_where("p.title.startsWith('One teacher')")}
    for _ in range(repeats):
        start = time.perf_counter()
        page.goto(f"{url}/?run={run_name}")
        page.wait_for_function(waits["Overview"], polling="raf", timeout=120_000)
        times["Overview"].append(time.perf_counter() - start)
        for tab in ("Logits", "Attention"):
            start = time.perf_counter()
            page.locator(".bk-tab", has_text=tab).first.click()
            page.wait_for_function(waits[tab], polling="raf", timeout=120_000)
            times[tab].append(time.perf_counter() - start)
    return times


def baseline_app():
    slider = pn.widgets.IntSlider(start=0, end=100, value=50, css_classes=["kd-baseline"])
    return pn.Column(slider, pn.bind(lambda v: pn.pane.Markdown(f"value {v}", css_classes=["kd-baseline-out"]), slider))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(page, change, done_js: str, repeats: int) -> tuple[list[float], list[float]]:
    """Browser latency and server time of ``repeats`` changes; ``change(i)`` acts, ``done_js(i)`` is true when drawn."""
    latencies, server = [], []
    for i in range(repeats + 1):
        SERVER_TIMES.clear()
        start = time.perf_counter()
        change(i)
        try:
            page.wait_for_function(done_js(i), polling="raf", timeout=60_000)
        except Exception:  # say what the page shows instead, then fail
            shown = [(p["title"][:60], p["sub"][:60]) for p in page.evaluate(PLOTS)]
            print(f"change {i} was not drawn in 60 s; the page shows {shown}", flush=True)
            raise
        elapsed = time.perf_counter() - start
        if i:  # the first change warms caches
            latencies.append(elapsed)
            server.append(sum(SERVER_TIMES))
    return latencies, server


# Before a tab's first click every plot and note on the page is marked; the opened page is drawn when new ones
# (built for it) are there and all of them drawn. (A hidden tab's content may stay laid out, clipped to no height,
# so visibility cannot tell the opened page from the ones left.)
MARK_SEEN = """() => { const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && (el.classList.contains('js-plotly-plot') || el.classList.contains('kd-notice'))) el.dataset.kdSeen = '1';
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); }"""
NEW_DRAWN = """() => { let plots = 0, drawn = 0, notes = 0; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && !el.dataset.kdSeen) {
    if (el.classList.contains('js-plotly-plot')) { plots++; if (el.querySelector('.main-svg')) drawn++; }
    if (el.classList.contains('kd-notice')) notes++; }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return (plots > 0 && drawn === plots) || (notes > 0 && plots === 0); }"""
PAGES = ("Logits", "Tokens", "Attention", "Features", "Attribution", "Training")


def first_opens(page, url: str, run_name: str) -> dict[str, float]:
    """Seconds from a visit to the Overview's cards, then from each tab's first click to its drawn figures."""
    times = {}
    start = time.perf_counter()
    page.goto(f"{url}/?run={run_name}")
    page.wait_for_function(SHOWS_TEXT.replace("TEXT", "Student vs teacher"), polling="raf", timeout=120_000)
    times["Overview (visit)"] = time.perf_counter() - start
    for tab in PAGES:
        start = time.perf_counter()
        page.evaluate(MARK_SEEN)
        page.locator(".bk-tab", has_text=tab).first.click()
        page.wait_for_function(NEW_DRAWN, polling="raf", timeout=120_000)
        times[tab] = time.perf_counter() - start
    return times


def plots_where(test: str) -> str:
    """JavaScript that is true once some plot ``p`` on the page passes ``test`` (a JavaScript expression)."""
    return PLOTS.replace("return out; }", f"return out.some(p => {test}); }}")


def visit(page, url: str, query: str, title: str) -> None:
    """Open ``url/?query`` and wait for a plot whose title starts with ``title``."""
    page.goto(f"{url}/?{query}")
    page.wait_for_function(plots_where(f"p.title.startsWith('{title}')"), timeout=120_000)


HEADS = ("head 1", "head 2", "head 3")


def head_shown(head: str) -> str:
    """The pair view's test for a teacher head drawn."""
    return f"p.title.startsWith('One teacher') && p.sub.split('|')[0].endsWith('{head}')"


def alternate_menu(page, menu, labels: tuple[str, ...], shown, repeats: int) -> tuple[list[float], list[float]]:
    """`measure` of a menu switched through ``labels`` in turn; ``shown(label)`` is the plot test of its redraw."""
    return measure(page, lambda i: menu.select_option(label=labels[i % len(labels)]),
                   lambda i: plots_where(shown(labels[i % len(labels)])), repeats)


def controls(page, url: str, big: str, repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    """Every timed control change: {name: (latencies, server times)}."""
    results = {}
    page.goto(f"{url}/baseline")
    handle = page.locator(".kd-baseline .noUi-handle").first
    handle.focus()
    results["baseline (bare Panel slider -> text)"] = measure(
        page, lambda i: page.keyboard.press("ArrowRight"), lambda i: SHOWS_TEXT.replace("TEXT", f"value {51 + i}"), repeats)
    for label, run_name in (("digits-cnn", "digits-cnn"), ("synthetic 10,000", big)):
        page.goto(f"{url}/?run={run_name}&page=logits")
        page.wait_for_function(PLOTS.replace("return out; }", "return out.length >= 3; }"), timeout=120_000)
        slider = page.locator(".kd-temperature .noUi-handle").first
        slider.focus()
        results[f"temperature slider · {label}"] = measure(
            page, lambda i: page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft"),
            lambda i: plots_where(f"p.title.startsWith('Sample') && p.title.includes('T={TEMPERATURES[i % 2]} ')"),
            repeats)
    page.goto(f"{url}/?run=digits-cnn&page=logits")
    page.wait_for_function(PLOTS.replace("return out; }", "return out.length >= 3; }"), timeout=120_000)
    box = page.locator(".kd-sample input")

    def logits_sample(i: int) -> None:
        box.fill(str(SAMPLES[i % len(SAMPLES)] % 500))
        box.press("Enter")

    results["sample box on Logits · digits-cnn"] = measure(
        page, logits_sample, lambda i: plots_where(f"p.title.startsWith('Sample {SAMPLES[i % len(SAMPLES)] % 500}:')"),
        repeats)
    for label, run_name in (("digits-vit", "digits-vit"), ("synthetic 10,000", big)):
        visit(page, url, f"run={run_name}&page=attention", "One teacher")
        results[f"teacher head menu · {label}"] = alternate_menu(page, page.locator(".kd-teacher-head select"), HEADS,
                                                                  head_shown, repeats)
    visit(page, url, "run=digits-cnn&page=features", "Which student")
    results["estimator menu on Features · digits-cnn"] = alternate_menu(
        page, page.locator(".kd-estimator select"), ("biased CKA", "debiased CKA"),
        lambda label: f"p.title.includes('({label.removesuffix(' CKA')} linear CKA)')", repeats)
    visit(page, url, "run=digits-cnn&page=attribution", "Does the student")
    results["method menu on Attribution · digits-cnn"] = alternate_menu(
        page, page.locator(".kd-method select"), ("Saliency", "Integrated gradients"),
        lambda label: f"p.title.startsWith('{label}: where each model')", repeats)
    results["agreement menu on Attribution · digits-cnn"] = alternate_menu(
        page, page.locator(".kd-agreement select"), ("cosine similarity", "Spearman rank correlation"),
        lambda label: f"p.title.startsWith('Does the student') && (p.layout_x || '').startsWith('{label}')", repeats)
    return results


def session(url: str, big: str, text: str | None, repeats: int, browser) -> dict:
    """One pass of every measurement in a fresh browser page."""
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    out = {"controls": controls(page, url, big, repeats), "first_open": {}}
    for run_name in DEMO_RUNS:
        out["first_open"][run_name] = first_opens(page, url, run_name)
    if text is not None:
        out["text_pages"] = open_pages(page, url, text, repeats=3)
        out["controls"]["teacher head menu · text 512 tokens"] = alternate_menu(
            page, page.locator(".kd-teacher-head select"), HEADS, head_shown, repeats)
        sample_box = page.locator(".kd-sample input")

        def switch_sample(i: int) -> None:
            sample_box.fill(str(SAMPLES[i % len(SAMPLES)]))
            sample_box.press("Enter")

        out["controls"]["sample box on Attention · text 512 tokens"] = measure(
            page, switch_sample,
            lambda i: plots_where("p.title.startsWith('One teacher') && "
                                  f"p.title.includes('sample {SAMPLES[i % len(SAMPLES)]} ')"), repeats)
    page.close()
    return out


def report(label: str, measured: dict) -> dict:
    """Print one pass's tables; its figures for the JSON."""
    controls_ = measured["controls"]
    baseline = statistics.median(controls_["baseline (bare Panel slider -> text)"][0])
    print(f"\n{label}\n{'control change':48s} {'median':>8s} {'p95':>8s} {'server':>7s} {'× baseline':>10s}")
    payload: dict = {"controls": {}, "first_open_s": measured["first_open"], "text_pages_s": measured.get("text_pages")}
    for name, (latencies, server_times) in controls_.items():
        med, p95 = statistics.median(latencies), float(np.percentile(latencies, 95))
        srv = statistics.median(server_times)
        print(f"{name:48s} {1000 * med:6.0f}ms {1000 * p95:6.0f}ms {1000 * srv:5.0f}ms {med / baseline:9.1f}×")
        payload["controls"][name] = {"median_ms": 1000 * med, "p95_ms": 1000 * p95, "server_median_ms": 1000 * srv,
                                     "ratio_to_baseline": med / baseline, "latencies_ms": [1000 * t for t in latencies]}
    timed = {k: v for k, v in payload["controls"].items() if not k.startswith("baseline")}
    worst_median = max(v["median_ms"] for v in timed.values())
    worst_p95 = max(v["p95_ms"] for v in timed.values())
    print(f"worst median {worst_median:.0f} ms (goal 300), worst p95 {worst_p95:.0f} ms (goal 600)")
    print(f"\n{'first open (s)':16s} " + " ".join(f"{name:>11s}" for name in ("Overview", *PAGES)))
    for run_name, times in measured["first_open"].items():
        print(f"{run_name:16s} " + " ".join(f"{times[k]:11.2f}" for k in ("Overview (visit)", *PAGES)))
    first = max(times["Overview (visit)"] for times in measured["first_open"].values())
    slowest = max(t for times in measured["first_open"].values() for k, t in times.items() if k in PAGES)
    print(f"slowest first page {first:.2f} s (goal 1.5), slowest first open of a page {slowest:.2f} s (goal 2)")
    if measured.get("text_pages"):
        for name, seconds in measured["text_pages"].items():
            print(f"  text run {name:10s} median {statistics.median(seconds):5.2f} s   all " + ", ".join(f"{t:.2f}" for t in seconds))
    payload.update(worst_median_ms=worst_median, worst_p95_ms=worst_p95, slowest_first_page_s=first,
                   slowest_first_open_s=slowest)
    return payload


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--background", type=int, default=10, help="concurrent background visitors of the loaded pass")
    parser.add_argument("--think", type=float, default=5.0,
                        help="seconds each background visitor waits between visits (0: back to back, a stress load)")
    parser.add_argument("--text-samples", type=int, default=10_000, help="samples of the 512-token text run")
    parser.add_argument("--no-text", action="store_true", help="leave out the 512-token text run (its capture is long)")
    args = parser.parse_args()
    require_chromium()
    from playwright.sync_api import sync_playwright

    base.Explorer.guarded = timed_guarded(base.Explorer.guarded)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("building the demo runs (with attributions) and a 10,000-sample run …", flush=True)
        runs = build_demo_runs(tmp, progress=False, attributions=True)
        big = synthetic_run(tmp)
        text = None
        if not args.no_text:
            print(f"building a {args.text_samples:,}-sample text run at 512 tokens …", flush=True)
            started = time.perf_counter()
            text = text_run(tmp, n=args.text_samples)
            print(f"  captured in {time.perf_counter() - started:.0f} s; exact maps for {len(text.attention_samples)} "
                  "samples", flush=True)
        library = RunLibrary([*runs, big, *([text] if text is not None else [])])
        port = free_port()
        server = pn.serve({"/": lambda: session_app(library), "/baseline": baseline_app}, port=port, address="127.0.0.1",
                          websocket_origin=[f"localhost:{port}"], show=False, threaded=True)
        time.sleep(2)
        url = f"http://localhost:{port}"
        passes = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
            started = time.perf_counter()
            passes["alone"] = session(url, big.name, text.name if text else None, args.repeats, browser)
            alone_s = time.perf_counter() - started
            if args.background:
                print(f"\nagain, with {args.background} background sessions (the unloaded pass took {alone_s:.0f} s) …",
                      flush=True)
                window = 3 * alone_s + 60  # the clients visit until then; the measurement must end inside it
                started = time.perf_counter()
                visits, errors, loaded = run_clients(url, args.background, window, pause=args.think, alongside=lambda _s: session(
                    url, big.name, text.name if text else None, args.repeats, browser))
                inside = time.perf_counter() - started
                passes[f"with {args.background} background visitors, {args.think:g} s apart"] = loaded
                sessions = [t for client in visits for t in client]
                print(f"background: {len(sessions)} sessions opened, p50 {np.percentile(sessions, 50):.2f} s, "
                      f"errors {len(errors)}; measured inside their window: {inside <= window + 120}")
            browser.close()
        server.stop()
    payload = {"goals": {"first_page_s": 1.5, "first_open_s": 2.0, "median_ms": 300, "p95_ms": 600},
               "repeats": args.repeats, "passes": {}}
    for label, measured in passes.items():
        payload["passes"][label] = report(label, measured)
    print("wrote", write_result("dashboard_latency", payload))


if __name__ == "__main__":
    main()
