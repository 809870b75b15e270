"""`TokenExplorer`: which tokens of a language-model run carry the divergence (issue 19). The texts listed by their
mean divergence, the open text's token strip, where a run holds two tokenizations (`kdviz.capture_text` with a
student tokenizer) the alignment of the two, and the token map of every token of the run, in four regions whose
shares are given for the run and for the open text. A run of generated continuations (`kdviz.generate`) adds
on-policy vs off-policy: the divergence along the student's own continuations and along the teacher's, and where the
open text's pair of continuations forks."""

from __future__ import annotations

from html import escape
from typing import Any

import panel as pn
import param

from kdviz.errors import MissingDataError
from kdviz.explore.base import Explorer, clicked_point, heading, plot
from kdviz.metrics import logits as lm
from kdviz.metrics.token_regions import TokenRegions, token_regions
from kdviz.readers.logits import LogitData
from kdviz.text import display_token
from kdviz.views import logits as logit_views
from kdviz.views import theme
from kdviz.views.generation import drift_by_position, fork_view
from kdviz.views.token_map import token_map
from kdviz.views.tokenizers import alignment_view

LIST_ROWS = 40
PREVIEW = 48  # characters of a text shown in the list


class TokenExplorer(Explorer):
    """Controls: the per-token measure (KL or reverse KL, both stored per token). ``values`` [N] holds each text's
    mean over its tokens, which orders the list; ``regions`` the token map's split of every real token."""

    title = "Tokens"
    watches = ("sample",)

    measure = param.Selector(default="kl", objects=["kl", "reverse_kl"], label="measure", doc="the per-token measure")

    def build(self) -> list[Any]:
        data: LogitData = self.data("logits")
        if data.task != "tokens":
            raise MissingDataError("the Tokens page reads language-model runs (per-token statistics); capture a causal "
                                   "LM with kdviz.capture_text(teacher, student, texts, tokenizer=...)")
        self.logit_data = data
        self.texts = self.data("text").texts if self.run.tokenizations else None
        self.two_tokenizers = self.run.tokenizations == 2
        self.map_key: str | None = None
        self.drift_key: str | None = None
        self.measure_menu = self.control("measure", options={lm.MEASURES[m]: m for m in data.measures()}, width=220)
        self.samples = self.sample_list("texts, most divergent first", size=12, width=560, css_class="kd-token-list")
        self.shares = pn.pane.HTML(sizing_mode="stretch_width", margin=(18, 10, 0, 10))
        self.generations = self.data("generation") if self.run.generated else None
        self.panes = {key: plot() for key in ("strip", "alignment", "token_map", "drift", "fork")}
        self.panes["token_map"].param.watch(self._token_clicked, "click_data")
        unit = ("Its tokens are the **spans** both tokenizations share: the text between two characters where both "
                "end a piece, with the exact next-piece divergence over the matched vocabulary read at the span's "
                "end." if self.two_tokenizers else "")
        self.redraw()
        self.sidebar(self.measure_menu, self.samples)
        kind = "two tokenizations" if self.two_tokenizers else "one tokenizer"
        return [
            heading(f"Tokens: {self.run.name} ({self.run.n_samples:,} texts, {kind})"),
            *([pn.pane.Markdown(unit)] if unit else []), self.shares, self.panes["strip"],
            *([pn.pane.HTML("<b>The two tokenizations</b> (hover a character for its pieces and its span)",
                            margin=(12, 10, 0, 10)), self.panes["alignment"]] if self.two_tokenizers else []),
            *self._generation_section(),
            pn.pane.HTML("<b>Token map</b>: every token of the run (click one to open its text)", margin=(12, 10, 0, 10)),
            self.panes["token_map"],
        ]

    def _generation_section(self) -> list[Any]:
        if self.generations is None:
            return []
        settings = self.generations.settings
        how = ("greedy" if not settings.get("do_sample") else
               f"sampled at T = {settings.get('temperature')}, top-p {settings.get('top_p')}")
        return [pn.pane.Markdown(
            f"**On-policy vs off-policy.** Each prompt was continued by the student (its own text: what GKD and "
            f"MiniLLM train on) and by the teacher ({how}, up to {settings.get('max_new_tokens')} new tokens), and "
            "both models scored every continuation. The open text's pair is shown from where the two part.",
            margin=(12, 10, 0, 10)), self.panes["drift"], self.panes["fork"]]

    def redraw(self) -> None:
        data, measure, sample = self.logit_data, self.measure, self.selection.sample
        self.values = data.per_sample(measure)
        order = data.visible(self.values)
        self.list_samples(self.samples, order, self._label, LIST_ROWS)
        continuation = None  # a generated text: where its continuation starts (the row after `start` predicts it)
        if self.generations is not None:
            continuation = int(self.generations.columns["start"][sample]) + 1
        self.show_figure("strip", self.panes["strip"], logit_views.sample_detail(data, sample, measure=measure,
                                                                                 continuation=continuation))
        if self.two_tokenizers:
            self.show_figure("alignment", self.panes["alignment"], alignment_view(self.data("text").comparison(sample)))
        if self.generations is not None:
            if self.drift_key != measure:  # the drift is over every continuation: redrawn for a new measure only
                self.drift_key = measure
                self.show_figure("drift", self.panes["drift"], drift_by_position(self.generations.generations(), measure))
            pair = self.generations.pair(self.generations.pair_of(sample))
            self.show_figure("fork", self.panes["fork"], fork_view(pair, measure=measure))
        if self.map_key != measure:
            self.draw_token_map()
        self.shares.object = self._shares_table(sample)

    def draw_token_map(self) -> None:
        measure = self.map_key = self.measure
        points = self.logit_data.token_points(measure)
        self.points, self.regions = points, token_regions(points["entropy"], points["divergence"])
        self.show_figure("token_map", self.panes["token_map"], token_map(
            points["entropy"], points["divergence"], self.regions, colour=points["shared_mass"], measure=measure,
            where=(points["sample"], points["position"])))

    def _label(self, i: int) -> str:
        """A list row: index, mean divergence, whose continuation it is and the text's start (in presentation mode
        without it: at 18 px the sidebar holds about 28 characters, and the open text is shown beside)."""
        value = f"#{i} {self.values[i]:.4f} nats" if self.present else f"#{i:<5} {self.values[i]:.4f} nats"
        if self.generations is not None:  # whose continuation this text is
            value += " on-policy " if self.generations.columns["writer"][i] == 0 else " off-policy"
        if self.texts is None or self.present:
            return value.rstrip()
        preview = self.texts[i].replace("\n", " ").strip()
        return f"{value}   {display_token(preview[:PREVIEW])}{'…' if len(preview) > PREVIEW else ''}"

    def _shares_table(self, sample: int) -> str:
        """Each region's share of the tokens and of the divergence, over the run and over the open text (the run's
        splits: the same four regions as the map)."""
        regions: TokenRegions = self.regions
        mine = self.points["sample"] == sample
        d = self.points["divergence"]
        rows = []
        for index, name in enumerate(regions.names):
            inside = regions.region == index
            here = inside & mine
            text_tokens = here.sum() / max(mine.sum(), 1)
            text_div = d[here].sum() / d[mine].sum() if d[mine].sum() > 0 else 0.0
            rows.append(f"<tr><td>{escape(name)}</td><td>{regions.token_share[name]:.0%}</td>"
                        f"<td>{regions.divergence_share[name]:.0%}</td><td>{text_tokens:.0%}</td><td>{text_div:.0%}</td></tr>")
        head = ("<tr><th></th><th>run: tokens</th><th>run: divergence</th><th>this text: tokens</th>"
                "<th>this text: divergence</th></tr>")
        note = (f"confident: H(p_t) &lt; {regions.entropy_split:.3f} nats; disagreeing: {escape(lm.MEASURES[self.measure])} "
                f"&gt; {regions.divergence_split:.4f} nats (the run's medians)")
        style = (f"font-family:{theme.FONT_FAMILY};font-size:13px;border-collapse:collapse;color:{theme.INK}")
        return (f'<table class="kd-region-shares" style="{style}" cellpadding="5">{head}{"".join(rows)}</table>'
                f'<div style="font-size:12px;color:{theme.NEUTRAL};margin-top:4px;font-family:{theme.FONT_FAMILY}">{note}</div>')

    def _token_clicked(self, event: Any) -> None:
        point = clicked_point(event.new)
        if point is None or len(point.get("customdata") or []) < 3:
            return
        self.selection.sample = int(point["customdata"][1])  # every explorer of the selection opens that text
