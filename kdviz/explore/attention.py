"""`AttentionExplorer`: every attention head of both models on the shown sample (click a thumbnail to open it), the
chosen teacher head beside a student head, and how layers and heads line up. CNN runs show attention-transfer maps
instead."""

from __future__ import annotations

from typing import Any

import panel as pn
import param

from kdviz.errors import MissingDataError
from kdviz.explore.base import LIGHT_BUTTONS, SIDEBAR_WIDGET_WIDTH, Explorer, at_once, clicked_point, heading, plot
from kdviz.readers.attention import ROLES
from kdviz.views import attention as views

BOTTOM_VIEWS = {"layer map": "layers", "head match": "heads", "rollout": "rollout"}
FULL_DETAIL = 128  # tokens shown unpooled in the pair view; longer inputs get a token window


class AttentionExplorer(Explorer):
    """Controls: the per-head summary that frames the grid, the teacher and student (layer, head), also set by
    clicking a thumbnail, the token window of long inputs, and the view below (layer map, head match or rollout).
    With ``follow`` on, choosing a teacher head selects the mapped student layer and its matched head."""

    title = "Attention"

    summary = param.Selector(default="entropy", objects=list(views.SUMMARY_LABELS), label="frame heads by",
                             doc="the per-head summary that colours each thumbnail's frame")
    follow = param.Boolean(default=True, label="student follows the layer map and head matching",
                           doc="choosing a teacher head selects the mapped student layer and its matched head")
    bottom = param.Selector(default="layers", objects=list(BOTTOM_VIEWS.values()), label="below",
                            doc="the view under the head pair")
    window = param.Range(default=None, label="tokens", doc="(start, stop) of the tokens the pair view shows unpooled")
    scale = param.Selector(default="auto", objects=list(views.PAIR_SCALES), label="colour scale",
                           doc="the pair view's colour scale: linear, log, or each query row scaled to its largest")

    def __init__(self, run: Any = None, *, max_samples: int = 256, measure: str = "kl", **kwargs: Any) -> None:
        self.max_samples, self.measure = max_samples, measure
        super().__init__(run, **kwargs)

    def build(self) -> list[Any]:
        run = self.run
        data = self.library.attention(self.selection.run, self.selection.step, max_samples=self.max_samples,
                                      measure=self.measure)
        self.attention = data
        self.grid_key: tuple[int, str] | None = None
        if not data.has_attention:
            if not data.has_spatial:
                raise MissingDataError(f"run {run.name!r} has neither attention maps nor attention-transfer maps; "
                                       "capture with attentions=True (transformers) or layers=[...] on conv features (CNNs)")
            self.panes = {"spatial": plot()}
            self.redraw()
            return [heading(f"Attention transfer: {run.name}"), self.panes["spatial"]]
        self.summary_menu = self.control("summary", options={v: k for k, v in views.SUMMARY_LABELS.items()}, width=260)
        self.layer = {role: at_once(pn.widgets.Select(label=f"{role} layer", width=170, css_classes=[f"kd-{role}-layer"],
                                                      options={f"L{i} {n}": i for i, n in enumerate(data.layers(role))}))
                      for role in ROLES}
        self.head = {role: at_once(pn.widgets.Select(label=f"{role} head", width=100, css_classes=[f"kd-{role}-head"]))
                     for role in ROLES}
        self.follow_box = self.control("follow", pn.widgets.Checkbox)
        self.bottom_buttons = self.control("bottom", pn.widgets.RadioButtonGroup, options=BOTTOM_VIEWS, **LIGHT_BUTTONS)
        n_tokens = data.n_tokens
        with self.quietly():
            self.param.window.bounds = (0, n_tokens)
            self.window = (0, n_tokens)
        self.window_slider = self.control("window", pn.widgets.IntRangeSlider, start=0, end=n_tokens, step=1, width=SIDEBAR_WIDGET_WIDTH,
                                          visible=n_tokens > FULL_DETAIL)
        self.scale_buttons = self.control("scale", pn.widgets.RadioButtonGroup, options={
            "auto": "auto", "linear": "linear", "log": "log", "per row": "row"}, **LIGHT_BUTTONS)
        self.panes = {key: plot() for key in ("grid", "pair", "bottom")}
        self.panes["grid"].sizing_mode = "fixed"  # the grid has its own pixel geometry (square thumbnails)
        for role in ROLES:
            self.layer[role].param.watch(lambda _e, r=role: self._menu_changed(r, layer=True), "value")
            self.head[role].param.watch(lambda _e, r=role: self._menu_changed(r), "value")
        self.panes["grid"].param.watch(self._grid_clicked, "click_data")
        self.panes["pair"].param.watch(self._pair_dragged, "relayout_data")
        start = data.layer_map[-1][1] if data.layer_map else len(data.layers("teacher")) - 1
        self.select("teacher", start, 0, draw=False)
        self.redraw()
        self.sidebar(self.summary_menu, pn.Row(self.layer["teacher"], self.head["teacher"]),
                     pn.Row(self.layer["student"], self.head["student"]), self.follow_box, self.window_slider,
                     pn.pane.HTML("colour scale of the pair view", margin=(8, 10, 0, 10)), self.scale_buttons)
        return [
            heading(f"Attention: {run.name}"), self.panes["grid"], self.panes["pair"], self.bottom_buttons,
            self.panes["bottom"],
        ]

    # ---- selection ----
    def selected(self, role: str) -> tuple[int, int]:
        """(layer, head) of ``role`` shown in the pair view."""
        return int(self.layer[role].value), int(self.head[role].value)

    def _set(self, role: str, layer: int, head: int) -> None:
        """Set one model's menus without their watchers redrawing."""
        with self.quietly():
            self.layer[role].value = layer
            self.head[role].options = {f"head {h}": h for h in range(self.attention.heads(role)[layer])}
            self.head[role].value = head

    def select(self, role: str, layer: int, head: int, *, draw: bool = True) -> None:
        """Open one head (what a click on the grid or the menus do); the student follows a teacher choice."""
        self._set(role, layer, head)
        if role == "teacher" and self.follow:
            self._set("student", *self.attention.follow(layer, head))
        if draw:
            self.guarded(self.redraw)

    def _menu_changed(self, role: str, layer: bool = False) -> None:
        if self._updating:
            return
        chosen_layer = int(self.layer[role].value)
        n_heads = self.attention.heads(role)[chosen_layer]
        head = int(self.head[role].value) if not layer and self.head[role].value is not None else 0
        self.select(role, chosen_layer, min(head, n_heads - 1))

    def _grid_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        if point is None:
            return
        trace = self._figures["grid"].data[point.get("curveNumber", 0)]
        role = "teacher" if trace.name.startswith("teacher") else "student"
        if trace.type == "scatter" and point.get("customdata") is not None:
            layer, head = (int(v) for v in point["customdata"])
        else:
            layer, head = views.grid_cell(point["x"], point["y"], self.attention.grid_side)
        if layer < len(self.attention.layers(role)) and head < self.attention.heads(role)[layer]:
            self.select(role, layer, head)

    def _pair_dragged(self, event: Any) -> None:
        """A box dragged on the pair view opens the tokens under it (a token window); a double-click, all of them."""
        change, fig = event.new or {}, self._figures.get("pair")
        if fig is None or not self.attention.has_exact(self.selection.sample):
            return
        if any(key.endswith("autorange") for key in change):
            self.window = (0, self.attention.n_tokens)
            return
        for axis in ("x", "y"):
            ranges = [(change[f"{name}.range[0]"], change[f"{name}.range[1]"]) for name in
                      (f"{axis}axis", f"{axis}axis2", f"{axis}axis3") if f"{name}.range[0]" in change]
            if ranges:
                window = views.window_from_range(dict(fig.layout.meta or {}), *ranges[0])
                if window is not None:
                    self.window = window
                return

    # ---- drawing ----
    def state_changed(self, names: set[str]) -> None:
        if not self.attention.has_attention:
            return
        if "summary" in names:
            self.draw_grid()
        if names & {"window", "scale"}:
            self.draw_pair()
        if "bottom" in names:
            self.draw_bottom()

    def redraw(self) -> None:
        sample = self.selection.sample
        if not self.attention.has_attention:
            self.show_figure("spatial", self.panes["spatial"], views.spatial_overlay(self.attention, sample))
            return
        self.draw_grid()
        self.draw_pair()
        if self.bottom != "layers" or "bottom" not in self._figures:  # the layer map depends on no selection
            self.draw_bottom()

    def draw_grid(self) -> None:
        """The head grid; when only the chosen heads changed, its two selection marks are moved in place (the
        browser gets a relayout of two shapes instead of a new figure)."""
        selected = {r: self.selected(r) for r in ROLES}
        key = (self.selection.sample, self.summary)
        if self._figures.get("grid") is not None and self.grid_key == key:
            views.select_in_grid(self._figures["grid"], self.attention, selected)
            return
        self.grid_key = key
        self.show_figure("grid", self.panes["grid"], views.head_grid(self.attention, *key, selected=selected))

    def draw_pair(self) -> None:
        n_tokens = self.attention.n_tokens
        exact = self.attention.has_exact(self.selection.sample)  # a sample kept only as a digest has no token window
        # disabled, not hidden, for a digest-only sample: hiding it would change the page's layout, and every Plotly
        # figure in the document (hidden tabs too) is laid out again after a layout change
        self.window_slider.disabled = not exact
        window = tuple(self.window) if self.window is not None and n_tokens > FULL_DETAIL and exact else None
        if window == (0, n_tokens):
            window = None
        self.show_figure("pair", self.panes["pair"], views.pair_view(
            self.attention, self.selected("teacher"), self.selected("student"), self.selection.sample, window=window,
            scale=self.scale))

    def draw_bottom(self) -> None:
        if self.bottom == "layers":
            fig = views.layer_similarity_view(self.attention)
        elif self.bottom == "heads":
            fig = views.head_match_view(self.attention, self.selected("teacher")[0], self.selected("student")[0])
        else:
            fig = views.rollout_view(self.attention, self.selection.sample)
        self.show_figure("bottom", self.panes["bottom"], fig)
