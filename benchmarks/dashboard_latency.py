"""Dashboard latency in a real browser: from a control change to the redrawn plot.

Two controls: the temperature slider (Logits page: every sample's divergence, the histogram, the drill-down) and the
teacher-head menu (Attention page: the head grid, the pair view). Each is timed on a demo run and on a synthetic
run of 10,000 samples (the demo ViT pair on noisy copies of the digits). Goal: median under 300 ms.

A text run of 10,000 samples at 512 tokens (a BERT pair from configs, 4 layers × 4 heads → 2 × 2, random weights,
lengths from 128 to 512; the default capture: an attention digest for every sample, exact maps for the first
samples that fit 512 KB each) is timed as a visitor meets it (issue 18): the Overview, Logits and Attention pages
opening (goal < 2 s each, from the click to the drawn plots), and the sample and teacher-head switches on the
Attention page (goal: median < 300 ms).

Printed beside each: the server-side share (time in the page's Python callback, measured in the server) and the
ratio to a baseline measured in the same server and browser: a bare Panel slider that updates one text pane (the
websocket round trip and the browser's redraw, with no kdviz work).

Run: python benchmarks/dashboard_latency.py [--repeats N]   (needs Debian's chromium)
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

import kdviz
from kdviz.app.dashboard import session_app
from kdviz.demo.build import build_demo_runs, demo_pair
from kdviz.explore import base
from kdviz.explore.library import RunLibrary

PLOTS = """() => { const out = []; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot')) out.push({title: ((el.layout || {}).title || {}).text || '',
    sub: ((el.layout || {}).annotations || []).map(a => a.text).join('|')});
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
             "Logits": PLOTS.replace("return out; }", "return out.some(p => p.title.startsWith('Sample')); }"),
             "Attention": PLOTS.replace("return out; }", "return out.some(p => p.title.startsWith('One teacher')); }")}
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
        page.wait_for_function(done_js(i), polling="raf", timeout=60_000)
        elapsed = time.perf_counter() - start
        if i:  # the first change warms caches
            latencies.append(elapsed)
            server.append(sum(SERVER_TIMES))
    return latencies, server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--text-samples", type=int, default=10_000, help="samples of the 512-token text run")
    args = parser.parse_args()
    require_chromium()
    from playwright.sync_api import sync_playwright

    base.Explorer.guarded = timed_guarded(base.Explorer.guarded)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("building the demo runs and a 10,000-sample run …", flush=True)
        runs = build_demo_runs(tmp, progress=False)
        big = synthetic_run(tmp)
        print(f"building a {args.text_samples:,}-sample text run at 512 tokens …", flush=True)
        started = time.perf_counter()
        text = text_run(tmp, n=args.text_samples)
        print(f"  captured in {time.perf_counter() - started:.0f} s; exact maps for {len(text.attention_samples)} samples",
              flush=True)
        library = RunLibrary([*runs, big, text])
        port = free_port()
        server = pn.serve({"/": lambda: session_app(library), "/baseline": baseline_app}, port=port, address="127.0.0.1",
                          websocket_origin=[f"localhost:{port}"], show=False, threaded=True)
        time.sleep(2)
        url = f"http://localhost:{port}"
        results = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/baseline")
            handle = page.locator(".kd-baseline .noUi-handle").first
            handle.focus()
            results["baseline (bare Panel slider -> text)"] = measure(
                page, lambda i: page.keyboard.press("ArrowRight"),
                lambda i: SHOWS_TEXT.replace("TEXT", f"value {51 + i}"),
                args.repeats)
            for label, run_name in (("demo digits-cnn (500 samples)", "digits-cnn"), ("synthetic (10,000 samples)", big.name)):
                page.goto(f"{url}/?run={run_name}")
                page.locator(".bk-tab", has_text="Logits").first.click()
                page.wait_for_function(PLOTS.replace("return out; }", "return out.length >= 3; }"), timeout=120_000)
                slider = page.locator(".kd-temperature .noUi-handle").first
                slider.focus()
                results[f"temperature slider · {label}"] = measure(
                    page, lambda i: page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft"),
                    lambda i: PLOTS.replace("return out; }", f"return out.some(p => p.title.startsWith('Sample') && "
                                            f"p.title.includes('T={TEMPERATURES[i % 2]} ')); }}"), args.repeats)
            for label, run_name in (("demo digits-vit (500 samples)", "digits-vit"), ("synthetic (10,000 samples)", big.name)):
                page.goto(f"{url}/?run={run_name}")
                page.locator(".bk-tab", has_text="Attention").first.click()
                page.wait_for_function(PLOTS.replace("return out; }", "return out.some(p => p.title.startsWith('One teacher')); }"),
                                       timeout=120_000)
                menu = page.locator(".kd-teacher-head select")
                results[f"teacher head menu · {label}"] = measure(
                    page, lambda i, menu=menu: menu.select_option(label=f"head {1 + i % 3}"),
                    lambda i: PLOTS.replace("return out; }", f"return out.some(p => p.title.startsWith('One teacher') && "
                                            f"p.sub.split('|')[0].endsWith('head {1 + i % 3}')); }}"), args.repeats)
            opened = open_pages(page, url, text.name, repeats=3)
            menu = page.locator(".kd-teacher-head select")
            results[f"teacher head menu · text ({args.text_samples:,} × 512 tokens)"] = measure(
                page, lambda i, menu=menu: menu.select_option(label=f"head {1 + i % 3}"),
                lambda i: PLOTS.replace("return out; }", f"return out.some(p => p.title.startsWith('One teacher') && "
                                        f"p.sub.split('|')[0].endsWith('head {1 + i % 3}')); }}"), args.repeats)
            sample_box = page.locator(".kd-sample input")

            def switch_sample(i: int) -> None:
                sample_box.fill(str(SAMPLES[i % len(SAMPLES)]))
                sample_box.press("Enter")

            results[f"sample switch on Attention · text ({args.text_samples:,} × 512 tokens)"] = measure(
                page, switch_sample,
                lambda i: PLOTS.replace("return out; }", "return out.some(p => p.title.startsWith('One teacher') && "
                                        f"p.title.includes('sample {SAMPLES[i % len(SAMPLES)]} ')); }}"), args.repeats)
            browser.close()
        server.stop()
    baseline = statistics.median(results["baseline (bare Panel slider -> text)"][0])
    print(f"\n{'interaction':58s} {'median':>9s} {'p90':>9s} {'server':>8s} {'share':>6s} {'× baseline':>10s}")
    payload = {"goal_ms": 300, "repeats": args.repeats, "results": {}}
    for name, (latencies, server_times) in results.items():
        med, p90 = statistics.median(latencies), float(np.percentile(latencies, 90))
        srv = statistics.median(server_times)
        share = srv / med if med else 0.0
        print(f"{name:58s} {1000 * med:7.0f}ms {1000 * p90:7.0f}ms {1000 * srv:6.0f}ms {100 * share:5.0f}% {med / baseline:9.1f}×")
        payload["results"][name] = {"median_ms": 1000 * med, "p90_ms": 1000 * p90, "server_median_ms": 1000 * srv,
                                    "server_share": share, "ratio_to_baseline": med / baseline,
                                    "latencies_ms": [1000 * t for t in latencies]}
    worst = max(v["median_ms"] for k, v in payload["results"].items() if not k.startswith("baseline"))
    print(f"\nworst median {worst:.0f} ms against the 300 ms goal: {'met' if worst < 300 else 'NOT met'}")
    payload["page_open_s"] = opened
    payload["text_samples"] = args.text_samples
    print(f"\nopening the pages of the {args.text_samples:,} × 512-token text run (3 visits; goal < 2 s each):")
    for name, seconds in opened.items():
        print(f"  {name:10s} median {statistics.median(seconds):5.2f} s   all " + ", ".join(f"{t:.2f}" for t in seconds))
    print("wrote", write_result("dashboard_latency", payload))


if __name__ == "__main__":
    main()
