"""The dashboard: a sidebar with the run, step and sample shown and the open page's controls, beside a tab per
explorer whose figures sit in a grid. One `Selection` per session links the explorers: a sample picked in any view
is the sample every explorer shows.

``dashboard(library)`` builds one session's app; ``kdviz serve`` and ``notebooks/dashboard.ipynb`` serve it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from html import escape

import panel as pn

from kdviz.app.query import parse_query
from kdviz.explore import EXPLORERS, RunLibrary, Selection
from kdviz.explore.base import SIDEBAR_WIDGET_WIDTH, SIDEBAR_WIDTH, at_once, for_presentation, notice, tabs
from kdviz.explore.redraw_once import redraw_once
from kdviz.views import theme


class Dashboard:
    """One session: the selection, its header controls and the explorers. ``pages`` by title, ``layout`` to serve."""

    def __init__(self, library: RunLibrary, *, run: str | None = None, sample: int | None = None,
                 step: int | None = None, page: str | None = None, present: bool = False) -> None:
        self.library = library
        self.selection = Selection()
        self.selection.param.run.objects = library.names
        first = run if run in library.names else library.names[0]
        self.pages = {kind.title: kind(library=library, selection=self.selection, present=present)
                      for kind in EXPLORERS}
        width = SIDEBAR_WIDGET_WIDTH
        self.run_menu = at_once(pn.widgets.Select(label="run", options=library.names, value=first, width=width))
        self.step_menu = at_once(pn.widgets.Select(label="training step", options={}, width=width, visible=False))
        self.sample_input = at_once(pn.widgets.IntInput(label="sample", value=0, start=0, width=width, css_classes=["kd-sample"]))
        # dynamic: the browser holds only the open page's figures. With every page's figures laid out, each page
        # opened later drew slower (Attribution 2.5 s against 1.4 s), since every layout change relays them all out
        self.tabs = tabs(*(page.view for page in self.pages.values()), dynamic=True, sizing_mode="stretch_width")
        self.run_menu.param.watch(lambda event: self.show_run(event.new), "value")
        self.step_menu.param.watch(self._step_chosen, "value")
        self.sample_input.param.watch(self._sample_typed, "value")
        self.selection.param.watch(self._selection_changed, ["sample", "step"])
        self.tabs.param.watch(self._tab_changed, "active")
        self.show_run(first)
        if sample is not None:
            self.selection.sample = min(max(0, sample), self.library.run(first).n_samples - 1)
        if step is not None and step in self.library.run(first).steps:
            self.selection.step = step
        if page in self.pages:
            self.tabs.active = list(self.pages).index(page)
        self._tab_changed()
        note = f"font-family:{theme.FONT_FAMILY};color:{theme.NEUTRAL};font-size:14px;line-height:1.4"
        header = pn.pane.HTML(
            f"<h1 style='font-family:{theme.FONT_FAMILY};margin:0'>kdviz</h1>"
            f"<div style='{note}'>knowledge distillation, teacher vs student</div>"
            f"<div class='kd-runs' style='{note};margin-top:4px'>serving {escape(', '.join(library.names))}</div>",
            width=width)
        broken = [notice(f"{name} cannot be shown", reason) for name, reason in library.failures.items()]
        rule = pn.pane.HTML(f"<hr style='border:0;border-top:1px solid {theme.MUTED};margin:4px 0'>", width=width)
        sidebar = pn.Column(header, self.run_menu, self.step_menu, self.sample_input, rule,
                            *(page.controls for page in self.pages.values()), width=SIDEBAR_WIDTH,
                            css_classes=["kd-sidebar"], styles={"background": theme.CARD, "min-height": "100vh",
                                                                "border-right": f"1px solid {theme.MUTED}"},
                            margin=0)
        self.layout = pn.Row(
            sidebar, pn.Column(*broken, self.tabs, redraw_once(), sizing_mode="stretch_width"),
            styles={"background": theme.BACKGROUND, "min-height": "100vh"}, sizing_mode="stretch_width", margin=0,
        )
        if present:
            for_presentation(self.layout)

    def show_run(self, name: str) -> None:
        """Switch every explorer to another served run."""
        run = self.library.run(name)
        steps = run.steps
        self.sample_input.end = run.n_samples - 1
        self.step_menu.options = {f"step {s}": s for s in steps}
        self.step_menu.visible = bool(steps)
        self.selection.choose(name, run.n_samples, steps)
        if self.run_menu.value != name:
            self.run_menu.value = name

    def _tab_changed(self, *_events: object) -> None:
        for index, page in enumerate(self.pages.values()):
            page.controls.visible = index == self.tabs.active
            page.set_shown(index == self.tabs.active)

    def _step_chosen(self, event: object) -> None:
        if event.new is not None and event.new != self.selection.step:
            self.selection.step = event.new

    def _sample_typed(self, event: object) -> None:
        if event.new is not None and event.new != self.selection.sample:
            self.selection.sample = int(event.new)

    def _selection_changed(self, *_events: object) -> None:
        """Mirror a sample or step picked in a view in the header controls."""
        if self.sample_input.value != self.selection.sample:
            self.sample_input.value = self.selection.sample
        if self.selection.step is not None and self.step_menu.value != self.selection.step:
            self.step_menu.value = self.selection.step


def session_app(library: RunLibrary, *, present: bool = False) -> pn.viewable.Viewable:
    """A new session's layout. ``?run=NAME`` (a served run's name, nothing else), ``?sample=I``, ``?step=S`` and
    ``?page=logits`` choose what opens, ``?present=1`` (or ``present``, as ``kdviz serve --present`` sets it) draws it
    for projection and ``?present=0`` not (`kdviz.app.query`: anything else in the URL is ignored)."""
    # plotly.js from Panel's local bundle, loaded with the page (the first tab has no plot). Shown inline in a
    # notebook kernel (not served), Bokeh and Panel's JavaScript would come from a CDN unless inlined in the output.
    # A served session must not pass inline at all: in forked server processes (--num-procs) that made Panel link
    # its CSS from its CDN.
    if not pn.state.served and pn.state.curdoc is None:
        pn.extension("plotly", inline=True)
    else:
        pn.extension("plotly")
    # a dragged slider (the temperature, α, a threshold) sends its value once, when released: a drag from T = 4 to
    # T = 20 redrew the Logits page at every step on the way (4.9 s to settle)
    pn.config.throttled = True
    query = parse_query(pn.state.session_args, runs=library.names, pages=[kind.title for kind in EXPLORERS])
    return Dashboard(library, run=query.run, sample=query.sample, step=query.step, page=query.page,
                     present=present if query.present is None else query.present).layout


def dashboard(paths: Sequence[str | os.PathLike]) -> pn.viewable.Viewable:
    """The app over the runs under ``paths``, for ``panel serve`` of a notebook or script: the runs are opened once
    per server process (``pn.state.as_cached``) and shared by its sessions."""
    key = "kdviz-library:" + "|".join(os.path.abspath(os.fspath(p)) for p in paths)
    library = pn.state.as_cached(key, lambda: RunLibrary.from_paths(paths))
    return session_app(library)
