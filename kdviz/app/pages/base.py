"""`Page`: one tab of the dashboard. It rebuilds when the run changes, redraws when the shared selection changes,
and does either only while shown (a hidden page catches up when opened)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from html import escape
from typing import Any

import panel as pn
import plotly.graph_objects as go

from kdviz.app.library import RunLibrary
from kdviz.app.state import Selection
from kdviz.errors import KdvizError
from kdviz.store import Run
from kdviz.views import theme

log = logging.getLogger("kdviz.app")
# the modebar's camera saves a PNG in the browser (no server, no kaleido); the plotly logo and editing are off
PLOT_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}
NOTICE_CSS = f"""
.kd-notice {{ background: {theme.CARD}; border-left: 4px solid {theme.MUTED}; border-radius: 6px; padding: 14px 18px;
              margin: 12px 6px; font-family: {theme.FONT_FAMILY}; color: #1f2933; max-width: 900px; }}
.kd-notice h3 {{ margin: 0 0 6px 0; font-size: 15px; }}
.kd-notice p {{ margin: 0; color: {theme.NEUTRAL}; font-size: 14px; line-height: 1.5; }}
"""


def plot(fig: go.Figure | None = None, **kwargs: Any) -> pn.pane.Plotly:
    """A Plotly pane stretched to the page width (its height is the figure's)."""
    return pn.pane.Plotly(fig, config=PLOT_CONFIG, sizing_mode="stretch_width", **kwargs)


def notice(title: str, message: str) -> pn.pane.HTML:
    """A calm note in place of a page whose data the run lacks: what is missing and how to capture it."""
    return pn.pane.HTML(f"<div class='kd-notice'><h3>{escape(title)}</h3><p>{escape(message)}</p></div>",
                        stylesheets=[NOTICE_CSS], sizing_mode="stretch_width")


def heading(text: str) -> pn.pane.HTML:
    return pn.pane.HTML(f"<h3 style='font-family:{theme.FONT_FAMILY};margin:6px 6px 0 6px'>{escape(text)}</h3>")


def clicked_point(event_data: dict[str, Any] | None) -> dict[str, Any] | None:
    """The first point of a Plotly pane's ``click_data``, or None."""
    points = (event_data or {}).get("points") or []
    return points[0] if points else None


class Page:
    """Subclasses set ``title`` and ``watches`` (the `Selection` parameters they draw), and implement ``build`` (the
    page's panes for the selected run, raising `KdvizError` when the run lacks the data) and ``redraw``."""

    title = ""
    watches: tuple[str, ...] = ("sample",)

    def __init__(self, library: RunLibrary, selection: Selection) -> None:
        self.library = library
        self.selection = selection
        self.view = pn.Column(name=self.title, sizing_mode="stretch_width")
        self.figures: dict[str, go.Figure] = {}
        self.shown = False
        self.ready = False  # built for the selected run
        self.dirty = False  # built, but the selection changed while hidden
        self._updating = False
        selection.param.watch(self._changed, ["run", "step", *self.watches])

    # ---- for subclasses ----
    @property
    def run(self) -> Run:
        return self.library.run(self.selection.run, self.selection.step)

    def data(self, kind: str) -> Any:
        return self.library.data(kind, self.selection.run, self.selection.step)

    def build(self) -> list[Any]:  # pragma: no cover - each page defines it
        raise NotImplementedError

    def redraw(self) -> None:
        """Redraw what depends on the shared selection (after a sample or temperature change)."""

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Set controls inside this block without their watchers (or the shared selection's) redrawing the page."""
        self._updating = True
        try:
            yield
        finally:
            self._updating = False

    def show_figure(self, key: str, pane: pn.pane.Plotly, fig: go.Figure) -> None:
        self.figures[key] = fig
        pane.object = fig

    # ---- lifecycle ----
    def set_shown(self, shown: bool) -> None:
        """Called by the dashboard when this page's tab is opened or left."""
        self.shown = shown
        if shown and not self.ready:
            self.rebuild()
        elif shown and self.dirty:
            self.dirty = False
            self._guarded(self.redraw)

    def rebuild(self) -> None:
        self.figures = {}
        self.ready, self.dirty = True, False
        objects = self._guarded(self.build)
        if objects is not None:
            self.view.objects = objects

    def _guarded(self, action: Any) -> Any:
        """Run ``action``; a run that lacks the data gets a notice, anything else a short message (and the log the
        trace): a visitor never sees a traceback."""
        try:
            return action()
        except KdvizError as exc:
            self.view.objects = [notice(f"{self.title}: not in this run", str(exc))]
        except Exception as exc:  # a broken view must not take the dashboard down
            log.exception("kdviz: the %s page failed", self.title)
            self.view.objects = [notice(f"{self.title}: could not be drawn", f"{type(exc).__name__}: {exc}")]
        return None

    def _changed(self, *events: Any) -> None:
        """One callback for a batch of selection changes: another run or step rebuilds, anything else redraws."""
        if any(event.name in ("run", "step") for event in events):
            self.ready = False
            if self.shown:
                self.rebuild()
            return
        if not self.ready or self._updating:
            return
        if self.shown:
            self._guarded(self.redraw)
        else:
            self.dirty = True
