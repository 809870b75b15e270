"""`Explorer`: one concern's controls and figures, as a Panel `Viewer`. The same object shows inline in a notebook,
is a tab of the served dashboard, gives `kdviz export` its figures (`figures`) and wraps as an ipywidget
(`ipywidget`).

An explorer rebuilds when the run or step changes and redraws when the shared `Selection` changes, and does either
only while shown (a hidden tab catches up when opened).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from html import escape
from typing import Any, ClassVar

import panel as pn
import plotly.graph_objects as go
from panel.viewable import Viewer

from kdviz.errors import InputError, KdvizError
from kdviz.explore.library import RunLibrary
from kdviz.explore.redraw_once import redraw_once
from kdviz.explore.selection import Selection
from kdviz.store import Run
from kdviz.views import theme

log = logging.getLogger("kdviz.explore")
# the modebar's camera saves a PNG in the browser (no server, no kaleido); the plotly logo and editing are off
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
NOTICE_CSS = f"""
.kd-notice {{ background: {theme.CARD}; border-left: 4px solid {theme.MUTED}; border-radius: 6px; padding: 14px 18px;
              margin: 12px 6px; font-family: {theme.FONT_FAMILY}; color: {theme.INK}; max-width: 900px; }}
.kd-notice h3 {{ margin: 0 0 6px 0; font-size: 15px; }}
.kd-notice p {{ margin: 0; color: {theme.NEUTRAL}; font-size: 14px; line-height: 1.5; }}
"""
# A page at work is covered by Panel's loading overlay, shown only once the work has taken LOADING_DELAY_MS (a quick
# redraw does not flicker), with its spinner in sight on a long page
LOADING_DELAY_MS = 300
LOADING_CSS = f"""
:host(.pn-loading)::before, :host(.pn-loading)::after {{ animation: kd-loading 150ms ease-in {LOADING_DELAY_MS}ms both; }}
:host(.pn-loading)::before {{ top: min(50%, 40vh); }}
@keyframes kd-loading {{ from {{ opacity: 0; }} to {{ opacity: 1; }} }}
"""
# Panel 1.9 renamed button_type to color (the old name warns); earlier versions know only button_type
LIGHT_BUTTONS = {"color" if "color" in pn.widgets.RadioButtonGroup.param else "button_type": "light"}


def plot(fig: go.Figure | None = None, **kwargs: Any) -> pn.pane.Plotly:
    """A Plotly pane stretched to the page width (its height is the figure's); a click or a dragged box on it is
    handled at once (`at_once`)."""
    return at_once(pn.pane.Plotly(fig, config=PLOT_CONFIG, sizing_mode="stretch_width", **kwargs),
                   "click_data", "relayout_data")


DISCRETE_VALUES = ("value", "active")  # the browser-side properties a menu, number box, toggle or button group sets


def at_once(component: Any, *properties: str) -> Any:
    """Handle ``component``'s browser changes (by default its value) on the server's next tick. Panel waits 50 ms
    after each change a browser sends, to merge the bursts of a dragged slider; a menu, a number box, a toggle or a
    click sends one change per act, so waiting only adds 50 ms to every redraw it causes."""
    component._priority_changes = [*type(component)._priority_changes, *(properties or DISCRETE_VALUES)]
    return component


def notice(title: str, message: str) -> pn.pane.HTML:
    """A calm note in place of an explorer whose data the run lacks: what is missing and how to capture it."""
    return pn.pane.HTML(f"<div class='kd-notice'><h3>{escape(title)}</h3><p>{escape(message)}</p></div>",
                        stylesheets=[NOTICE_CSS], sizing_mode="stretch_width")


def for_presentation(viewable: pn.viewable.Viewable) -> pn.viewable.Viewable:
    """Presentation mode for a layout: every HTML pane under it gets `theme.PRESENT_CSS` (no text under 18 px) and
    every widget 18 px labels and values (Bokeh's font size variable, which its shadow roots inherit)."""
    for pane in viewable.select(pn.pane.markup.HTMLBasePane):
        if theme.PRESENT_CSS not in pane.stylesheets:
            pane.stylesheets = [*pane.stylesheets, theme.PRESENT_CSS]
    for widget in [*viewable.select(pn.widgets.Widget), *viewable.select(pn.layout.Tabs)]:
        if theme.PRESENT_WIDGET_CSS not in widget.stylesheets:
            widget.stylesheets = [*widget.stylesheets, theme.PRESENT_WIDGET_CSS]
    return viewable



# Bokeh keeps every tab's content laid out, the hidden ones at visibility: hidden with zero height; their content
# still overflowed them, so every page of the dashboard scrolled as far as its longest tab (2,569 px on the Overview)
TABS_CSS = 'div[style*="visibility: hidden"] { overflow: hidden; max-height: 0; }'


def tabs(*items: Any, **kwargs: Any) -> pn.Tabs:
    """A `pn.Tabs` whose hidden tabs take no room: a page is as long as what it shows."""
    return pn.Tabs(*items, stylesheets=[TABS_CSS], **kwargs)


# the dashboard's sidebar: the run, step and sample menus, then the open page's own controls
SIDEBAR_WIDTH = 320
SIDEBAR_WIDGET_WIDTH = SIDEBAR_WIDTH - 20  # a widget's width there, within its margins
GRID_CELL_PX = 520  # a figure of a page's grid takes at least this width: two side by side beside the sidebar at 1440 px


def grid(*items: Any, basis: int = GRID_CELL_PX) -> pn.FlexBox:
    """Figures side by side, each at least ``basis`` px wide, wrapping to one column where the page is narrower (or
    in presentation mode, whose text needs the width)."""
    basis = basis if not theme.presenting() else 2 * basis
    for item in items:
        item.styles = {**item.styles, "flex": f"1 1 {basis}px", "min-width": "0"}
    return pn.FlexBox(*items, flex_wrap="wrap", sizing_mode="stretch_width")


def heading(text: str) -> pn.pane.HTML:
    return pn.pane.HTML(f"<h3 style='font-family:{theme.FONT_FAMILY};margin:6px 6px 0 6px'>{escape(text)}</h3>")


def clicked_point(event_data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The first point of a Plotly pane's ``click_data``, or None."""
    points = (event_data or {}).get("points") or []
    return points[0] if points else None


def load_notebook_extension() -> None:
    """Load Panel's notebook extension with plotly.js once per kernel, inlined so that nothing comes from a CDN."""
    if not getattr(load_notebook_extension, "done", False):
        pn.extension("plotly", inline=True)
        load_notebook_extension.done = True  # type: ignore[attr-defined]


def inline_ipywidget(obj: Any) -> Any:
    """``obj`` as an ipywidgets widget (jupyter_bokeh's BokehModel) whose Panel stylesheets are inlined, as Panel does
    for its own notebook output: `pn.ipywidget` alone links them from Panel's CDN."""
    from bokeh.models import UIElement
    from panel.io.notebook import patch_inline_stylesheets

    load_notebook_extension()
    widget = pn.ipywidget(obj)
    for model in widget._model.select({"type": UIElement}):
        patch_inline_stylesheets(model)
    widget.update_from_model(widget._model)
    return widget


class FigureViewer(Viewer):
    """A viewer with figures by name, shown inline in a notebook, as a Panel object or as an ipywidget. Subclasses set
    ``_layout`` (what is shown) and keep ``_figures`` current."""

    _layout: pn.viewable.Viewable
    _figures: dict[str, go.Figure]
    present: bool = False  # presentation mode: figures through `theme.presented`, no text under 18 px

    def drawn(self, fig: go.Figure) -> go.Figure:
        """``fig`` as this viewer draws it: for projection in presentation mode, else as it is."""
        return theme.presented(fig) if self.present else fig

    def __panel__(self) -> pn.viewable.Viewable:
        return self._layout

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> Any:
        load_notebook_extension()
        return super()._repr_mimebundle_(include, exclude)

    def figures(self) -> dict[str, go.Figure]:
        """The figures shown now, by name (what `kdviz export` writes)."""
        return dict(self._figures)

    def ipywidget(self) -> Any:
        """This viewer as an ipywidgets widget (through jupyter_bokeh), for layouts built on ipywidgets."""
        return inline_ipywidget(self._layout)


class Explorer(FigureViewer):
    """One concern's explorer. Subclasses set ``title`` and ``watches`` (the `Selection` parameters they draw), declare
    their own state as parameters, and implement ``build`` (the panes for the selected run, raising `KdvizError` when
    the run lacks the data) and ``redraw``.

    In a notebook: ``LogitExplorer(run)`` opens the run, owns its selection and builds at once (a run that lacks the
    data raises the `KdvizError` that says how to capture it). In the dashboard, every explorer of a session shares
    one ``selection`` and one ``library``.
    """

    title: ClassVar[str] = ""
    watches: ClassVar[tuple[str, ...]] = ("sample",)
    standalone_controls: ClassVar[tuple[str, ...]] = ("sample",)  # the selection controls a notebook explorer shows

    def __init__(self, run: Run | str | os.PathLike | None = None, *, step: int | None = None, sample: int = 0,
                 T: float | None = None, library: RunLibrary | None = None, selection: Selection | None = None,
                 present: bool | None = None, **params: Any) -> None:
        try:
            super().__init__(**params)
        except (ValueError, TypeError) as exc:  # param's refusal of a setting, said as kdviz says it
            raise InputError(f"{type(self).__name__} does not take that setting: {exc}") from None
        self.standalone = library is None
        self.present = theme.presenting() if present is None else bool(present)
        if library is None:
            library, selection = self._own_selection(run, step, sample, T)
        elif selection is None:
            raise InputError("an explorer given a library needs the session's selection too")
        self.library, self.selection = library, selection
        self.view = pn.Column(name=self.title, sizing_mode="stretch_width", stylesheets=[LOADING_CSS])
        # this page's own controls (`sidebar`): the dashboard shows them in its sidebar while the page is open, a
        # notebook explorer in a row above its figures
        self.controls = (pn.FlexBox(flex_wrap="wrap", sizing_mode="stretch_width") if self.standalone
                         else pn.Column(width=SIDEBAR_WIDTH, margin=0))
        self._figures: dict[str, go.Figure] = {}
        self._drawn_inputs: dict[str, tuple] = {}  # what each figure shown by `show_changed` was drawn from
        self.problem: KdvizError | None = None  # why the selected run could not be shown (None: it is shown)
        self.crash: Exception | None = None  # the exception behind a problem that is a failure, not missing data
        self.shown = False
        self.ready = False  # built for the selected run
        self.dirty = False  # built, but the selection changed while hidden
        self._updating = False
        self._control_watchers: list[Any] = []
        selection.param.watch(self._changed, ["run", "step", *self.watches])
        self.param.watch(self._state_changed, [name for name in self.param if name != "name"])
        self._layout: pn.viewable.Viewable = self.view
        if self.standalone:
            self.shown = self.ready = True
            with theme.drawing_for(self.present):
                self.view.objects = self.build()  # a notebook user gets the error with its fix, not a notice
            self._layout = pn.Column(*self._selection_controls(), self.controls, self.view, redraw_once(),
                                     sizing_mode="stretch_width")
            if self.present:
                for_presentation(self._layout)

    def _own_selection(self, run: Run | str | os.PathLike | None, step: int | None, sample: int,
                       T: float | None) -> tuple[RunLibrary, Selection]:
        if run is None:
            raise InputError(f"{type(self).__name__} needs a run: {type(self).__name__}('runs/NAME.kdviz') or a kdviz.Run")
        opened = run if isinstance(run, Run) else Run.open(run)
        return RunLibrary([opened], writes_cache=True), Selection.for_run(opened, step=step, sample=sample, T=T)

    def _selection_controls(self) -> list[Any]:
        """A notebook explorer's own step menu (runs with training history) and sample box."""
        base = self.library.run(self.selection.run)
        controls: list[Any] = []
        if base.steps:
            controls.append(at_once(pn.widgets.Select.from_param(self.selection.param.step, label="training step",
                                                                 options={f"step {s}": s for s in base.steps}, width=160)))
        if "sample" in self.watches and "sample" in self.standalone_controls:
            controls.append(at_once(pn.widgets.IntInput.from_param(self.selection.param.sample, label="sample", start=0,
                                                                   end=base.n_samples - 1, width=120)))
        return [pn.Row(*controls)] if controls else []

    # ---- for subclasses ----
    @property
    def run(self) -> Run:
        return self.library.run(self.selection.run, self.selection.step)

    def data(self, kind: str) -> Any:
        return self.library.data(kind, self.selection.run, self.selection.step)

    def build(self) -> list[Any]:  # pragma: no cover - each explorer defines it
        raise NotImplementedError

    def redraw(self) -> None:
        """Redraw what depends on the shared selection or this explorer's state."""

    def state_changed(self, names: set[str]) -> None:
        """This explorer's own parameters ``names`` changed: redraw by default."""
        self.redraw()

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Set state inside this block without its watchers (or the shared selection's) redrawing."""
        self._updating = True
        try:
            yield
        finally:
            self._updating = False

    def sidebar(self, *items: Any) -> None:
        """Show ``items`` (widgets, or rows of them) as this page's controls. In the dashboard's sidebar a widget
        takes the sidebar's width."""
        shown = [item for item in items if item is not None]
        if not self.standalone:
            for item in shown:
                if isinstance(item, pn.widgets.Widget):
                    item.param.update(width=SIDEBAR_WIDGET_WIDTH)
        self.controls.objects = shown

    def control(self, name: str, widget_type: type[pn.widgets.Widget] = pn.widgets.Select, **kwargs: Any) -> pn.widgets.Widget:
        """A widget over this explorer's parameter ``name`` (labelled by it), kept in step both ways; ``options`` may
        map labels to values. Watchers of an earlier build are dropped when the explorer rebuilds."""
        kwargs.setdefault("label", self.param[name].label)
        widget = widget_type(value=getattr(self, name), **kwargs)
        if not isinstance(widget, pn.widgets.slider._SliderBase):  # a slider's drags stay merged
            at_once(widget)

        def to_state(event: Any) -> None:
            if event.new is not None and getattr(self, name) != event.new:
                setattr(self, name, event.new)

        def to_widget(event: Any) -> None:
            if widget.value != event.new:
                widget.value = event.new

        widget.param.watch(to_state, "value")
        self._control_watchers.append(self.param.watch(to_widget, name))
        return widget

    def sample_list(self, label: str, *, size: int, width: int, css_class: str, hint: str | None = None) -> pn.widgets.Select:
        """The list of samples; choosing one sets the shared sample (its options are set by `list_samples`). ``hint``
        goes in the label's tooltip, where it does not widen the sidebar at presentation size."""
        samples = at_once(pn.widgets.Select(label=label, size=size, options={}, width=width, css_classes=[css_class],
                                            description=hint))
        samples.param.watch(self._listed_sample_chosen, "value")
        return samples

    def list_samples(self, samples: pn.widgets.Select, order: Any, label: Callable[[int], str], limit: int) -> None:
        """List the first ``limit`` samples of ``order``, and the open sample first when it is not among them, with it
        selected (new options fire a selection event: the shared sample stays as it is)."""
        sample = self.selection.sample
        rows = [int(i) for i in order[:limit]]
        rows = rows if sample in rows else [sample, *rows]
        with self.quietly():
            samples.options = {label(i): i for i in rows}
            samples.value = sample

    def listed(self) -> list[int]:
        """The samples in the list now, in its order."""
        return [int(i) for i in self.samples.options.values()]

    def _listed_sample_chosen(self, event: Any) -> None:
        if not self._updating and event.new is not None:
            self.selection.sample = int(event.new)

    def showing(self, key: str, inputs: tuple) -> bool:
        """Whether figure ``key`` was drawn by `show_changed` from ``inputs`` and is shown still."""
        return self._drawn_inputs.get(key) == inputs

    def show_changed(self, key: str, pane: pn.pane.Plotly, inputs: tuple, draw: Callable[[], go.Figure]) -> None:
        """Show ``draw()`` in ``pane`` unless it is showing the figure of the same ``inputs`` already: a redraw sends
        the browser only the figures that change (each costs it a Plotly render)."""
        if not self.showing(key, inputs):
            self.show_figure(key, pane, draw())
            self._drawn_inputs[key] = inputs

    def show_figure(self, key: str, pane: pn.pane.Plotly, fig: go.Figure) -> None:
        self._drawn_inputs.pop(key, None)
        self._figures[key] = fig
        fig = self.drawn(fig)
        if pane.sizing_mode == "fixed":  # a fixed pane takes the figure's own size (Bokeh needs both set)
            pane.param.update(width=int(fig.layout.width or pane.width or 700), height=int(fig.layout.height or 450))
        pane.object = fig

    # ---- lifecycle ----
    def soon(self, action: Callable[[], Any]) -> None:
        """Run ``action``: at once in a notebook or while a session is being built, and in a served session that has
        loaded on the server's next tick, once the browser has been told that this page is at work (`LOADING_CSS`).
        Done at once, the work would end before the browser heard of it: it sees only what a callback leaves."""
        doc = pn.state.curdoc
        if self.standalone or doc is None or doc.session_context is None or not pn.state.loaded:
            action()
            return
        self.view.loading = True

        def work() -> None:
            try:
                action()
            finally:
                self.view.loading = False

        pn.state.execute(work, schedule=True)

    def set_shown(self, shown: bool) -> None:
        """Called by the dashboard when this explorer's tab is opened or left."""
        self.shown = shown
        if shown and not self.ready:
            self._rebuild_soon()
        elif shown and self.dirty:
            self.dirty = False
            self.soon(lambda: self.guarded(self.redraw))

    def _rebuild_soon(self) -> None:
        self.ready = True  # a second event before the deferred build runs does not build twice
        self.soon(self.rebuild)

    def rebuild(self) -> None:
        for watcher in self._control_watchers:
            self.param.unwatch(watcher)
        self._control_watchers = []
        self._figures, self._drawn_inputs = {}, {}
        self.controls.objects = []
        self.problem = self.crash = None
        self.ready, self.dirty = True, False
        objects = self.guarded(self.build)
        if objects is not None:
            self.view.objects = objects
        if self.present:
            for_presentation(self.view)
            for_presentation(self.controls)

    def guarded(self, action: Callable[[], Any]) -> Any:
        """Run ``action``; a run that lacks the data gets a notice, anything else a short message (and the log the
        trace): a visitor never sees a traceback."""
        try:
            with theme.drawing_for(self.present):
                return action()
        except KdvizError as exc:
            self.problem = exc
            self.view.objects = [notice(f"{self.title}: not in this run", str(exc))]
        except Exception as exc:  # a broken view must not take the dashboard down
            log.exception("kdviz: the %s explorer failed", self.title)
            self.problem = KdvizError(f"{type(exc).__name__}: {exc}")
            self.crash = exc  # not a run lacking data: `kdviz export` raises it rather than print it as a note
            self.view.objects = [notice(f"{self.title}: could not be drawn", f"{type(exc).__name__}: {exc}")]
        self.controls.objects = []  # a page shown as a notice has no controls
        if self.present:
            for_presentation(self.view)
        return None

    def _state_changed(self, *events: Any) -> None:
        if self.ready and not self._updating:
            names = {event.name for event in events}
            self.soon(lambda: self.guarded(lambda: self.state_changed(names)))

    def _changed(self, *events: Any) -> None:
        """One callback for a batch of selection changes: another run or step rebuilds, anything else redraws."""
        if any(event.name in ("run", "step") for event in events):
            self.ready = False
            if self.shown:
                self._rebuild_soon()
            return
        if not self.ready or self._updating:
            return
        if self.shown:
            self.soon(lambda: self.guarded(self.redraw))
        else:
            self.dirty = True
