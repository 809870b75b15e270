"""`AttentionExplorer`: every attention head of teacher and student, one head pair in detail, and how layers and
heads line up. For CNN runs, the attention-transfer maps over the input."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from kdviz.errors import MissingDataError
from kdviz.store import Run
from kdviz.views import attention as views
from kdviz.views.attention_data import ROLES, AttentionData
from kdviz.views.text import escape_label
from kdviz.widgets._display import StepControl, figure_output, replace_figure, show

BOTTOM_VIEWS = (("layer map", "layers"), ("head match", "heads"), ("rollout", "rollout"))
FULL_DETAIL = 128  # tokens shown unpooled in the pair view


class AttentionExplorer(StepControl, widgets.VBox):
    """Controls: sample, the per-head summary that frames the grid, the teacher and student (layer, head) pair —
    also set by clicking a thumbnail of the grid — and the view below (layer map, head match or rollout).

    With "student follows" on, choosing a teacher head selects the mapped student layer and its matched head.
    ``explorer.figures`` holds the current figures; ``explorer.grid`` is the clickable head grid.
    """

    def __init__(self, run: Run | str, *, max_samples: int = 256, measure: str = "kl", step: int | None = None) -> None:
        self.run = self._open_at_step(run, step)
        self.data = AttentionData(self.run, max_samples=max_samples, measure=measure)
        if not self.data.has_attention and not self.data.has_spatial:
            raise MissingDataError(f"run {self.run.name!r} has neither attention maps nor attention-transfer maps; capture "
                                   "with attentions=True (transformers) or layers=[...] on conv features (CNNs)")
        self.figures: dict[str, Any] = {}
        self.sample = widgets.BoundedIntText(value=0, min=0, max=self.run.n_samples - 1, description="sample")
        header = widgets.HTML(f"<h3>Attention: {escape_label(self.run.name)}</h3>")
        if not self.data.has_attention:  # CNN pair: attention transfer only
            self.outputs = {"spatial": figure_output()}
            super().__init__([header, *self._step_widgets(), self.sample, self.outputs["spatial"]])
            self.sample.observe(lambda _change: self.refresh(), names="value")
            self.refresh()
            return
        self.summary = widgets.Dropdown(options=[(label, key) for key, label in views.SUMMARY_LABELS.items()],
                                        value="entropy", description="frame")
        self.layer = {role: widgets.Dropdown(options=[(f"L{i} {n}", i) for i, n in enumerate(self.data.layers(role))],
                                             description=f"{role} layer") for role in ROLES}
        self.head = {role: widgets.Dropdown(description=f"{role} head") for role in ROLES}
        self.follow = widgets.Checkbox(value=True, description="student follows layer map and matching", indent=False)
        self.bottom = widgets.ToggleButtons(options=BOTTOM_VIEWS, value="layers")
        long_input = self.data.n_tokens > FULL_DETAIL
        self.window = widgets.IntRangeSlider(value=(0, self.data.n_tokens), min=0, max=self.data.n_tokens, step=1,
                                             description="tokens", continuous_update=False,
                                             layout=widgets.Layout(width="60%", display=None if long_input else "none"))
        self.grid = go.FigureWidget()
        self.outputs = {"pair": figure_output(), "bottom": figure_output()}
        self._updating = False
        super().__init__([
            header,
            *self._step_widgets(),
            widgets.HBox([self.sample, self.summary]),
            self.grid,
            widgets.HBox([self.layer["teacher"], self.head["teacher"]]),
            widgets.HBox([self.layer["student"], self.head["student"], self.follow]),
            self.window,
            self.outputs["pair"],
            self.bottom,
            self.outputs["bottom"],
        ])
        for role in ROLES:
            self._set_heads(role)
            self.layer[role].observe(lambda _c, r=role: self._layer_changed(r), names="value")
            self.head[role].observe(lambda _c, r=role: self._head_changed(r), names="value")
        self.sample.observe(lambda _change: self.refresh(), names="value")
        self.summary.observe(lambda _change: self.refresh_grid(), names="value")
        self.window.observe(lambda _change: self.refresh_pair(), names="value")
        self.bottom.observe(lambda _change: self.refresh_bottom(), names="value")
        start = self.data.layer_map[-1][1] if self.data.layer_map else len(self.data.layers("teacher")) - 1
        self.select("teacher", start, 0)

    # ---- selection ----
    def _set_heads(self, role: str) -> None:
        n = self.data.heads(role)[self.layer[role].value]
        self.head[role].options = [(f"head {h}", h) for h in range(n)]

    def _layer_changed(self, role: str) -> None:
        if self._updating:
            return
        self._set_heads(role)
        self._selection_changed(role)

    def _head_changed(self, role: str) -> None:
        if not self._updating:
            self._selection_changed(role)

    def _set_selection(self, role: str, layer: int, head: int) -> None:
        """Set one model's layer and head menus without their observers refreshing the views."""
        self._updating = True
        try:
            self.layer[role].value = layer
            self._set_heads(role)
            self.head[role].value = head
        finally:
            self._updating = False

    def select(self, role: str, layer: int, head: int) -> None:
        """Select a head of one model (what a click on the grid does) and refresh the views."""
        self._set_selection(role, layer, head)
        self._selection_changed(role)

    def _selection_changed(self, role: str) -> None:
        if role == "teacher" and self.follow.value:
            self._follow_teacher()
        self.refresh_grid()
        self.refresh_pair()
        self.refresh_bottom()

    def _follow_teacher(self) -> None:
        """Student menus = `AttentionData.follow` of the teacher head."""
        self._set_selection("student", *self.data.follow(self.layer["teacher"].value, self.head["teacher"].value))

    def _reload(self) -> None:
        self.data = AttentionData(self.run, max_samples=self.data.max_samples, measure=self.data.measure)
        self.refresh()

    def selected(self, role: str) -> tuple[int, int]:
        return self.layer[role].value, self.head[role].value

    # ---- grid clicks ----
    def _on_grid_click(self, trace: Any, points: Any, _state: Any) -> None:
        if not points.point_inds:
            return
        role = "teacher" if trace.name.startswith("teacher") else "student"
        if trace.type == "scatter":
            layer, head = trace.customdata[points.point_inds[0]]
        else:
            layer, head = views.grid_cell(points.xs[0], points.ys[0], min(views.THUMBNAIL, self.data.n_tokens))
        if layer < len(self.data.layers(role)) and head < self.data.heads(role)[layer]:
            self.select(role, int(layer), int(head))

    # ---- refresh ----
    def refresh(self) -> None:
        if not self.data.has_attention:
            self.figures["spatial"] = views.spatial_overlay(self.data, self.sample.value)
            show(self.outputs["spatial"], self.figures["spatial"])
            return
        self.refresh_grid()
        self.refresh_pair()
        self.refresh_bottom()

    def refresh_grid(self) -> None:
        fig = views.head_grid(self.data, self.sample.value, self.summary.value,
                              selected={role: self.selected(role) for role in ROLES})
        self.figures["grid"] = fig
        replace_figure(self.grid, fig, self._on_grid_click)

    def refresh_pair(self) -> None:
        window = tuple(self.window.value) if self.data.n_tokens > FULL_DETAIL else None
        if window == (0, self.data.n_tokens):
            window = None
        self.figures["pair"] = views.pair_view(self.data, self.selected("teacher"), self.selected("student"),
                                               self.sample.value, window=window)
        show(self.outputs["pair"], self.figures["pair"])

    def refresh_bottom(self) -> None:
        if self.bottom.value == "layers":
            fig = views.layer_similarity_view(self.data)
        elif self.bottom.value == "heads":
            fig = views.head_match_view(self.data, self.layer["teacher"].value, self.layer["student"].value)
        else:
            fig = views.rollout_view(self.data, self.sample.value)
        self.figures["bottom"] = fig
        show(self.outputs["bottom"], fig)
