"""The quickstart notebook in a real JupyterLab, driven in Debian's headless Chromium: every cell runs, the logit
explorer (a Panel viewer) shows inline and redraws when its temperature slider moves, the same explorer renders as an
ipywidget (`explorer.ipywidget()`, through jupyter_bokeh), the inline dashboard shows, and nothing is fetched from off
the machine (Panel's JavaScript is inlined into the output rather than taken from a CDN)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from browser import ARTIFACTS, free_port, offline_page, require_chromium, served, text_overlaps

pytest.importorskip("jupyterlab")

ROOT = Path(__file__).resolve().parent.parent


def cell_index(text: str) -> int:
    """The index of the quickstart's first code cell that holds ``text`` (as JupyterLab lists its cells)."""
    cells = json.loads((ROOT / "notebooks" / "quickstart.ipynb").read_text(encoding="utf-8"))["cells"]
    return next(i for i, cell in enumerate(cells) if cell["cell_type"] == "code" and text in "".join(cell["source"]))


EXPLORER_CELL = cell_index("explorer = LogitExplorer(run, T=4.0)")
IPYWIDGET_CELL = cell_index("widgets.VBox([")
DASHBOARD_CELL = cell_index('dashboard(["runs/quickstart"])')

NOTEBOOK = "window.jupyterapp.shell.currentWidget"
KERNEL_READY = f"window.jupyterapp && {NOTEBOOK} && {NOTEBOOK}.sessionContext && {NOTEBOOK}.sessionContext.session && " \
               f"{NOTEBOOK}.sessionContext.session.kernel && {NOTEBOOK}.sessionContext.session.kernel.status === 'idle'"
# every code cell has run: an execution count and no busy prompt [*]
ALL_RAN = f"""() => {NOTEBOOK}.content.widgets.every(cell => cell.model.type !== 'code' ||
    (cell.model.executionCount !== null && !cell.node.querySelector('.jp-InputArea-prompt').textContent.includes('*')))"""
ERRORS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output'))
    .filter(o => o.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr' ||
                 o.querySelector('.jp-RenderedText[data-mime-type="application/vnd.jupyter.error"]'))
    .map(o => o.textContent.slice(0, 500))"""
# [title, x-axis title] of every Plotly figure in a cell, inside Panel's shadow roots too
FIGURES = """(cell) => { const out = []; const walk = (root) => root.querySelectorAll('*').forEach(el => {
    if (el.classList && el.classList.contains('js-plotly-plot') && el.layout) out.push([
        ((el.layout || {}).title || {}).text || '', (((el.layout || {}).xaxis || {}).title || {}).text || '']);
    if (el.shadowRoot) walk(el.shadowRoot); }); walk(cell); return out; }"""


def drawn_at(cell, T: str) -> str:
    """A function for wait_for_function: the cell shows a histogram whose axis says it is drawn at temperature T."""
    return FIGURES.replace("return out; }", f"return out.some(f => f[1].startsWith('forward KL') && f[1].includes('at T={T} ')); }}")


def jupyterlab_command(port: int, root: Path, settings: Path) -> list[str]:
    """JupyterLab on localhost with no token, exposing ``window.jupyterapp`` for the test, and with every call home
    turned off (news, update check, the PyPI extension manager)."""
    return [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
            "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
            f"--LabApp.user_settings_dir={settings}"]


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.timeout(600)
def test_quickstart_in_jupyterlab(tmp_path):
    require_chromium()
    work, settings = tmp_path / "work", tmp_path / "settings"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / "quickstart.ipynb", work)  # JupyterLab saves what it runs: keep the repo's copy clean
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false"}))
    env = {"JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "HF_HUB_OFFLINE": "1"}
    port = free_port()
    with served(jupyterlab_command(port, work, settings), port, env=env, timeout=90), offline_page((1400, 1000)) as (page, log):
        page.goto(f"http://127.0.0.1:{port}/lab/tree/quickstart.ipynb")
        page.wait_for_function(KERNEL_READY, timeout=120_000, polling=250)
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(f"() => {NOTEBOOK}.content.widgets.some(c => c.model.executionCount !== null)", timeout=60_000)
        page.wait_for_function(ALL_RAN, timeout=420_000, polling=1000)
        assert page.evaluate(ERRORS) == []

        cell = page.locator(".jp-Notebook .jp-Cell").nth(EXPLORER_CELL)
        cell.scroll_into_view_if_needed()
        assert "LogitExplorer" in cell.locator(".jp-InputArea").text_content()
        page.wait_for_function(drawn_at(cell, "4"), arg=cell.element_handle(), timeout=60_000, polling=250)
        before = cell.evaluate(FIGURES)
        handle = cell.locator(".kd-temperature .noUi-handle")  # Playwright's locators pierce Panel's shadow roots
        assert handle.count() == 1, "the explorer's temperature slider did not render"
        handle.focus()  # the slider moves by one stop per arrow key: T = 4 -> 6
        page.keyboard.press("ArrowRight")
        page.wait_for_function(drawn_at(cell, "6"), arg=cell.element_handle(), timeout=30_000, polling=250)
        after = cell.evaluate(FIGURES)
        detail_before = next(title for title, _ in before if title.startswith("Sample "))
        detail_after = next(title for title, _ in after if title.startswith("Sample "))
        assert "at T=4 " in detail_before and "at T=6 " in detail_after and detail_before != detail_after
        ARTIFACTS.mkdir(exist_ok=True)
        cell.screenshot(path=str(ARTIFACTS / "jupyterlab-logit-explorer.png"))
        # beside the file browser the explorer's figures wrap to the notebook's width: none is cut off, no text
        # covers another, and its output does not scroll sideways (the summary table was clipped at 1440 px)
        assert text_overlaps(page) == []
        output = cell.locator(".jp-OutputArea-output").first
        assert output.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), "the explorer is wider than the notebook"

        # the same explorer as an ipywidget: rendered by jupyter_bokeh, showing the state the slider set
        wrapped = page.locator(".jp-Notebook .jp-Cell").nth(IPYWIDGET_CELL)
        wrapped.scroll_into_view_if_needed()
        assert "ipywidget()" in wrapped.locator(".jp-InputArea").text_content()
        wrapped.locator(".jp-OutputArea").get_by_text("inside an ipywidgets layout").wait_for(timeout=30_000)
        page.wait_for_function(drawn_at(wrapped, "6"), arg=wrapped.element_handle(), timeout=60_000, polling=250)
        assert wrapped.locator(".kd-temperature .noUi-handle").count() == 1
        wrapped.screenshot(path=str(ARTIFACTS / "jupyterlab-explorer-ipywidget.png"))

        dashboard = page.locator(".jp-Notebook .jp-Cell").nth(DASHBOARD_CELL)
        dashboard.scroll_into_view_if_needed()
        dashboard.get_by_text("Overview").first.wait_for(timeout=30_000)  # the Panel app's first tab, inline
        dashboard.screenshot(path=str(ARTIFACTS / "jupyterlab-dashboard.png"))

    assert log["blocked"] == [], f"JupyterLab fetched from off the machine: {log['blocked']}"
    assert log["console_errors"] == [], log["console_errors"]
    assert log["dialogs"] == []
