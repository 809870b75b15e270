"""Helpers for real-browser tests: a `kdviz serve` subprocess and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def require_chromium() -> str:
    """Debian's chromium; CI installs it (.ci/run), so there a missing browser fails instead of skipping."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get install -y chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def kdviz_server(*run_paths: Path, timeout: float = 60, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """Run `kdviz serve` on a free localhost port; yields its URL and stops it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "kdviz.cli", "serve", *map(str, run_paths), "--port", str(port), *extra]
    with served(command, port, timeout=timeout):
        yield f"http://localhost:{port}"


@contextlib.contextmanager
def served(command: list[str], port: int, *, timeout: float = 60, env: dict[str, str] | None = None,
           cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start a server process and wait until it listens on ``port``; stops it afterwards."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})}, cwd=cwd)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{command[2:4]} exited early:\n{process.stdout.read()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{command[2:4]} did not start listening in time")
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def is_purged_plot_resize(exc: object) -> bool:
    """Whether a page error is Panel 1.9's Plotly view laying out a plot it has already removed: ``remove()``
    purges the plot, and a stylesheet that finishes loading afterwards still calls ``style_redraw`` →
    ``resize_layout`` → ``Plotly.relayout`` on the purged div, which throws on its missing ``_fullLayout``
    ("reading '_guiEditing'"). It happens when a rebuild replaces a page's plots while their stylesheets load; the
    plot is gone, so nothing a visitor sees changes. Recognised by its whole stack, so every other error counts."""
    stack = getattr(exc, "stack", None) or ""
    return "_guiEditing" in str(exc) and "resize_layout" in stack and "relayout" in stack


@contextlib.contextmanager
def offline_page(viewport: tuple[int, int] = (1280, 900)) -> Iterator[tuple[object, dict[str, list[str]]]]:
    """A Chromium page that refuses every request off localhost; yields it with logs of console errors,
    blocked requests and dialogs. ``offline_tab(page.context.browser, log)`` opens more such pages, each in its own
    browser context (its own session cookies and storage), logging into the same ``log``."""
    from playwright.sync_api import sync_playwright

    log: dict[str, list[str]] = {"console_errors": [], "blocked": [], "dialogs": [], "panel_purged_plot": []}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=require_chromium(), args=CHROMIUM_ARGS)
        try:
            yield offline_tab(browser, log, viewport), log
        finally:
            browser.close()


def offline_tab(browser, log: dict[str, list[str]], viewport: tuple[int, int] = (1280, 900)):
    """A new page in a new context of ``browser`` that refuses every request off localhost, logging console errors,
    blocked requests and dialogs (dismissed) into ``log``."""
    page = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}).new_page()
    page.on("console", lambda msg: log["console_errors"].append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: log["panel_purged_plot"].append(str(exc)) if is_purged_plot_resize(exc)
            else log["console_errors"].append(str(exc)))

    def on_dialog(dialog) -> None:
        log["dialogs"].append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(("http://localhost", "http://127.0.0.1", "ws://localhost", "ws://127.0.0.1", "data:", "blob:")):
            request_route.continue_()
        else:
            log["blocked"].append(url)
            request_route.abort()

    page.route("**/*", route)
    return page


# Every pair of visible SVG text boxes of every plot on a page that intersect (tick labels, titles, legend entries,
# annotations, colour-bar text and cell text, read from the SVG that plotly.js drew, the hover layer left out), and
# every text that runs past its plot's left or right edge, where the page cuts it off.
# A box spans its line's full height, ascender to descender, so two boxes that overlap by less than a quarter of
# the smaller one's height (or by 2 px or less across) are glyphs that do not touch.
TEXT_OVERLAPS_JS = """
() => {
  const out = [];
  const visible = (el) => {
    for (let node = el; node && node.nodeType === 1; node = node.parentNode) {
      const style = getComputedStyle(node);
      if (style.display === 'none' || style.visibility === 'hidden' || parseFloat(style.opacity) === 0) return false;
    }
    return true;
  };
  const plots = [];
  const find = (root) => root.querySelectorAll('*').forEach((el) => {  // through Panel's shadow roots too
    if (el.classList.contains('plotly-graph-div') || el.classList.contains('js-plotly-plot')) plots.push(el);
    if (el.shadowRoot) find(el.shadowRoot);
  });
  find(document);
  plots.forEach((div, index) => {
    const boxes = [];
    div.querySelectorAll('svg.main-svg text').forEach((t) => {
      if (t.closest('.hoverlayer')) return;
      const text = (t.textContent || '').trim();
      if (!text || !visible(t)) return;
      const r = t.getBoundingClientRect();
      if (r.width < 1 || r.height < 1) return;
      const kind = t.getAttribute('class') || (t.parentNode.getAttribute && t.parentNode.getAttribute('class')) || '';
      boxes.push({text: text.slice(0, 40), kind, r});
    });
    const title = ((div.querySelector('.gtitle') || {}).textContent || '').slice(0, 60);
    const section = div.closest('section');
    const heading = section && section.querySelector('h2') ? section.querySelector('h2').textContent : '';
    const edge = div.getBoundingClientRect();  // a text cut off by the plot's own edge is as unreadable as one covered
    boxes.forEach(({text, kind, r}) => {
      const past = Math.max(r.right - edge.right, edge.left - r.left);
      if (past > 2) out.push(`${heading} plot ${index} «${title}»: «${text}» (${kind}) runs ${past.toFixed(0)} px past the plot's edge`);
    });
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].r, b = boxes[j].r;
      const across = Math.min(a.right, b.right) - Math.max(a.left, b.left);
      const down = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
      if (across > 2 && down > 0.25 * Math.min(a.height, b.height)) {
        out.push(`${heading} plot ${index} «${title}»: «${boxes[i].text}» (${boxes[i].kind}) over «${boxes[j].text}» ` +
                 `(${boxes[j].kind}), ${across.toFixed(0)}×${down.toFixed(0)} px`);
      }
    }
  });
  return out;
}
"""


