"""`kdviz serve` in a real headless Chromium (Debian's, through Playwright): every page of the demo runs renders
offline with no console error, the controls change what is plotted, and names from a run stay text. The server
under 20 concurrent sessions: tests/test_serve_load.py."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from browser import (
    ARTIFACTS,
    cut_options,
    free_port,
    in_process_server,
    kdviz_server,
    offline_page,
    require_chromium,
    served,
    small_text,
    text_overlaps,
)
from conftest import TinyCNN, gpt2_pair

import kdviz
from kdviz.metrics import logits as lm

pytestmark = [pytest.mark.browser, pytest.mark.slow]

XSS = "<script>alert(1)</script>"
XSS_ATTRIBUTE = "<img src=x onerror=alert(1)>"
PAGES = ("Overview", "Logits", "Attention", "Features", "Attribution", "Training")
# every Plotly figure on the page, through Panel's shadow roots: [title, trace-0 x values or None]
PLOTS_JS = """() => { const out = []; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot')) {
    const title = ((el.layout || {}).title || {}).text || '';
    const subplotTitles = ((el.layout || {}).annotations || []).map(a => a.text).join(' | ');
    const x = el.data && el.data[0] && el.data[0].x ? Array.from(el.data[0].x) : null;
    out.push({title, subplotTitles, x});
  }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return out; }"""

# true when the head grid's teacher mark (its second-to-last shape) frames thumbnail column HEAD
GRID_MARK_JS = """() => { let ok = false; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot') && ((el.layout || {}).title || {}).text.startsWith('Every attention head')) {
    const shapes = el.layout.shapes, mark = shapes[shapes.length - 2];
    const heads = el.data.find(t => t.name === 'teacher heads');
    const centres = heads.customdata.map((c, i) => [c[1], heads.x[i]]).filter(c => c[0] === HEAD).map(c => c[1]);
    ok = mark.visible !== false && centres.every(x => mark.x0 < x && x < mark.x1);
  }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return ok; }"""


def plots(page) -> list[dict]:
    return page.evaluate(PLOTS_JS)


def plot_titled(page, prefix: str, timeout: float = 20_000) -> dict:
    """The first figure whose title starts with ``prefix``, waiting until it is drawn."""
    page.wait_for_function(PLOTS_JS.replace("return out; }", f"return out.some(p => p.title.startsWith({prefix!r})); }}"),
                           timeout=timeout)
    return next(p for p in plots(page) if p["title"].startswith(prefix))


def open_tab(page, title: str) -> None:
    page.locator(".bk-tab", has_text=title).first.click()


def choose_run(page, name: str) -> None:
    """Pick a served run in the header (callers then wait for something only that run shows)."""
    page.locator("select").first.select_option(name)


# true once every Plotly figure on the page (through Panel's shadow roots) has been drawn
DRAWN_JS = """() => { let all = true, any = false; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot') && el.getClientRects().length) {
    any = true; all = all && !!el.querySelector('.main-svg'); }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return any && all; }"""


def test_every_page_of_every_demo_run_renders_offline(explained_demo_runs):
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    runs = [explained_demo_runs[name] for name in ("charlm", "digits-cnn", "digits-vit")]
    expected_plots = {"Logits": 3, "Attention": 1, "Features": 5, "Attribution": 4}
    with kdviz_server(*(run.path for run in runs)) as url, offline_page((1400, 1000)) as (page, log):
        page.goto(url)
        for run in runs:
            choose_run(page, run.name)
            for title in PAGES:
                open_tab(page, title)
                if title == "Overview":
                    for role in ("teacher", "student"):
                        model = run.meta[role]
                        expected = f"{model['perplexity']:.2f}" if run.task == "tokens" else f"{100 * model['accuracy']:.1f}%"
                        page.get_by_text(f"{role.title()}: {model['name']}").wait_for(timeout=20_000)
                        assert page.locator(".kd-metric", has_text=expected).count() >= 1, (run.name, role, expected)
                elif title == "Training" and run.steps:  # digits-cnn: the student's distillation, step by step
                    plot_titled(page, "How the student moves toward the teacher", timeout=60_000)
                    plot_titled(page, "Does matching the teacher still help?", timeout=60_000)
                elif title == "Training":
                    page.get_by_text("has no training history").first.wait_for(timeout=20_000)
                else:  # this run's heading first: until the tab has rebuilt, it still shows the previous run
                    heading = re.compile(rf"^{title}( transfer)?: {re.escape(run.name)}\b")
                    page.get_by_text(heading).first.wait_for(timeout=60_000)
                    page.wait_for_function(PLOTS_JS.replace("return out; }", f"return out.length >= {expected_plots[title]}; }}"),
                                           timeout=60_000)
                if title != "Overview" and (title != "Training" or run.steps):
                    page.wait_for_function(DRAWN_JS, timeout=20_000)
                page.screenshot(path=str(ARTIFACTS / f"dashboard-{run.name}-{title.lower()}.png"), full_page=True)
                assert log["console_errors"] == [], (run.name, title, log["console_errors"])
    assert log["blocked"] == []  # nothing is fetched from outside: no CDN


def test_controls_change_what_is_plotted(demo_runs):
    """The temperature slider redraws the divergence; a click on the top histogram bar drills into the most divergent
    sample; choosing a teacher head redraws the pair view."""
    require_chromium()
    cnn, vit = demo_runs["digits-cnn"], demo_runs["digits-vit"]
    z_t, z_s = cnn.teacher.logits[:], cnn.student.logits[:]
    with kdviz_server(cnn.path, vit.path) as url, offline_page((1400, 1000)) as (page, log):
        page.goto(url)
        open_tab(page, "Logits")
        histogram = plot_titled(page, "How far the student is from the teacher")
        np.testing.assert_allclose(sorted(histogram["x"]), np.sort(lm.kl(z_t, z_s, 4.0)), rtol=1e-6)
        page.locator(".kd-temperature .noUi-handle").first.focus()
        page.keyboard.press("ArrowRight")  # T: 4 -> 6
        page.wait_for_function(PLOTS_JS.replace("return out; }", "return out.some(p => p.title.startsWith('Sample') && "
                                                "p.title.includes('T=6')); }"), timeout=20_000)
        histogram = plot_titled(page, "How far the student is from the teacher")
        np.testing.assert_allclose(sorted(histogram["x"]), np.sort(lm.kl(z_t, z_s, 6.0)), rtol=1e-6)

        most_divergent = int(np.argmax(lm.kl(z_t, z_s, 6.0)))
        last_bar = page.locator(".js-plotly-plot", has_text="How far the student").locator(".bars .point").last
        last_bar.scroll_into_view_if_needed()
        bar = last_bar.bounding_box()  # the rightmost bar holds the most divergent sample
        page.mouse.click(bar["x"] + bar["width"] / 2, bar["y"] + bar["height"] / 2)  # as a user clicks: plotly's drag layer
        detail = plot_titled(page, f"Sample {most_divergent}:")
        assert "T=6" in detail["title"]
        assert page.locator(".kd-sample input").first.input_value() == str(most_divergent)  # linked to the header

        choose_run(page, vit.name)
        open_tab(page, "Attention")
        plot_titled(page, "One teacher head and one student head")
        page.locator(".kd-teacher-head select").select_option(label="head 2")
        page.wait_for_function(PLOTS_JS.replace("return out; }", "return out.some(p => p.title.startsWith('One teacher head')"
                                                " && p.subplotTitles.includes('head 2')); }"), timeout=20_000)
        # the grid is patched, not redrawn: its teacher mark (second-to-last shape) now frames head 2's column
        page.wait_for_function(GRID_MARK_JS.replace("HEAD", "2"), timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-attention-head-2.png"), full_page=True)
    assert log["console_errors"] == []


def test_a_box_dragged_on_a_long_inputs_pair_view_opens_those_tokens(tmp_path):
    """On a 400-token input pooled into 128 bins, a mouse drag across the teacher map (plotly's box zoom) opens the
    tokens under the box at full resolution; a double-click goes back to every token."""
    from conftest import bert_pair

    require_chromium()
    teacher, student = bert_pair(max_positions=400)
    ids = torch.randint(1, 120, (2, 400), generator=torch.Generator().manual_seed(5))
    run = kdviz.capture(teacher, student, ids, path=tmp_path / "long.kdviz", progress=False, layers=[],
                        attention_samples="all")
    with kdviz_server(run.path) as url, offline_page((1400, 1000)) as (page, log):
        page.goto(f"{url}/?run=long")
        open_tab(page, "Attention")
        pair = plot_titled(page, "One teacher head and one student head", timeout=60_000)
        assert "400 tokens pooled into 128 bins" in pair["title"]
        plot = page.locator(".js-plotly-plot", has_text="One teacher head").first
        plot.scroll_into_view_if_needed()
        box = plot.locator(".nsewdrag").first.bounding_box()  # the teacher map's drag layer
        x0, y0 = box["x"] + 0.25 * box["width"], box["y"] + 0.25 * box["height"]
        page.mouse.move(x0, y0)
        page.mouse.down()
        page.mouse.move(x0 + 0.2 * box["width"], y0 + 0.2 * box["height"], steps=8)
        page.mouse.up()
        page.wait_for_function(PLOTS_JS.replace("return out; }", "return out.some(p => p.title.startsWith('One teacher head')"
                                                " && /tokens \\d+–\\d+/.test(p.title)); }"), timeout=20_000)
        opened = plot_titled(page, "One teacher head")
        first, last = (int(v) for v in re.search(r"tokens (\d+)–(\d+)", opened["title"]).groups())
        assert 60 < first < last < 200 and "pooled" not in opened["title"]  # about a fifth of 400 tokens, from a quarter in
        plot.locator(".nsewdrag").first.dblclick(position={"x": box["width"] / 2, "y": box["height"] / 2})
        page.wait_for_function(PLOTS_JS.replace("return out; }", "return out.some(p => p.title.startsWith('One teacher head')"
                                                " && p.title.includes('400 tokens pooled')); }"), timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-attention-token-window.png"), full_page=True)
    assert log["console_errors"] == []


def test_names_and_tokens_from_a_run_are_shown_as_text_never_run(tmp_path):
    """Payloads in every string a run can carry (model, class, layer and run names, tokens, extra metadata) are shown
    as text on every page, with a dialog listener on the page the whole time."""
    from torch import nn

    require_chromium()
    torch.manual_seed(0)
    teacher, student = TinyCNN(4, n_classes=3), TinyCNN(2, n_classes=3)
    for model in (teacher, student):
        model.body.add_module(XSS_ATTRIBUTE, nn.Identity())  # a layer whose name is a payload
    image_run = kdviz.capture(teacher, student, torch.randn(6, 1, 8, 8), path=tmp_path / "xss.kdviz",
                              class_names=[XSS, "b", XSS_ATTRIBUTE], names=(XSS, XSS_ATTRIBUTE), layers=[f"body.{XSS_ATTRIBUTE}"],
                              extra_meta={"note": XSS, XSS_ATTRIBUTE: XSS}, progress=False)
    lm_teacher, lm_student = gpt2_pair(vocab=20)
    ids = torch.randint(1, 20, (4, 8))
    tokens = [[XSS if k == 1 else XSS_ATTRIBUTE if k == 2 else f"t{j}" for k, j in enumerate(row.tolist())] for row in ids]
    token_run = kdviz.capture(lm_teacher, lm_student, {"input_ids": ids}, path=tmp_path / "xss-tokens.kdviz", tokens=tokens,
                              progress=False)
    broken = tmp_path / f"{XSS_ATTRIBUTE}.kdviz"  # a broken run whose name is a payload: listed, as text
    broken.mkdir()
    (broken / "meta.json").write_text("{}", encoding="utf-8")
    with kdviz_server(image_run.path, token_run.path, broken) as url, offline_page() as (page, log):
        page.goto(f"{url}/?run=xss")
        page.get_by_text(f"Teacher: {XSS}").wait_for(timeout=20_000)
        assert page.get_by_text(XSS, exact=False).count() >= 2  # model name and class list, as literal text
        page.get_by_text(f"{XSS_ATTRIBUTE} cannot be shown").wait_for(timeout=20_000)
        for title in PAGES[1:]:
            open_tab(page, title)
            page.locator(".bk-tab.bk-active", has_text=title).wait_for(timeout=20_000)
            if title in ("Logits", "Features"):
                page.wait_for_function(DRAWN_JS, timeout=20_000)
        choose_run(page, "xss-tokens")
        open_tab(page, "Logits")
        strip = plot_titled(page, "forward KL")  # the token strip draws the token as text
        assert strip is not None
        # as literal text in its cell, cut to the cell's width (the whole token is in the hover)
        page.locator("text=<script>alert(").first.wait_for(timeout=20_000)
        for title in PAGES:
            open_tab(page, title)
            page.locator(".bk-tab.bk-active", has_text=title).wait_for(timeout=20_000)
            if title in ("Logits", "Attention", "Features"):
                page.wait_for_function(DRAWN_JS, timeout=20_000)
    assert log["dialogs"] == []
    assert log["console_errors"] == []


def test_the_dashboard_notebook_is_served_by_panel_serve(demo_runs, tmp_path):
    """`panel serve notebooks/dashboard.ipynb` serves the same app from the notebook's `.servable()` cell."""
    import sys
    from pathlib import Path

    require_chromium()
    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "dashboard.ipynb"
    port = free_port()
    command = [sys.executable, "-m", "panel", "serve", str(notebook), "--port", str(port), "--address", "127.0.0.1",
               "--allow-websocket-origin", f"localhost:{port}"]
    with served(command, port, env={"KDVIZ_RUNS": str(demo_runs["digits-cnn"].path)}, cwd=tmp_path, timeout=120), \
            offline_page() as (page, log):
        page.goto(f"http://localhost:{port}/dashboard", timeout=120_000)
        page.get_by_text("Teacher: CNN teacher").wait_for(timeout=120_000)
        open_tab(page, "Logits")
        plot_titled(page, "How far the student is from the teacher", timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-notebook-logits.png"), full_page=True)
    assert log["console_errors"] == [] and log["blocked"] == []
    assert not (tmp_path / "runs").exists()  # it served the given run, built nothing


def test_several_server_processes_serve_every_visit_offline(demo_runs):
    """--num-procs 2: a page and its websocket may reach different processes; every visit still renders, with every
    script and stylesheet from the server itself (Panel would link its CSS from its CDN in such a process)."""
    require_chromium()
    cnn = demo_runs["digits-cnn"]
    with kdviz_server(cnn.path, extra=("--num-procs", "2")) as url, offline_page() as (page, log):
        for _ in range(6):
            page.goto(url)
            page.get_by_text("Teacher:").first.wait_for(timeout=60_000)
    assert log["blocked"] == [] and log["console_errors"] == []


def test_the_tokens_page_of_the_on_policy_run_shows_drift_and_follows_the_open_text(demo_runs):
    """The Tokens page of a `kdviz.generate` run: texts, strip, drift on- and off-policy, the open pair's fork and the
    token map all drawn in Chromium; choosing another text in the list redraws the fork for that text's prompt."""
    from kdviz.demo.build import demo_prompts

    require_chromium()
    run = demo_runs["on-policy"]
    with kdviz_server(run.path) as url, offline_page((1400, 1000)) as (page, log):
        page.goto(url)
        open_tab(page, "Tokens")
        drift = plot_titled(page, "Divergence along the continuation", timeout=60_000)
        assert drift["x"][:3] == [1, 2, 3] and len(drift["x"]) >= 10  # the on-policy line: a point per new span
        fork = plot_titled(page, "Where the two continuations fork")
        assert demo_prompts()[0][-20:].replace("<", "&lt;") in fork["title"]  # sample 0 opens first
        page.wait_for_function(DRAWN_JS, timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-on-policy-tokens.png"), full_page=True)
        texts = page.locator("select[size]").last  # the list of texts (the run menu has no size)
        texts.select_option(value=texts.locator("option", has_text="off-policy").nth(0).get_attribute("value"))
        chosen = texts.locator("option", has_text="off-policy").nth(0).inner_text()
        sample = int(re.match(r"#(\d+)", chosen.strip()).group(1))
        prompt = demo_prompts()[sample // 2][-20:].replace("<", "&lt;")
        page.wait_for_function(PLOTS_JS.replace("return out; }", "return out.some(p => p.title.startsWith("
                                                "'Where the two continuations fork') && p.title.includes("
                                                f"{prompt!r})); }}"), timeout=20_000)
        assert log["console_errors"] == [], log["console_errors"]
    assert log["blocked"] == []


# true once the open page has drawn every plot it shows, or says the run lacks it, or shows its cards (Overview)
SETTLED_JS = DRAWN_JS.replace("return any && all; }", """
  let note = false; const find = (root) => root.querySelectorAll('*').forEach(el => {
    if (el.classList && (el.classList.contains('kd-notice') || el.classList.contains('kd-card'))
        && el.getClientRects().length) note = true;
    if (el.shadowRoot) find(el.shadowRoot); }); find(document);
  return (any && all) || (note && !any); }""")
PRESENTED_RUNS = ("digits-cnn", "digits-vit", "charlm", "on-policy")


def test_presentation_mode_draws_every_page_with_no_text_under_18_px(explained_demo_runs):
    """`kdviz serve --present` at 1440×900: on every page of four demo runs, every visible text (tabs, widget labels,
    list entries, cards, tables, tick labels, cell text, colour bars, subtitles) is at least 18 px, no two text
    boxes of a plot intersect and no row of a sample list is cut off by the sidebar; ``?present=0`` opts a visitor
    out, which the same check sees."""
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    runs = [explained_demo_runs[name] for name in PRESENTED_RUNS]
    pages = ("Overview", "Logits", "Tokens", "Attention", "Features", "Attribution", "Training")
    with kdviz_server(*(run.path for run in runs), extra=("--present",)) as url, \
            offline_page((1440, 900)) as (page, log):
        for run in runs:
            for title in pages:
                page.goto(f"{url}/?run={run.name}&page={title.lower()}")
                page.locator(".bk-tab.bk-active", has_text=title).wait_for(timeout=20_000)
                page.wait_for_function(SETTLED_JS, timeout=60_000)
                page.wait_for_timeout(300)  # the last plot's text laid out
                assert small_text(page, 18) == [], (run.name, title, small_text(page, 18)[:8])
                assert text_overlaps(page) == [], (run.name, title, text_overlaps(page))
                assert cut_options(page) == [], (run.name, title, cut_options(page)[:4])  # sample rows fit the sidebar
                if title in ("Logits", "Attention"):
                    page.screenshot(path=str(ARTIFACTS / f"present-{run.name}-{title.lower()}.png"), full_page=True)
        page.goto(f"{url}/?run=digits-cnn&page=logits&present=0")
        page.locator(".bk-tab.bk-active", has_text="Logits").wait_for(timeout=20_000)
        page.wait_for_function(SETTLED_JS, timeout=60_000)
        plain = small_text(page, 18)
        assert any("«sample»" in line for line in plain) and any(line.startswith("text.") for line in plain), plain[:8]
        assert log["console_errors"] == [], log["console_errors"]
    assert log["blocked"] == []


def test_a_visitor_asks_for_presentation_mode_with_present_1(demo_runs):
    require_chromium()
    with kdviz_server(demo_runs["digits-cnn"].path) as url, offline_page((1440, 900)) as (page, log):
        for query, small in (("", True), ("?present=1", False), ("?present=yes", True)):
            page.goto(f"{url}/{query}")
            page.locator(".bk-tab.bk-active", has_text="Overview").wait_for(timeout=20_000)
            page.get_by_text("Teacher: CNN teacher").wait_for(timeout=20_000)
            assert bool(small_text(page, 18)) == small, (query, small_text(page, 18)[:5])
        assert log["console_errors"] == []


def test_a_short_page_is_as_long_as_what_it_shows(demo_runs):
    """Bokeh lays out every tab, the hidden ones at zero height; their content overflowed them, so each page scrolled
    as far as the longest tab (2,569 px). The Overview now ends where its cards do: within the window."""
    require_chromium()
    with kdviz_server(demo_runs["digits-cnn"].path) as url, offline_page((1440, 900)) as (page, log):
        page.goto(f"{url}/?page=features")
        page.wait_for_function(PLOTS_JS.replace("return out; }", "return out.length >= 5; }"), timeout=60_000)
        page.wait_for_function(DRAWN_JS, timeout=20_000)
        long = page.evaluate("() => document.documentElement.scrollHeight")
        open_tab(page, "Overview")
        page.locator(".kd-card").first.wait_for(timeout=20_000)
        short = page.evaluate("() => document.documentElement.scrollHeight")
        assert long > 1200 and short <= 900, (long, short)
        assert log["console_errors"] == []


# the first figure of a page, where the eye starts: its box on the page
FIRST_PLOT_JS = """() => { const out = []; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot') && el.getClientRects().length) {
    const r = el.getBoundingClientRect(); out.push({title: ((el.layout || {}).title || {}).text || '', left: r.left,
      top: r.top, right: r.right, bottom: r.bottom}); }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document);
  out.sort((a, b) => a.top - b.top || a.left - b.left); return out; }"""
FITTED_PAGES = [("digits-cnn", page) for page in ("logits", "attention", "features", "attribution", "training")] + \
    [("digits-vit", "attention"), ("on-policy", "tokens"), ("charlm", "logits")]


def test_the_main_figures_of_each_page_fit_a_1440_by_900_window(explained_demo_runs):
    """Controls sit in the sidebar and the figures in a grid beside it: the first row of each page's figures is in
    the window as it opens, without scrolling, and the sidebar holds the page's controls."""
    require_chromium()
    paths = [explained_demo_runs[name].path for name in ("digits-cnn", "digits-vit", "on-policy", "charlm")]
    with kdviz_server(*paths) as url, offline_page((1440, 900)) as (page, log):
        for run, name in FITTED_PAGES:
            page.goto(f"{url}/?run={run}&page={name}")
            page.wait_for_function(DRAWN_JS, timeout=60_000)
            boxes = page.evaluate(FIRST_PLOT_JS)
            first = [box for box in boxes if box["top"] < boxes[0]["top"] + 10]  # the figures of the first row
            for box in first:
                assert box["bottom"] <= 900 and box["right"] <= 1440 and box["left"] >= 300, (run, name, box)
            sidebar = page.locator(".kd-sidebar").first.bounding_box()
            assert sidebar["width"] <= 340 and sidebar["x"] == 0, sidebar
            assert all(box["left"] >= sidebar["width"] for box in boxes), (run, name)
        # the Logits page's own controls are in the sidebar, and only while it is open
        page.goto(f"{url}/?run=digits-cnn&page=logits")
        page.wait_for_function(DRAWN_JS, timeout=60_000)
        assert page.locator(".kd-sidebar .kd-temperature").count() >= 1
        assert page.locator(".kd-sidebar .kd-temperature").first.is_visible()
        open_tab(page, "Overview")
        page.locator(".kd-card").first.wait_for(timeout=20_000)
        assert not page.locator(".kd-sidebar .kd-temperature").first.is_visible()
        assert log["console_errors"] == []


LOADING_JS = """() => { let found = null; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (found === null && el.classList && el.classList.contains('pn-loading')) {
    found = parseFloat(getComputedStyle(el, '::before').opacity); }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return found; }"""


# from now on, count every full draw of every plot on the page (plotly's afterplot event); returns the plots' number
COUNT_DRAWS_JS = """() => { window.kdDraws = {}; let n = 0; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot') && el.on) {
    n++;
    if (!el.dataset.kdPlot) {
      el.dataset.kdPlot = String(document.querySelectorAll('*').length + Math.random());
      el.on('plotly_afterplot', () => { window.kdDraws[el.dataset.kdPlot] = (window.kdDraws[el.dataset.kdPlot] || 0) + 1; });
    } }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return n; }"""
# {plot title: draws counted since COUNT_DRAWS_JS} for every plot on the page
DRAWS_JS = """() => { const out = {}; const walk = (root) => root.querySelectorAll('*').forEach(el => {
  if (el.classList && el.classList.contains('js-plotly-plot') && el.dataset.kdPlot) {
    out[((el.layout || {}).title || {}).text || el.dataset.kdPlot] = window.kdDraws[el.dataset.kdPlot] || 0; }
  if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return out; }"""


def test_a_control_change_draws_each_changed_plot_once(demo_runs):
    """A sample change on the Logits page draws the drill-down once, the histogram (whose selected-sample mark moves)
    once or, for its legend's new width, twice, and leaves the other plots alone. Panel redrew every plot of the page
    at each layout pass and sized each new figure three times (`RedrawOnce`): such a change drew 16 times."""
    require_chromium()
    with kdviz_server(demo_runs["digits-cnn"].path) as url, offline_page((1440, 900)) as (page, log):
        page.goto(f"{url}/?page=logits&sample=3")
        plot_titled(page, "Sample 3:", timeout=60_000)
        page.wait_for_timeout(2_000)  # the first draw and its layout passes are over
        sample = "7"
        assert page.evaluate(COUNT_DRAWS_JS) >= 3
        box = page.locator(".kd-sample input")
        box.fill(sample)
        box.press("Enter")
        plot_titled(page, f"Sample {sample}:")
        page.wait_for_timeout(1_500)  # any later redraw would have come by now
        draws = page.evaluate(DRAWS_JS)
        changed = {title: count for title, count in draws.items() if title.startswith(("Sample", "How far"))}
        assert len(changed) == 2 and len(draws) >= 4, draws
        assert next(count for title, count in changed.items() if title.startswith("Sample")) == 1, draws
        # the histogram's legend names the sample, so plotly may draw it a second time for its new margin
        assert max(changed.values()) <= 2, draws
        assert all(count == 0 for title, count in draws.items() if title not in changed), draws  # left as they were
        assert log["console_errors"] == []


def test_a_page_at_work_for_over_300_ms_says_so(demo_runs):
    """A redraw that takes longer than `LOADING_DELAY_MS` covers its page with Panel's loading overlay until it is
    done; the overlay fades in only after the delay, so that a quick redraw does not flicker. Served in this
    process, with the Logits page's redraw slowed to 1.5 s."""
    import threading
    import time

    from kdviz.app.dashboard import session_app
    from kdviz.explore import RunLibrary
    from kdviz.explore.base import LOADING_DELAY_MS
    from kdviz.explore.logits import LogitExplorer

    require_chromium()
    library = RunLibrary([demo_runs["digits-cnn"]])
    slow = threading.Event()
    redraw = LogitExplorer.redraw

    def slowed(self):
        if slow.is_set():
            time.sleep(1.5)
        redraw(self)

    LogitExplorer.redraw = slowed
    try:
        with in_process_server(lambda: session_app(library)) as url, offline_page((1440, 900)) as (page, log):
            page.goto(f"{url}/?page=logits")
            plot_titled(page, "Sample 0", timeout=60_000)
            assert page.evaluate(LOADING_JS) is None  # nothing at work
            slow.set()
            box = page.locator(".kd-sample input")
            box.fill("7")
            box.press("Enter")
            page.wait_for_function(LOADING_JS.replace("return found; }", "return found !== null; }"), timeout=5_000)
            early = page.evaluate(LOADING_JS)
            page.wait_for_timeout(LOADING_DELAY_MS + 300)
            late = page.evaluate(LOADING_JS)
            assert late == 1.0 and (early is None or early < 1.0), (early, late)  # faded in after the delay
            plot_titled(page, "Sample 7", timeout=20_000)
            page.wait_for_function(LOADING_JS.replace("return found; }", "return found === null; }"), timeout=5_000)
            assert log["console_errors"] == []
    finally:
        slow.clear()
        LogitExplorer.redraw = redraw


def test_the_temperature_lab_fits_a_narrow_notebook(tmp_path):
    """At 640 px (a notebook beside JupyterLab's file browser and a console) every tab of TemperatureLab shows its
    controls, whole labels and figures with no text over text or cut off, and nothing wider than the window."""


    from kdviz.explore.temperature_lab import TABS, TemperatureLab

    require_chromium()
    with in_process_server(lambda: TemperatureLab().__panel__()) as url, offline_page((640, 900)) as (page, log):
        page.goto(url)
        for title in TABS.values():
            page.locator(".bk-tab", has_text=title).first.click()
            page.wait_for_function(DRAWN_JS, timeout=30_000)
            page.wait_for_timeout(300)
            assert page.locator(".bk-tab", has_text=title).first.text_content() == title
            assert text_overlaps(page) == [], title
            assert page.evaluate("() => document.documentElement.scrollWidth") <= 640, title
        assert log["console_errors"] == []


SCREENSHOTS = ARTIFACTS.parent.parent / "docs" / "screenshots"
README_PAGES = [("digits-cnn", page) for page in ("Overview", "Logits", "Attention", "Features", "Attribution", "Training")] \
    + [("on-policy", "Tokens")]
SCREENSHOT_BYTES = 200_000


def test_the_readme_screenshots_are_the_dashboard_as_served(explained_demo_runs):
    """One screenshot per page at 1440×900, taken here from `kdviz serve` of the demo runs. With
    KDVIZ_UPDATE_SCREENSHOTS=1 they are written to docs/screenshots/ (full-colour PNG, under 200 KB each), which the
    README shows; without it, the committed ones must exist."""
    import os

    from PIL import Image

    require_chromium()
    update = os.environ.get("KDVIZ_UPDATE_SCREENSHOTS") == "1"
    (ARTIFACTS / "readme").mkdir(parents=True, exist_ok=True)
    runs = [explained_demo_runs[name] for name in ("digits-cnn", "on-policy")]
    with kdviz_server(*(run.path for run in runs)) as url, offline_page((1440, 900)) as (page, log):
        for run, title in README_PAGES:
            page.goto(f"{url}/?run={run}&page={title.lower()}&sample=3")
            page.locator(".bk-tab.bk-active", has_text=title).wait_for(timeout=20_000)
            page.wait_for_function(SETTLED_JS, timeout=60_000)
            page.wait_for_timeout(500)
            shot = ARTIFACTS / "readme" / f"{title.lower()}.png"
            page.screenshot(path=str(shot))
            if update:
                SCREENSHOTS.mkdir(exist_ok=True)
                image = Image.open(shot)
                image.save(SCREENSHOTS / shot.name, optimize=True)  # every colour kept where it fits
                if (SCREENSHOTS / shot.name).stat().st_size >= SCREENSHOT_BYTES:  # a page of scattered points: 256 colours
                    image.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
                        SCREENSHOTS / shot.name, optimize=True)
                assert (SCREENSHOTS / shot.name).stat().st_size < SCREENSHOT_BYTES, shot.name
        assert log["console_errors"] == []
    for _, title in README_PAGES:
        committed = SCREENSHOTS / f"{title.lower()}.png"
        assert committed.exists(), f"{committed} is missing: run this test with KDVIZ_UPDATE_SCREENSHOTS=1"
