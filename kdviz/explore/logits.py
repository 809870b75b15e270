"""`LogitExplorer`: where, and how, the student's output distribution differs from the teacher's.

The summary at T, the divergence histogram (click a bar to list its samples and open its most divergent one), the
sample list with class and correctness filters, and the open sample's drill-down. Language-model runs show
per-token divergence (their statistics are stored at T = 1, so the temperature is fixed there); which tokens carry
it, the token map, is the Tokens page's (`explore.tokens`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn
import param

from kdviz.explore.base import Explorer, clicked_point, grid, heading, plot
from kdviz.metrics import logits as lm
from kdviz.metrics.classwise import QUADRANTS
from kdviz.readers.logits import CLASS_VIEWS, SORTS, LogitData
from kdviz.views import logits as views

LIST_ROWS = 40


class LogitExplorer(Explorer):
    """Controls: the shared temperature T, the measure (and the order α of Rényi D_α), class and correctness filters
    and the list order. ``values`` holds the listed measure of every sample [N]; ``figures()`` the figures shown."""

    title = "Logits"
    watches = ("sample", "T")

    measure = param.Selector(default="kl", objects=list(lm.MEASURES), label="measure", doc="the per-sample measure")
    alpha = param.Number(default=0.5, bounds=(0.1, 10.0), label="Rényi order α", doc="the order α of Rényi D_α")
    class_index = param.Integer(default=-1, label="class", doc="list only samples of this class (-1: every class)")
    correctness = param.Selector(default="all", objects=["all", *QUADRANTS], label="correct?",
                                 doc="list only samples where each model is right or wrong")
    order = param.Selector(default=SORTS[0], objects=list(SORTS), label="order", doc="order of the sample list")
    class_view = param.Selector(default="agreement", objects=list(CLASS_VIEWS), label="by class (the last figure)",
                                doc="the class-level view of a classification run")

    def build(self) -> list[Any]:
        data: LogitData = self.data("logits")
        self.logit_data = data
        tokens = data.task == "tokens"
        self.bin: np.ndarray | None = None  # the samples of a clicked histogram bar
        self.values_key: tuple[str, float, float] | None = None  # (measure, T, α) of self.values
        self.classes_key: tuple[str, float] | None = None  # (class view, T) of the class-level figure
        self.temperature = pn.widgets.DiscreteSlider.from_param(
            self.selection.param.T, label="temperature T", visible=not tokens, width=300, css_classes=["kd-temperature"])
        self.measure_menu = self.control("measure", options={lm.MEASURES[m]: m for m in data.measures()}, width=260)
        self.alpha_slider = self.control("alpha", pn.widgets.FloatSlider, start=0.1, end=10.0, step=0.1, width=220,
                                         visible=self.measure == "renyi")
        class_options = {"all classes": -1, **{str(c): i for i, c in enumerate(data.class_names or [])}}
        self.class_filter = self.control("class_index", options=class_options, disabled=tokens, width=160)
        has_labels = data.labels is not None and not tokens
        self.correctness_menu = self.control("correctness", options=["all", *QUADRANTS], disabled=not has_labels, width=220)
        self.order_menu = self.control("order", options=list(SORTS), width=200)
        hint = "click a histogram bar to list only its samples"  # in presentation mode, after what a row holds
        self.samples = self.sample_list("samples", hint=f"{data.row_legend('divergence')}; {hint}" if self.present else hint,
                                        size=12, width=440, css_class="kd-sample-list")
        self.show_all = pn.widgets.Button(label="list all samples", visible=False, width=160)
        self.panes = {key: plot() for key in ("summary", "histogram", "detail", "classes")}
        self.show_all.on_click(lambda _event: self.show_bin(None))
        self.panes["histogram"].param.watch(self._histogram_clicked, "click_data")
        note = [] if not tokens else [pn.pane.Markdown(
            "*Language-model runs store per-token statistics at T = 1, so the temperature is fixed here.*")]
        self.has_classes = not tokens and data.z_t is not None
        offered = {label: kind for kind, label in CLASS_VIEWS.items() if kind == "agreement" or data.labels is not None}
        self.class_view_menu = self.control("class_view", options=offered, visible=self.has_classes)
        self.redraw()
        self.sidebar(self.temperature, self.measure_menu, self.alpha_slider, self.class_filter, self.correctness_menu,
                     self.order_menu, self.samples, self.show_all, self.class_view_menu)
        if tokens:  # the drill-down is a strip of text: a row of its own
            figures = [grid(self.panes["histogram"], self.panes["summary"]), self.panes["detail"]]
        else:
            figures = [grid(self.panes["histogram"], self.panes["detail"]),
                       grid(self.panes["summary"], *([self.panes["classes"]] if self.has_classes else []))]
        return [heading(f"Logits: {self.run.name} ({self.run.task}, {self.run.n_samples:,} samples)"), *note, *figures]

    @property
    def T(self) -> float:
        """The temperature the figures are drawn at (1 for language-model runs, whose statistics are stored at T=1)."""
        return 1.0 if self.logit_data.task == "tokens" else float(self.selection.T)

    def state_changed(self, names: set[str]) -> None:
        if "measure" in names:  # a measure the run lacks is refused by the reader, in redraw
            self.alpha_slider.visible = self.measure == "renyi"
        if names == {"alpha"} and self.measure != "renyi":
            return  # α matters only to Rényi
        if names == {"class_view"}:
            self.draw_classes()
            return
        self.redraw()

    # ---- drawing ----
    def redraw(self) -> None:
        data, T, measure = self.logit_data, self.T, self.measure
        alpha = self.alpha if measure == "renyi" else None
        if self.values_key != (measure, T, alpha):  # a sample change reuses them
            self.values_key = (measure, T, alpha)
            self.values = data.per_sample(measure, T, alpha=self.alpha)
            self.show_figure("summary", self.panes["summary"], views.summary_card(data.summary(T)))
        visible = data.visible(self.values, class_index=self.class_index, quadrant=self.correctness, order=self.order)
        self.visible = visible
        listed = visible if self.bin is None else data.visible(self.values, order=self.order, among=self.bin)
        sample = self.selection.sample
        self.list_samples(self.samples, listed, lambda i: data.row_label(i, measure, self.values, compact=self.present),
                          LIST_ROWS)
        shown = visible.tolist().index(sample) if sample in set(visible.tolist()) else None
        unit = "samples" if data.task != "tokens" else "samples (mean over tokens)"
        self.show_figure("histogram", self.panes["histogram"], views.divergence_histogram(
            self.values[visible], measure=measure, T=T, selected=shown, unit=unit, sample_ids=visible, alpha=alpha))
        self.show_figure("detail", self.panes["detail"], views.sample_detail(data, sample, measure=self.detail_measure(), T=T))
        if self.has_classes and self.classes_key != (self.class_view, T):
            self.draw_classes()

    def draw_classes(self) -> None:
        """The chosen class-level view, at the explorer's temperature where it depends on one."""
        data, T, kind = self.logit_data, self.T, self.class_view
        self.classes_key = (kind, T)
        value = data.by_class(kind, T)
        names = data.class_names
        if kind == "agreement":
            fig = views.agreement_matrix(value, names)
        elif kind == "correctness":
            fig = views.quadrant_chart(value)
        elif kind == "divergence":
            fig = views.per_class_divergence(value, names, T=T)
        elif kind == "logits":
            fig = views.class_mean_logit_difference(value, names)
        else:
            fig = views.reliability_diagram(value["teacher"], value["student"], T=T)
        self.show_figure("classes", self.panes["classes"], fig)

    def detail_measure(self) -> str:
        """The per-token measure of a language-model drill-down (only KL and reverse KL are stored per token)."""
        return self.measure if self.logit_data.task != "tokens" or self.measure in ("kl", "reverse_kl") else "kl"

    # ---- events ----
    def _histogram_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        if point is None or "pointNumbers" not in point:
            return
        finite = self.visible[np.isfinite(self.values[self.visible])]  # the histogram draws finite values only
        self.show_bin(finite[np.asarray(point["pointNumbers"], dtype=int)])

    def show_bin(self, members: np.ndarray | None) -> None:
        """List only a histogram bar's samples and open the most divergent of them (None: list every sample again)."""
        self.bin = None if members is None else np.asarray(members, dtype=int)
        self.show_all.visible = members is not None
        target = int(self.bin[np.argmax(self.values[self.bin])]) if self.bin is not None and len(self.bin) else None
        if target is not None and target != self.selection.sample:
            self.selection.sample = target  # every explorer of the selection redraws for it
        else:
            self.guarded(self.redraw)
