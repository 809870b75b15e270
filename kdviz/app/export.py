"""``kdviz export``: one self-contained HTML file of a fixed selection of views, to attach to a paper or an email.

plotly.js is inlined once (compressed: `app.embed`), every figure is a static div with its JSON beside it, and
nothing is fetched: the file opens offline. Every string from a run is HTML-escaped (figures escape their own
labels). A page whose data the run lacks says so and how to capture it, as the dashboard does.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from kdviz.app.embed import figure_html, loader_js, packed_plotlyjs
from kdviz.errors import CorruptRunError, InputError, KdvizError
from kdviz.explore import EXPLORERS, Explorer, RunLibrary, Selection, open_runs
from kdviz.store import Run
from kdviz.views import theme

PAGES = tuple(kind.title.lower() for kind in EXPLORERS)
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def export_html(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, sample: int = 0,
                pages: Sequence[str] | None = None, T: float | None = None,
                state: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """Write the chosen ``pages`` (default: all) of every run under ``paths`` for sample ``sample`` into one HTML file.

    The figures are each explorer's `figures()`, so the file shows what the dashboard shows for that selection:
    ``T`` is the shared temperature (default 4), ``state`` sets explorer parameters by page, such as
    ``{"logits": {"measure": "renyi", "alpha": 2.0}}``.
    """
    pages = list(pages or PAGES)
    unknown = [p for p in pages if p not in PAGES]
    if unknown:
        raise InputError(f"unknown pages {unknown}; choose from {list(PAGES)}")
    runs = open_runs(paths)
    for run in runs:
        if not 0 <= sample < run.n_samples:
            raise InputError(f"sample {sample} is outside run {run.name!r} ({run.n_samples} samples)")
    state = {page: dict(values) for page, values in (state or {}).items()}
    check_state(state)
    library = RunLibrary(runs)  # never writes into a run
    figure_numbers = itertools.count()
    body = [_run_section(library, run, sample, pages, T, state, figure_numbers) for run in runs]
    title = "kdviz: " + ", ".join(run.name for run in runs)
    document = TEMPLATE.format(title=escape(title), css=CSS, plotlyjs=packed_plotlyjs(), heading=escape(title),
                               body="\n".join(body), loader=loader_js(PLOT_CONFIG))
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(document, encoding="utf-8")
    os.replace(tmp, out)
    return out


def check_state(state: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a page or parameter the explorers do not have, and a value a parameter does not take."""
    by_page = {kind.title.lower(): kind for kind in EXPLORERS}
    for page, values in state.items():
        if page not in by_page:
            raise InputError(f"no explorer called {page!r}; choose from {list(by_page)}")
        kind = by_page[page]
        for name, value in values.items():
            if name not in kind.param or name == "name":
                raise InputError(f"the {page} explorer has no setting {name!r}; it has {[n for n in kind.param if n != 'name']}")
            try:
                kind.param[name]._validate(value)
            except ValueError as exc:
                raise InputError(f"{page} {name}={value!r} is not accepted: {exc}") from None


def explorer_figures(kind: type[Explorer], library: RunLibrary, selection: Selection,
                     state: Mapping[str, Any]) -> list[go.Figure]:
    """The figures of one explorer with parameters ``state`` for ``selection``; raises the `KdvizError` that says
    what the run lacks."""
    explorer = kind(library=library, selection=selection, **state)
    explorer.set_shown(True)
    if explorer.crash is not None:
        raise explorer.crash  # a failure is never exported as if the run lacked the page
    if explorer.problem is not None:
        raise explorer.problem
    return list(explorer.figures().values())


def _run_section(library: RunLibrary, run: Run, sample: int, pages: Sequence[str], T: float | None,
                 state: dict[str, dict[str, Any]], figure_numbers: Iterator[int]) -> str:
    # never where the run lies on this machine: an export is made to be shared
    parts = [f"<section class='kd-run'><h2>{escape(run.name)}</h2><pre>{escape(str(run.info(location=False)))}</pre>"]
    by_page = {kind.title.lower(): kind for kind in EXPLORERS}
    for page in pages:
        parts.append(f"<h3>{escape(page.capitalize())}</h3>")
        selection = Selection.for_run(run, library.names, sample=sample, T=T)
        try:
            figures = explorer_figures(by_page[page], library, selection, state.get(page, {}))
        except CorruptRunError:
            raise  # a damaged run is never exported as if it lacked a page
        except KdvizError as exc:  # the run lacks this page's data: say so, and how to capture it
            parts.append(f"<p class='kd-missing'>{escape(str(exc))}</p>")
            continue
        parts.extend(figure_html(fig, next(figure_numbers)) for fig in figures)
    parts.append("</section>")
    return "\n".join(parts)


CSS = f"""
body {{ font-family: {theme.FONT_FAMILY}; background: {theme.BACKGROUND}; color: {theme.INK}; margin: 24px; }}
.kd-run {{ background: {theme.CARD}; border-radius: 8px; padding: 12px 20px; margin-bottom: 24px;
           box-shadow: {theme.SHADOW}; }}
pre {{ font-size: 12px; color: {theme.NEUTRAL}; white-space: pre-wrap; }}
.kd-missing {{ color: {theme.NEUTRAL}; font-style: italic; }}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{css}</style>
<script type="application/octet-stream" id="kd-plotlyjs">{plotlyjs}</script>
</head><body>
<h1>{heading}</h1>
<p id="kd-unpack-note" class="kd-missing"></p>
{body}
<script type="text/javascript">{loader}</script>
</body></html>
"""
