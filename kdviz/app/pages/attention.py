"""Attention page: every head of both models on the shown sample (click one to open it), the chosen teacher head
beside a student head, and how layers and heads line up. CNN runs show attention-transfer maps instead."""

from __future__ import annotations

from typing import Any

import panel as pn

from kdviz.app.pages.base import Page, clicked_point, heading, plot
from kdviz.errors import MissingDataError
from kdviz.views import attention as views
from kdviz.views.attention_data import ROLES, AttentionData

BOTTOM_VIEWS = {"layer map": "layers", "head match": "heads", "rollout": "rollout"}
# Panel 1.9 renamed button_type to color (the old name warns); earlier versions know only button_type
LIGHT_BUTTONS = {"color" if "color" in pn.widgets.RadioButtonGroup.param else "button_type": "light"}


class AttentionPage(Page):
    title = "Attention"

    def build(self) -> list[Any]:
        data: AttentionData = self.data("attention")
        self.attention = data
        if not data.has_attention:
            if not data.has_spatial:
                raise MissingDataError(f"run {self.run.name!r} has neither attention maps nor attention-transfer maps; "
                                       "capture with attentions=True (transformers) or layers=[...] on conv features (CNNs)")
            self.panes = {"spatial": plot()}
            self.redraw()
            return [heading(f"Attention transfer: {self.run.name}"), self.panes["spatial"]]
        self.summary = pn.widgets.Select(label="frame heads by", options={v: k for k, v in views.SUMMARY_LABELS.items()},
                                         value="entropy", width=260)
        self.layer = {role: pn.widgets.Select(label=f"{role} layer", width=220, css_classes=[f"kd-{role}-layer"],
                                              options={f"L{i} {n}": i for i, n in enumerate(data.layers(role))})
                      for role in ROLES}
        self.head = {role: pn.widgets.Select(label=f"{role} head", width=120, css_classes=[f"kd-{role}-head"]) for role in ROLES}
        self.follow = pn.widgets.Checkbox(label="student follows the layer map and head matching", value=True)
        self.bottom = pn.widgets.RadioButtonGroup(options=BOTTOM_VIEWS, value="layers", **LIGHT_BUTTONS)
        self.panes = {key: plot() for key in ("grid", "pair", "bottom")}
        self.panes["grid"].sizing_mode = "fixed"  # the grid has its own pixel geometry (square thumbnails)
        for role in ROLES:
            self.layer[role].param.watch(lambda _e, r=role: self._menu_changed(r, layer=True), "value")
            self.head[role].param.watch(lambda _e, r=role: self._menu_changed(r), "value")
        self.summary.param.watch(lambda _e: self._guarded(self.draw_grid), "value")
        self.bottom.param.watch(lambda _e: self._guarded(self.draw_bottom), "value")
        self.panes["grid"].param.watch(self._grid_clicked, "click_data")
        start = data.layer_map[-1][1] if data.layer_map else len(data.layers("teacher")) - 1
        self.select("teacher", start, 0, draw=False)
        self.redraw()
        return [
            heading(f"Attention: {self.run.name}"),
            self.summary, self.panes["grid"],
            pn.Row(self.layer["teacher"], self.head["teacher"], self.layer["student"], self.head["student"]),
            self.follow, self.panes["pair"], self.bottom, self.panes["bottom"],
        ]

    # ---- selection ----
    def selected(self, role: str) -> tuple[int, int]:
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
        if role == "teacher" and self.follow.value:
            self._set("student", *self.attention.follow(layer, head))
        if draw:
            self._guarded(self.redraw)

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
        trace = self.figures["grid"].data[point.get("curveNumber", 0)]
        role = "teacher" if trace.name.startswith("teacher") else "student"
        if trace.type == "scatter" and point.get("customdata") is not None:
            layer, head = (int(v) for v in point["customdata"])
        else:
            layer, head = views.grid_cell(point["x"], point["y"], min(views.THUMBNAIL, self.attention.n_tokens))
        if layer < len(self.attention.layers(role)) and head < self.attention.heads(role)[layer]:
            self.select(role, layer, head)

    # ---- drawing ----
    def redraw(self) -> None:
        sample = self.selection.sample
        if not self.attention.has_attention:
            self.show_figure("spatial", self.panes["spatial"], views.spatial_overlay(self.attention, sample))
            return
        self.draw_grid()
        self.show_figure("pair", self.panes["pair"],
                         views.pair_view(self.attention, self.selected("teacher"), self.selected("student"), sample))
        if self.bottom.value != "layers" or "bottom" not in self.figures:  # the layer map depends on no selection
            self.draw_bottom()

    def draw_grid(self) -> None:
        """The head grid; when only the chosen heads changed, its two selection marks are moved in place (the
        browser gets a relayout of two shapes instead of a new figure)."""
        selected = {r: self.selected(r) for r in ROLES}
        key = (self.selection.sample, self.summary.value)
        if self.figures.get("grid") is not None and self.grid_key == key:
            views.select_in_grid(self.figures["grid"], self.attention, selected)
            return
        self.grid_key = key
        self.show_figure("grid", self.panes["grid"], views.head_grid(self.attention, *key, selected=selected))

    def draw_bottom(self) -> None:
        kind = self.bottom.value
        if kind == "layers":
            fig = views.layer_similarity_view(self.attention)
        elif kind == "heads":
            fig = views.head_match_view(self.attention, self.selected("teacher")[0], self.selected("student")[0])
        else:
            fig = views.rollout_view(self.attention, self.selection.sample)
        self.show_figure("bottom", self.panes["bottom"], fig)
