"""`OverviewExplorer`: summary cards for the teacher and the student, the capture settings and layer map, and the
runs of the library that distil the same teacher, side by side."""

from __future__ import annotations

from html import escape
from typing import Any

import panel as pn

from kdviz.errors import KdvizError
from kdviz.explore.base import Explorer
from kdviz.store import Run
from kdviz.views import theme
from kdviz.views.overview import CARD_CSS, comparison_table, model_card, pair_card, settings_table


def overview_panel(run: Run, summary: dict[str, Any] | None = None) -> pn.viewable.Viewable:
    """One run's overview: teacher, student and pair cards side by side, then the settings."""
    summary = summary or {}
    ratio = f" ({run.meta['teacher']['n_params'] / max(1, run.meta['student']['n_params']):.1f}× smaller than the teacher)"
    cards = [model_card("teacher", run.meta["teacher"], run.task, summary.get("teacher_ece")),
             model_card("student", run.meta["student"], run.task, summary.get("student_ece"), ratio)]
    if summary:
        cards.append(pair_card(summary))
    return pn.Column(
        pn.pane.HTML(f"<h2 style='font-family:{theme.FONT_FAMILY};margin:4px 6px'>{escape(run.name)}</h2>"),
        pn.Row(*(pn.pane.HTML(card, stylesheets=[CARD_CSS]) for card in cards)),
        pn.pane.HTML(settings_table(run.meta), stylesheets=[CARD_CSS], margin=(6, 12)),
        name=run.name,
    )


def same_teacher(runs: list[Run], run: Run) -> list[Run]:
    """The served runs that distil the same teacher as ``run`` on the same task and data size (``run`` included)."""
    def key(r: Run) -> tuple:
        return r.meta["teacher"]["name"], r.meta["teacher"]["n_params"], r.task, r.n_samples
    return [r for r in runs if key(r) == key(run)]


class OverviewExplorer(Explorer):
    """One run at a glance (``figures()`` holds the logit summary card at T = 1 where the run has logits)."""

    title = "Overview"
    watches = ()

    def summary(self, name: str) -> dict[str, Any]:
        try:
            return self.library.data("logits", name).summary(1.0)
        except KdvizError:
            return {}

    def build(self) -> list[Any]:
        from kdviz.views.logits import summary_card

        run = self.run
        summary = self.summary(self.selection.run)
        if summary:
            self._figures["summary"] = summary_card(summary)
        parts = [overview_panel(run, summary)]
        others = same_teacher([self.library.run(name) for name in self.library.names], self.library.run(self.selection.run))
        rows = [(r.name, r.meta, self.summary(r.name)) for r in others]
        if len(others) > 1 and all(summary for _, _, summary in rows):
            parts.append(pn.pane.HTML(comparison_table(rows, self.selection.run), stylesheets=[CARD_CSS], margin=(6, 12)))
        return parts