def text_overlaps(page) -> list[str]:
    """Each pair of text boxes that intersect in a plot drawn on ``page``, and each text cut off by its plot's edge
    (`TEXT_OVERLAPS_JS`), named by the run's heading, the plot's title and the texts."""
    return page.evaluate(TEXT_OVERLAPS_JS)


SMALL_TEXT_JS = """
(minPx) => {
  const out = [];
  const walk = (root) => {
    root.querySelectorAll('*').forEach((el) => {
      if (el.shadowRoot) walk(el.shadowRoot);
      const own = [...el.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent).join('').trim();
      if (!own || el.closest('.hoverlayer') || ['STYLE', 'SCRIPT', 'TITLE'].includes(el.tagName)) return;
      const r = el.getBoundingClientRect();
      if (r.width < 1 || r.height < 1) return;
      if (!el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true})) return;
      const size = parseFloat(getComputedStyle(el).fontSize);
      if (size < minPx) out.push(`${el.tagName.toLowerCase()}.${el.getAttribute('class') || ''} «${own.slice(0, 40)}» ${size} px`);
    });
  };
  walk(document);
  return out;
}
"""


def small_text(page, min_px: float) -> list[str]:
    """Every visible text on ``page`` (through Panel's shadow roots, plots' SVG included, hover labels not) whose
    computed font size is under ``min_px``: its element, class, text and size."""
    return page.evaluate(SMALL_TEXT_JS, min_px)


@contextlib.contextmanager
def in_process_server(app) -> Iterator[str]:
    """Serve ``app`` (a function returning a Panel layout) from a thread of this process, for a test that patches
    kdviz code the server runs; yields its URL once it answers, and stops it after."""
    import urllib.request

    import panel as pn

    port = free_port()
    server = pn.serve({"/": app}, port=port, address="127.0.0.1", show=False, threaded=True,
                      websocket_origin=[f"localhost:{port}"])
    url = f"http://localhost:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(url, timeout=5).close()
                break
            except OSError:  # the server thread is still starting
                time.sleep(0.2)
        yield url
    finally:
        server.stop()


# each visible list-box option (a <select size=N>, through Panel's shadow roots) whose text is wider than the box
CUT_OPTIONS_JS = """
() => {
  const out = [], ctx = document.createElement('canvas').getContext('2d');
  const walk = (root) => root.querySelectorAll('*').forEach((el) => {
    if (el.shadowRoot) walk(el.shadowRoot);
    if (el.tagName !== 'SELECT' || !(el.size > 1) || !el.checkVisibility()) return;
    const style = getComputedStyle(el.options[0] || el);
    ctx.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const room = el.clientWidth - parseFloat(getComputedStyle(el).paddingLeft) - parseFloat(getComputedStyle(el).paddingRight)
      - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    for (const option of el.options) {
      const width = ctx.measureText(option.text).width;
      if (width > room + 1) out.push(`«${option.text}» ${Math.round(width)} px in ${Math.round(room)} px`);
    }
  });
  walk(document);
  return out;
}
"""


def cut_options(page) -> list[str]:
    """Each row of a visible list box (the sample lists) too wide for the box, which the browser cuts off."""
    return page.evaluate(CUT_OPTIONS_JS)
