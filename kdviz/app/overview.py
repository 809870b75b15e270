"""The Overview page: each run's models, their accuracy or perplexity, the layer map and capture settings.

Every string that comes from a run (model names, class names, settings) is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

import panel as pn

from kdviz.layer_map import describe_layer_map
from kdviz.store import Run
from kdviz.summary import format_count
from kdviz.views import theme

CARD_CSS = f"""
.kd-card {{ background: {theme.CARD}; border-radius: 8px; padding: 14px 18px; margin: 6px;
            box-shadow: 0 1px 3px rgba(0,0,0,.12); font-family: {theme.FONT_FAMILY}; min-width: 260px; }}
.kd-card h3 {{ margin: 0 0 6px 0; font-size: 15px; }}
.kd-metric {{ font-size: 28px; font-weight: 600; margin: 4px 0; }}
.kd-sub {{ color: {theme.NEUTRAL}; font-size: 13px; line-height: 1.5; }}
.kd-table td {{ padding: 2px 12px 2px 0; font-size: 13px; font-family: {theme.FONT_FAMILY}; vertical-align: top; }}
.kd-table td:first-child {{ color: {theme.NEUTRAL}; }}
"""


def headline(model: dict[str, Any], task: str) -> tuple[str, str]:
    """The one number to show big and its caption: perplexity for language models, else accuracy."""
    if task == "tokens" and model.get("perplexity") is not None:
        caption = f"perplexity · next-token accuracy {100 * model['accuracy']:.1f}%" if model.get("accuracy") is not None else "perplexity"
        return f"{model['perplexity']:.2f}", caption
    if model.get("accuracy") is not None:
        return f"{100 * model['accuracy']:.1f}%", "accuracy"
    return "—", "no labels were captured"


def plain(value: Any) -> str:
    """Settings as text: dicts become ``key=value`` lists."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def model_card(role: str, model: dict[str, Any], task: str) -> str:
    colour = theme.ROLE_COLOURS[role]
    heads = model.get("heads") or []
    attention = f"{len(heads)} attention layers, up to {max(heads)} heads" if heads else "no attention layers captured"
    number, caption = headline(model, task)
    return (
        f'<div class="kd-card" style="border-top: 4px solid {colour}">'
        f'<h3 style="color:{colour}">{escape(role.title())}: {escape(model["name"])}</h3>'
        f'<div class="kd-metric">{escape(number)}</div>'
        f'<div class="kd-sub">{escape(caption)}<br>'
        f"{escape(format_count(model['n_params']))} parameters<br>{escape(attention)}<br>"
        f"{len(model.get('feature_names') or [])} feature layers</div></div>"
    )


def settings_table(run: Run) -> str:
    meta = run.meta
    rows = [
        ("task", f"{meta['task']}, {meta['n_samples']} samples"),
        ("size ratio", f"teacher has {meta['teacher']['n_params'] / max(1, meta['student']['n_params']):.1f}× the student's parameters"),
        ("layer map", f"{meta['layer_map']['spec']} over {meta['layer_map']['unit']}: {describe_layer_map(meta['layer_map']['pairs'])}"),
    ]
    if run.class_names:
        rows.append(("classes", ", ".join(run.class_names)))
    rows += [(f"capture: {k}", plain(v)) for k, v in meta.get("capture", {}).items() if v is not None and k != "full_logits_index"]
    rows += [(str(k), plain(v)) for k, v in (meta.get("extra") or {}).items()]
    rows.append(("written by", f"kdviz {meta.get('kdviz_version', '?')} on {meta.get('created', '?')}"))
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="kd-table">{body}</table>'


def overview_panel(run: Run) -> pn.viewable.Viewable:
    """One run's overview: teacher and student cards side by side, then the settings."""
    cards = [pn.pane.HTML(model_card(role, run.meta[role], run.task), stylesheets=[CARD_CSS]) for role in ("teacher", "student")]
    return pn.Column(
        pn.pane.HTML(f"<h2 style='font-family:{theme.FONT_FAMILY};margin:4px 6px'>{escape(run.name)}</h2>"),
        pn.Row(*cards),
        pn.pane.HTML(settings_table(run), stylesheets=[CARD_CSS], margin=(6, 12)),
        name=run.name,
    )


def overview_app(runs: list[Run]) -> pn.viewable.Viewable:
    """The whole page: a tab per run."""
    header = pn.pane.HTML(
        f"<h1 style='font-family:{theme.FONT_FAMILY};margin:8px 6px 0 6px'>kdviz"
        f"<span style='font-weight:400;color:{theme.NEUTRAL};font-size:16px'> · knowledge distillation, teacher vs student</span></h1>"
    )
    return pn.Column(
        header,
        pn.Tabs(*(overview_panel(run) for run in runs), dynamic=True),
        styles={"background": theme.BACKGROUND, "min-height": "100vh"},
        sizing_mode="stretch_width",
    )
