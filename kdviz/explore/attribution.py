"""`AttributionExplorer`: does the student look where the teacher looks, sample by sample and over the data set.

The open sample's teacher | student | difference maps, the per-sample agreement histogram (click a bar to list its
samples and open the least agreeing one), the same-answer × same-reason scatter (click a point to open it),
agreement by class, and every method's agreement at a glance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn
import param

from kdviz.explore.base import Explorer, clicked_point, grid, heading, plot
from kdviz.metrics import attribution_agreement as ag
from kdviz.readers.attribution import AttributionData
from kdviz.views import attribution as views

ORDERS = ("least agreement first", "most agreement first", "sample index")
LIST_ROWS = 60


class AttributionExplorer(Explorer):
    """Controls: what both models explain (``target``), the attribution ``method``, the agreement ``metric``, the
    "same reason" ``threshold`` of the scatter and the ``order`` of the sample list. ``selected`` is the open sample
    (the shared sample when it was explained, else the first explained one)."""

    title = "Attribution"

    target = param.Selector(default=None, objects=[], label="explain", doc="which class both models explain")
    method = param.Selector(default=None, objects=[], label="method", doc="the attribution method")
    metric = param.Selector(default="spearman", objects=list(ag.AGREEMENT_METRICS), label="agreement",
                            doc="how the two maps' agreement is measured")
    threshold = param.Number(default=ag.DEFAULT_THRESHOLD, bounds=(0.0, 1.0), label="same reason ≥",
                             doc="agreement from which the scatter counts a sample as explained for the same reason")
    order = param.Selector(default=ORDERS[0], objects=list(ORDERS), label="order", doc="order of the sample list")

    def build(self) -> list[Any]:
        data: AttributionData = self.data("attribution")
        self.attribution = data
        self.bin_samples: np.ndarray | None = None  # the samples of a clicked histogram bar
        method, target = data.default_selection()
        with self.quietly():
            self.param.target.objects = list(data.targets)
            self.target = target
            self.param.method.objects = list(data.targets[target])
            self.method = method
        self.target_menu = self.control("target", options={views.target_label(t): t for t in data.targets}, width=240)
        self.method_menu = self.control("method", options=self._methods(target), width=240, css_classes=["kd-method"])
        self.metric_menu = self.control("metric", options={v: k for k, v in ag.AGREEMENT_METRICS.items()}, width=220,
                                        css_classes=["kd-agreement"])
        self.threshold_slider = self.control("threshold", pn.widgets.FloatSlider, start=0.0, end=1.0, step=0.05, width=220)
        self.order_menu = self.control("order", options=list(ORDERS), width=220)
        hint = "click a histogram bar to list only its samples"  # in presentation mode, after what a row holds
        self.samples = self.sample_list(
            "samples", hint=f"each row: sample, agreement · teacher/student answer; {hint}" if self.present else hint,
            size=10, width=560, css_class="kd-attribution-list")
        self.show_all = pn.widgets.Button(label="list all samples", visible=False, width=160)
        self.note = pn.pane.Markdown("", margin=(0, 10))
        self.has_logits = data.logits("teacher") is not None
        self.panes = {key: plot() for key in ("overview", "pair", "histogram", "scatter", "classes")}
        self.show_all.on_click(lambda _event: self.show_bin(None))
        self.panes["histogram"].param.watch(self._histogram_clicked, "click_data")
        self.panes["scatter"].param.watch(self._scatter_clicked, "click_data")
        self.redraw()
        scatter = [self.panes["scatter"]] if self.has_logits else [pn.pane.Markdown(
            "*The answer-vs-reason scatter needs class logits (language-model runs keep only per-token summaries).*")]
        self.sidebar(self.target_menu, self.method_menu, self.metric_menu, self.threshold_slider, self.order_menu,
                     self.samples, self.show_all)
        return [
            heading(f"Attribution: {self.run.name}"), self.note, self.panes["pair"],
            grid(self.panes["histogram"], *scatter), self.panes["classes"], self.panes["overview"],
        ]

    def _methods(self, target: str) -> dict[str, str]:
        return {views.METHOD_LABELS.get(m, m): m for m in self.attribution.targets[target]}

    def state_changed(self, names: set[str]) -> None:
        if "target" in names:  # offer the new target's methods, keeping the current method where it was computed too
            methods = list(self.attribution.targets[self.target])
            with self.quietly():
                self.param.method.objects = methods
                self.method_menu.options = self._methods(self.target)
                self.method = self.method if self.method in methods else methods[0]
            self.bin_samples = None
        if names == {"threshold"}:
            self.draw_scatter()
            return
        self.redraw()

    @property
    def selection_key(self) -> tuple[str, str, str]:
        """(method, target, metric) shown now."""
        return self.method, self.target, self.metric

    # ---- the sample list ----
    def visible_samples(self) -> np.ndarray:
        """Run indices of the listed samples, in the chosen order (only a clicked bar's samples, if one was clicked)."""
        method, target, metric = self.selection_key
        index = self.attribution.stored(method, target).index
        values = self.attribution.agreement(method, target, metric)
        keep = np.ones(len(index), bool) if self.bin_samples is None else np.isin(index, self.bin_samples)
        order = np.flatnonzero(keep)
        if self.order != ORDERS[2]:
            shown = values[order] if self.order == ORDERS[0] else -values[order]
            order = order[np.argsort(np.where(np.isfinite(shown), shown, np.inf), kind="stable")]  # undefined last
        return index[order]

    def row_label(self, sample: int, value: float) -> str:
        """One line of the sample list: index, agreement and both answers (in presentation mode as teacher/student,
        to fit the sidebar at 18 px)."""
        z_t, z_s = self.attribution.logits("teacher"), self.attribution.logits("student")
        name = self.attribution.class_name
        answers = None if z_t is None or z_s is None else (name(int(z_t[sample].argmax())), name(int(z_s[sample].argmax())))
        if self.present:
            text = f"#{sample} {self.metric} {value:+.3f}" if np.isfinite(value) else f"#{sample} undefined"
            return text + (f" · {answers[0]}/{answers[1]}" if answers else "")
        text = f"#{sample:<5} {self.metric} = {value:+.3f}" if np.isfinite(value) else f"#{sample:<5} undefined"
        return text + (f"   teacher {answers[0]}, student {answers[1]}" if answers else "")

    def shown_sample(self) -> int:
        """The selected sample when it was explained, else the first explained sample (said in the note)."""
        index = self.attribution.stored(self.method, self.target).index
        sample = self.selection.sample
        if sample in set(index.tolist()):
            self.note.object = ""
            return sample
        self.note.object = (f"*Sample {sample} was not explained (kdviz.attribute ran on {len(index)} samples); "
                            f"showing sample {int(index[0])}.*")
        return int(index[0])

    # ---- drawing ----
    def redraw(self) -> None:
        data, (method, target, metric) = self.attribution, self.selection_key
        self.selected = sample = self.shown_sample()
        values = data.agreement(method, target, metric)
        index = data.stored(method, target).index
        visible = self.visible_samples()
        self.list_samples(self.samples, visible, lambda i: self.row_label(i, values[np.searchsorted(index, i)]), LIST_ROWS)
        self.show_changed("pair", self.panes["pair"], (sample, method, target),
                          lambda: views.attribution_pair(data, sample, method, target))
        self.show_figure("histogram", self.panes["histogram"],
                         views.agreement_histogram(data, method, target, metric, selected=sample))
        self.draw_scatter()
        self.show_changed("overview", self.panes["overview"], (target,), lambda: views.agreement_overview(data, target))
        self.show_figure("classes", self.panes["classes"], views.class_agreement_bars(data, method, target, metric))

    def draw_scatter(self) -> None:
        if self.has_logits:
            method, target, metric = self.selection_key
            self.show_figure("scatter", self.panes["scatter"], views.agreement_scatter(
                self.attribution, method, target, metric, threshold=self.threshold, selected=self.selected))

    # ---- events ----
    def show_bin(self, members: np.ndarray | None) -> None:
        """List only a histogram bar's samples and open the least agreeing of them (None: list every sample again)."""
        self.bin_samples = None if members is None else np.asarray(members, dtype=int)
        self.show_all.visible = members is not None
        target = None
        if self.bin_samples is not None and len(self.bin_samples):
            method, kind, metric = self.selection_key
            values = self.attribution.agreement(method, kind, metric)
            index = self.attribution.stored(method, kind).index
            target = int(self.bin_samples[np.argmin(values[np.searchsorted(index, self.bin_samples)])])
        if target is not None and target != self.selection.sample:
            self.selection.sample = target
        else:
            self.guarded(self.redraw)

    def _histogram_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        if point is None or "pointNumbers" not in point:
            return
        method, target, metric = self.selection_key
        self.show_bin(views.defined_samples(self.attribution, method, target, metric)[np.asarray(point["pointNumbers"], dtype=int)])

    def _scatter_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        if point is not None and point.get("customdata") is not None:
            self.selection.sample = int(np.ravel(point["customdata"])[0])
