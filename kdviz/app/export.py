"""``kdviz export``: one self-contained HTML file of a fixed selection of views, to attach to a paper or an email.

plotly.js is inlined once, every figure is a static div, and nothing is fetched: the file opens offline. Every string
from a run is HTML-escaped (figures escape their own labels). A page whose data the run lacks says so and how to
capture it, as the dashboard does.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from html import escape
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from kdviz.app.library import open_runs
from kdviz.errors import CorruptRunError, InputError, KdvizError, MissingDataError
from kdviz.metrics import features as fm
from kdviz.metrics import logits as lm
from kdviz.store import Run
from kdviz.views import attention as attention_views
from kdviz.views import attribution as attribution_views
from kdviz.views import logits as logit_views
from kdviz.views import theme
from kdviz.views import training as training_views
from kdviz.views.attention_data import AttentionData
from kdviz.views.attribution_data import AttributionData
from kdviz.views.features import cka_heatmap
from kdviz.views.run_data import LogitData
from kdviz.views.training_data import TrainingData

PAGES = ("overview", "logits", "attention", "features", "attribution", "training")
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def _overview(run: Run, sample: int) -> list[go.Figure]:
    return [logit_views.summary_card(LogitData.from_run(run).summary(1.0))]


def _logits(run: Run, sample: int) -> list[go.Figure]:

    data = LogitData.from_run(run)
    if data.task == "tokens":
        stats = data.token_stats
        tokens = (data.tokens or [[str(i) for i in range(stats["kl"].shape[1])]] * run.n_samples)[sample]
        return [logit_views.token_strip(tokens, stats["kl"][sample], vocab=data.vocab(),
                                  teacher_top=(stats["teacher_topk_ids"][sample], stats["teacher_topk_probs"][sample]),
                                  student_top=(stats["student_topk_ids"][sample], stats["student_topk_probs"][sample]))]
    z_t, z_s = data.require_logits()
    target = int(data.labels[sample]) if data.labels is not None else None
    return [logit_views.divergence_histogram(lm.kl(z_t, z_s, 4.0), measure="kl", T=4.0, selected=sample),
            logit_views.sample_drilldown(z_t[sample], z_s[sample], T=4.0, target=target, class_names=data.class_names,
                                   thumbnail=data.thumbnail(sample), sample_index=sample)]


def _attention(run: Run, sample: int) -> list[go.Figure]:

    data = AttentionData(run)
    if not data.has_attention:
        if data.has_spatial:
            return [attention_views.spatial_overlay(data, sample)]
        raise MissingDataError("this run has no attention maps; capture with attentions=True (transformers) or "
                               "layers=[...] on conv features (CNNs)")
    s_layer, t_layer = data.layer_map[-1] if data.layer_map else (len(data.layers("student")) - 1, len(data.layers("teacher")) - 1)
    return [attention_views.pair_view(data, (t_layer, 0), (s_layer, 0), sample), attention_views.layer_similarity_view(data)]


def _features(run: Run, sample: int) -> list[go.Figure]:

    result = fm.cka_matrix(run, cache="read")  # export never writes into the run
    unit = run.meta["layer_map"]["unit"]
    return [cka_heatmap(result, suggested=fm.suggest_layer_map(result["cross"])["pairs"],
                        layer_map=run.layer_map if unit == "features" else None)]


def _attribution(run: Run, sample: int) -> list[go.Figure]:

    data = AttributionData(run)
    method, target = data.default_selection()
    index = data.stored(method, target).index
    shown = sample if sample in set(index.tolist()) else int(index[0])
    return [attribution_views.agreement_overview(data, target), attribution_views.attribution_pair(data, shown, method, target),
            attribution_views.agreement_histogram(data, method, target, selected=shown)]


def _training(run: Run, sample: int) -> list[go.Figure]:

    data = TrainingData.from_run(run)
    figures = [training_views.training_curves(data)]
    if "ce" in data.series:
        figures.append(training_views.teacher_hacking_view(data))
    return figures


BUILDERS: dict[str, Callable[[Run, int], list[go.Figure]]] = {
    "overview": _overview, "logits": _logits, "attention": _attention, "features": _features, "attribution": _attribution,
    "training": _training,
}


def export_html(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, sample: int = 0,
                pages: Sequence[str] | None = None) -> Path:
    """Write the chosen ``pages`` (default: all) of every run under ``paths`` for sample ``sample`` into one HTML file."""
    pages = list(pages or PAGES)
    unknown = [p for p in pages if p not in PAGES]
    if unknown:
        raise InputError(f"unknown pages {unknown}; choose from {list(PAGES)}")
    runs = open_runs(paths)
    for run in runs:
        if not 0 <= sample < run.n_samples:
            raise InputError(f"sample {sample} is outside run {run.name!r} ({run.n_samples} samples)")
    body = [_run_section(run, sample, pages) for run in runs]
    title = "kdviz: " + ", ".join(run.name for run in runs)
    document = TEMPLATE.format(title=escape(title), css=CSS, plotlyjs=get_plotlyjs(), heading=escape(title),
                               body="\n".join(body))
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(document, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _run_section(run: Run, sample: int, pages: Sequence[str]) -> str:
    # never where the run lies on this machine: an export is made to be shared
    parts = [f"<section class='kd-run'><h2>{escape(run.name)}</h2><pre>{escape(str(run.info(location=False)))}</pre>"]
    for page in pages:
        parts.append(f"<h3>{escape(page.capitalize())}</h3>")
        try:
            figures = BUILDERS[page](run, sample)
        except CorruptRunError:
            raise  # a damaged run is never exported as if it lacked a page
        except KdvizError as exc:  # the run lacks this page's data: say so, and how to capture it
            parts.append(f"<p class='kd-missing'>{escape(str(exc))}</p>")
            continue
        parts.extend(fig.to_html(full_html=False, include_plotlyjs=False, config=PLOT_CONFIG) for fig in figures)
    parts.append("</section>")
    return "\n".join(parts)


CSS = f"""
body {{ font-family: {theme.FONT_FAMILY}; background: {theme.BACKGROUND}; color: #1f2933; margin: 24px; }}
.kd-run {{ background: {theme.CARD}; border-radius: 8px; padding: 12px 20px; margin-bottom: 24px;
           box-shadow: 0 1px 3px rgba(0,0,0,.12); }}
pre {{ font-size: 12px; color: {theme.NEUTRAL}; white-space: pre-wrap; }}
.kd-missing {{ color: {theme.NEUTRAL}; font-style: italic; }}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{css}</style>
<script type="text/javascript">{plotlyjs}</script>
</head><body>
<h1>{heading}</h1>
{body}
</body></html>
"""
