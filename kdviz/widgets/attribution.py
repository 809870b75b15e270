"""`AttributionExplorer`: does the student look where the teacher looks, sample by sample and over the data set."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from kdviz.metrics import attribution_agreement as ag
from kdviz.store import Run
from kdviz.views import attribution as views
from kdviz.views.attribution_data import AttributionData
from kdviz.views.text import escape_label
from kdviz.widgets._display import figure_output, replace_figure, show

ORDERS = ("least agreement first", "most agreement first", "sample index")
LIST_ROWS = 60


class AttributionExplorer(widgets.VBox):
    """Controls: attribution method, target (which class both models explain), agreement metric, the "same reason"
    threshold, and the sample, from a list sorted by agreement. Views: the sample's teacher | student | difference
    maps; the agreement histogram (click a bar to list its samples); the same-answer × same-reason scatter (click a
    point to open that sample); agreement by class.

    ``explorer.figures`` holds the current figures; ``explorer.selected`` the open sample.
    """

    def __init__(self, run: Run | str, *, metric: str = "spearman", threshold: float = ag.DEFAULT_THRESHOLD) -> None:
        self.run = run if isinstance(run, Run) else Run.open(run)
        self.data = AttributionData(self.run)
        method, target = self.data.default_selection()
        self.target = widgets.Dropdown(options=[(views.target_label(t), t) for t in self.data.targets], value=target,
                                       description="explain")
        self.method = widgets.Dropdown(options=self._method_options(target), value=method, description="method")
        self.metric = widgets.Dropdown(options=[(label, key) for key, label in ag.AGREEMENT_METRICS.items()], value=metric,
                                       description="agreement")
        self.threshold = widgets.FloatSlider(value=threshold, min=0.0, max=1.0, step=0.05, description="same reason ≥",
                                             continuous_update=False, style={"description_width": "initial"})
        self.order = widgets.Dropdown(options=ORDERS, value=ORDERS[0], description="sort")
        self.samples = widgets.Select(options=[], rows=10, description="samples", layout=widgets.Layout(width="520px"))
        self.clear_bin = widgets.Button(description="show all samples", layout=widgets.Layout(display="none"))
        self.histogram = go.FigureWidget()
        self.scatter = go.FigureWidget()
        self.outputs = {"pair": figure_output(), "classes": figure_output()}
        self.figures: dict[str, Any] = {}
        self.selected: int | None = None
        self.bin_samples: np.ndarray | None = None  # the samples of a clicked histogram bar
        self._refreshing = False
        self._switching_target = False
        self.has_logits = self.data.logits("teacher") is not None
        super().__init__([
            widgets.HTML(f"<h3>Attributions: {escape_label(self.run.name)}</h3>"),
            widgets.HBox([self.target, self.method, self.metric]),
            widgets.HBox([self.threshold, self.order]),
            widgets.HBox([self.samples, self.clear_bin]),
            self.outputs["pair"],
            self.histogram,
            self.scatter if self.has_logits else widgets.HTML("<i>The answer-vs-reason scatter needs class logits "
                                                              "(language-model runs keep only per-token summaries).</i>"),
            self.outputs["classes"],
        ])
        self.target.observe(self._target_changed, names="value")
        for control in (self.method, self.metric, self.order):
            control.observe(self._control_changed, names="value")
        self.threshold.observe(lambda _change: self.refresh_scatter(), names="value")
        self.samples.observe(self._list_selected, names="value")
        self.clear_bin.on_click(lambda _button: self.show_bin(None))
        self.refresh()

    def _method_options(self, target: str) -> list[tuple[str, str]]:
        return [(views.METHOD_LABELS.get(m, m), m) for m in self.data.targets[target]]

    @property
    def selection(self) -> tuple[str, str, str]:
        """(method, target, metric) shown now."""
        return self.method.value, self.target.value, self.metric.value

    # ---- the sample list ----
    def visible_samples(self) -> np.ndarray:
        """Run indices of the listed samples, in the chosen order (only a clicked bar's samples, if one was clicked)."""
        method, target, metric = self.selection
        index = self.data.stored(method, target).index
        values = self.data.agreement(method, target, metric)
        keep = np.ones(len(index), bool) if self.bin_samples is None else np.isin(index, self.bin_samples)
        order = np.flatnonzero(keep)
        if self.order.value != ORDERS[2]:
            shown = values[order] if self.order.value == ORDERS[0] else -values[order]
            order = order[np.argsort(np.where(np.isfinite(shown), shown, np.inf), kind="stable")]  # undefined last
        return index[order]

    def _refresh_list(self) -> np.ndarray:
        method, target, metric = self.selection
        values = self.data.agreement(method, target, metric)
        index = self.data.stored(method, target).index
        visible = self.visible_samples()
        rows = np.searchsorted(index, visible[:LIST_ROWS])
        self._refreshing = True  # new options fire a selection event; the open sample is kept instead
        try:
            self.samples.options = [(self._row_label(int(i), values[r]), int(i)) for i, r in zip(visible[:LIST_ROWS], rows, strict=True)]
        finally:
            self._refreshing = False
        return visible

    def _row_label(self, sample: int, value: float) -> str:
        text = f"#{sample:<5} {self.metric.value} = {value:+.3f}" if np.isfinite(value) else f"#{sample:<5} undefined"
        z_t, z_s = self.data.logits("teacher"), self.data.logits("student")
        if z_t is not None and z_s is not None:
            name = self.data.class_name
            text += f"   teacher {name(int(z_t[sample].argmax()))}, student {name(int(z_s[sample].argmax()))}"
        return text

    # ---- refresh ----
    def refresh(self) -> None:
        """Redraw the list and every view for the current method, target and metric."""
        visible = self._refresh_list()
        keep = self.selected if self.selected is not None and self.selected in set(visible.tolist()) else None
        self.refresh_classes()
        if len(visible):
            self.select(keep if keep is not None else int(visible[0]))

    def refresh_scatter(self) -> None:
        if not self.has_logits:
            return
        method, target, metric = self.selection
        fig = views.agreement_scatter(self.data, method, target, metric, threshold=self.threshold.value, selected=self.selected)
        self.figures["scatter"] = fig
        replace_figure(self.scatter, fig, self._on_scatter_click)

    def refresh_histogram(self) -> None:
        method, target, metric = self.selection
        fig = views.agreement_histogram(self.data, method, target, metric, selected=self.selected)
        self.figures["histogram"] = fig
        replace_figure(self.histogram, fig, self._on_histogram_click)

    def refresh_classes(self) -> None:
        method, target, metric = self.selection
        self.figures["classes"] = views.class_agreement_bars(self.data, method, target, metric)
        show(self.outputs["classes"], self.figures["classes"])

    def select(self, sample: int) -> None:
        """Open one sample: its maps side by side, and its mark in the histogram and the scatter."""
        method, target, _metric = self.selection
        self.selected = sample
        self.figures["pair"] = views.attribution_pair(self.data, sample, method, target)
        show(self.outputs["pair"], self.figures["pair"])
        self.refresh_histogram()
        self.refresh_scatter()
        if self.samples.value != sample and sample in [value for _, value in self.samples.options]:
            self._refreshing = True
            try:
                self.samples.value = sample
            finally:
                self._refreshing = False

    def show_bin(self, samples: np.ndarray | None) -> None:
        """List only ``samples`` (a histogram bar's), or every sample again with None."""
        self.bin_samples = None if samples is None else np.asarray(samples)
        self.clear_bin.layout.display = None if samples is not None else "none"
        self.refresh()

    # ---- events ----
    def _control_changed(self, _change: dict) -> None:
        if not self._switching_target:
            self.refresh()

    def _target_changed(self, change: dict) -> None:
        """Offer the new target's methods, keeping the current method where it was computed too; then redraw once."""
        options = self._method_options(change["new"])
        current = self.method.value
        self._switching_target = True
        try:
            self.method.options = options
            self.method.value = current if current in [m for _, m in options] else options[0][1]
        finally:
            self._switching_target = False
        self.refresh()

    def _list_selected(self, change: dict) -> None:
        if not self._refreshing and change["new"] is not None and change["new"] != self.selected:
            self.select(int(change["new"]))

    def _on_histogram_click(self, _trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            method, target, metric = self.selection
            self.show_bin(views.defined_samples(self.data, method, target, metric)[list(points.point_inds)])

    def _on_scatter_click(self, trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds and trace.customdata is not None:
            self.select(int(trace.customdata[points.point_inds[0]]))
