"""Attribution page: agreement of every method at a glance, the shown sample's teacher | student maps, and the
per-sample agreement (click a histogram bar to open its least agreeing sample, or a scatter point to open it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn

from kdviz.app.pages.base import Page, clicked_point, heading, plot
from kdviz.metrics import attribution_agreement as ag
from kdviz.views import attribution as views
from kdviz.views.attribution_data import AttributionData


class AttributionPage(Page):
    title = "Attribution"

    def build(self) -> list[Any]:
        data: AttributionData = self.data("attribution")
        self.attribution = data
        method, target = data.default_selection()
        self.target = pn.widgets.Select(label="explain", options={views.target_label(t): t for t in data.targets}, value=target,
                                        width=240)
        self.method = pn.widgets.Select(label="method", options=self._methods(target), value=method, width=240)
        self.metric = pn.widgets.Select(label="agreement", options={v: k for k, v in ag.AGREEMENT_METRICS.items()},
                                        value="spearman", width=220)
        self.note = pn.pane.Markdown("", margin=(0, 10))
        self.has_logits = data.logits("teacher") is not None
        self.panes = {key: plot() for key in ("overview", "pair", "histogram", "scatter", "classes")}
        self.target.param.watch(self._target_changed, "value")
        for control in (self.method, self.metric):
            control.param.watch(lambda _e: self._guarded(self.redraw) if not self._updating else None, "value")
        self.panes["histogram"].param.watch(self._histogram_clicked, "click_data")
        self.panes["scatter"].param.watch(self._scatter_clicked, "click_data")
        self.redraw()
        scatter = [self.panes["scatter"]] if self.has_logits else [pn.pane.Markdown(
            "*The answer-vs-reason scatter needs class logits (language-model runs keep only per-token summaries).*")]
        return [
            heading(f"Attribution: {self.run.name}"),
            pn.Row(self.target, self.method, self.metric), self.note,
            self.panes["pair"],
            self.panes["histogram"], *scatter, self.panes["classes"], self.panes["overview"],
        ]

    def _methods(self, target: str) -> dict[str, str]:
        return {views.METHOD_LABELS.get(m, m): m for m in self.attribution.targets[target]}

    def _target_changed(self, event: Any) -> None:
        """Offer the new target's methods, keeping the current method where it was computed too."""
        options = self._methods(event.new)
        current = self.method.value
        with self.quietly():
            self.method.options = options
            self.method.value = current if current in options.values() else next(iter(options.values()))
        self._guarded(self.redraw)

    def shown_sample(self) -> int:
        """The selected sample when it was explained, else the first explained sample (said in the note)."""
        index = self.attribution.stored(self.method.value, self.target.value).index
        sample = self.selection.sample
        if sample in set(index.tolist()):
            self.note.object = ""
            return sample
        self.note.object = (f"*Sample {sample} was not explained (kdviz.attribute ran on {len(index)} samples); "
                            f"showing sample {int(index[0])}.*")
        return int(index[0])

    def redraw(self) -> None:
        data, method, target, metric = self.attribution, self.method.value, self.target.value, self.metric.value
        sample = self.shown_sample()
        self.show_figure("pair", self.panes["pair"], views.attribution_pair(data, sample, method, target))
        self.show_figure("histogram", self.panes["histogram"],
                         views.agreement_histogram(data, method, target, metric, selected=sample))
        if self.has_logits:
            self.show_figure("scatter", self.panes["scatter"],
                             views.agreement_scatter(data, method, target, metric, selected=sample))
        self.show_figure("overview", self.panes["overview"], views.agreement_overview(data, target))
        self.show_figure("classes", self.panes["classes"], views.class_agreement_bars(data, method, target, metric))

    def _histogram_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        if point is None or "pointNumbers" not in point:
            return
        method, target, metric = self.method.value, self.target.value, self.metric.value
        members = views.defined_samples(self.attribution, method, target, metric)[np.asarray(point["pointNumbers"], dtype=int)]
        if len(members):
            values = self.attribution.agreement(method, target, metric)
            index = self.attribution.stored(method, target).index
            self.selection.sample = int(members[np.argmin(values[np.searchsorted(index, members)])])

    def _scatter_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        if point is not None and point.get("customdata") is not None:
            self.selection.sample = int(np.ravel(point["customdata"])[0])
