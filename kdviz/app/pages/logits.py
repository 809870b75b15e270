"""Logits page: the summary at T, the divergence histogram (click a bar to list its samples and open its most
divergent one), the sample list, and the open sample's drill-down."""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn

from kdviz.app.pages.base import Page, clicked_point, heading, plot
from kdviz.metrics import logits as lm
from kdviz.metrics.classwise import QUADRANTS
from kdviz.views import logits as views
from kdviz.views.run_data import SORTS, LogitData

LIST_ROWS = 40


class LogitsPage(Page):
    title = "Logits"
    watches = ("sample", "T")

    def build(self) -> list[Any]:
        data: LogitData = self.data("logits")
        self.logit_data = data
        tokens = data.task == "tokens"
        self.bin: np.ndarray | None = None  # the samples of a clicked histogram bar
        self.values_key: tuple[str, float] | None = None  # (measure, T) of self.values
        self.temperature = pn.widgets.DiscreteSlider.from_param(
            self.selection.param.T, name="temperature T", visible=not tokens, width=300, css_classes=["kd-temperature"])
        self.measure = pn.widgets.Select(label="measure", options={lm.MEASURES[m]: m for m in data.measures()}, value="kl",
                                         width=260)
        class_options = {"all classes": -1, **{str(c): i for i, c in enumerate(data.class_names or [])}}
        self.class_filter = pn.widgets.Select(label="class", options=class_options, value=-1, disabled=tokens, width=160)
        has_labels = data.labels is not None and not tokens
        self.correctness = pn.widgets.Select(label="correct?", options=["all", *QUADRANTS], value="all",
                                             disabled=not has_labels, width=220)
        self.order = pn.widgets.Select(label="order", options=list(SORTS), value=SORTS[0], width=200)
        self.samples = pn.widgets.Select(label="samples (click a histogram bar to list its samples)", size=12, options={},
                                         width=560, css_classes=["kd-sample-list"])
        self.show_all = pn.widgets.Button(label="list all samples", visible=False, width=160)
        self.panes = {key: plot() for key in ("summary", "histogram", "detail")}
        for control in (self.measure, self.class_filter, self.correctness, self.order):
            control.param.watch(lambda _event: self._guarded(self.redraw), "value")
        self.samples.param.watch(self._listed_sample_chosen, "value")
        self.show_all.on_click(lambda _event: self._show_bin(None))
        self.panes["histogram"].param.watch(self._histogram_clicked, "click_data")
        note = [] if not tokens else [pn.pane.Markdown(
            "*Language-model runs store per-token statistics at T = 1, so the temperature is fixed here.*")]
        self.redraw()
        return [
            heading(f"Logits: {self.run.name} ({self.run.task}, {self.run.n_samples:,} samples)"),
            pn.Row(self.temperature, self.measure, self.class_filter, self.correctness, self.order), *note,
            pn.Row(pn.Column(self.samples, self.show_all), self.panes["summary"], sizing_mode="stretch_width"),
            self.panes["histogram"], self.panes["detail"],
        ]

    # ---- drawing ----
    def redraw(self) -> None:
        data = self.logit_data
        T = 1.0 if data.task == "tokens" else float(self.selection.T)
        measure = self.measure.value
        if self.values_key != (measure, T):  # a sample change reuses them
            self.values_key = (measure, T)
            self.values = data.per_sample(measure, T)
            self.show_figure("summary", self.panes["summary"], views.summary_card(data.summary(T)))
        visible = data.visible(self.values, class_index=self.class_filter.value, quadrant=self.correctness.value,
                               order=self.order.value)
        self.visible = visible
        listed = visible if self.bin is None else data.visible(self.values, order=self.order.value, among=self.bin)
        sample = self.selection.sample
        rows = [int(i) for i in listed[:LIST_ROWS]]
        rows = rows if sample in rows else [sample, *rows]  # the open sample is always listed (and selected)
        with self.quietly():  # new options fire a selection event: the shared sample stays as it is
            self.samples.options = {data.row_label(i, measure, self.values): i for i in rows}
            self.samples.value = sample
        shown = visible.tolist().index(sample) if sample in set(visible.tolist()) else None
        unit = "samples" if data.task != "tokens" else "samples (mean over tokens)"
        self.show_figure("histogram", self.panes["histogram"], views.divergence_histogram(
            self.values[visible], measure=measure, T=T, selected=shown, unit=unit, sample_ids=visible))
        self.show_figure("detail", self.panes["detail"], views.sample_detail(data, sample, measure=measure, T=T))

    # ---- events ----
    def _histogram_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        if point is None or "pointNumbers" not in point:
            return
        finite = self.visible[np.isfinite(self.values[self.visible])]  # the histogram draws finite values only
        members = finite[np.asarray(point["pointNumbers"], dtype=int)]
        self._show_bin(members)

    def _show_bin(self, members: np.ndarray | None) -> None:
        """List only a clicked bar's samples and open the most divergent of them (None: list every sample again)."""
        self.bin = members
        self.show_all.visible = members is not None
        target = int(members[np.argmax(self.values[members])]) if members is not None and len(members) else None
        if target is not None and target != self.selection.sample:
            self.selection.sample = target  # every page redraws for it
        else:
            self._guarded(self.redraw)

    def _listed_sample_chosen(self, event: Any) -> None:
        if not self._updating and event.new is not None:
            self.selection.sample = int(event.new)
