"""The overview of a run as HTML cards: each model's accuracy or perplexity, size and ECE, how close the student is,
the layer map and capture settings, and students of the same teacher compared.

Every string that comes from a run (model names, class names, settings) is HTML-escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any

from kdviz.layer_map import describe_layer_map
from kdviz.summary import format_count
from kdviz.views import theme

CARD_CSS = f"""
.kd-card {{ background: {theme.CARD}; border-radius: 8px; padding: 14px 18px; margin: 6px;
            box-shadow: {theme.SHADOW}; font-family: {theme.FONT_FAMILY}; min-width: 260px; }}
.kd-card h3 {{ margin: 0 0 6px 0; font-size: 15px; }}
.kd-metric {{ font-size: 28px; font-weight: 600; margin: 4px 0; }}
.kd-sub {{ color: {theme.NEUTRAL}; font-size: 13px; line-height: 1.5; }}
.kd-table td {{ padding: 2px 12px 2px 0; font-size: 13px; font-family: {theme.FONT_FAMILY}; vertical-align: top; }}
.kd-table td:first-child {{ color: {theme.NEUTRAL}; }}
.kd-compare {{ border-collapse: collapse; font-family: {theme.FONT_FAMILY}; font-size: 13px; background: {theme.CARD}; }}
.kd-compare th, .kd-compare td {{ padding: 6px 14px; text-align: right; border-bottom: 1px solid {theme.RULE}; }}
.kd-compare th {{ color: {theme.NEUTRAL}; font-weight: 600; }}
.kd-compare td:nth-child(-n+2), .kd-compare th:nth-child(-n+2) {{ text-align: left; }}
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
    """Settings as text: dicts become ``key=value`` lists; a long run of sample indices is written as its range."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list) and len(value) > 8 and all(isinstance(v, int) for v in value):
        if value == list(range(value[0], value[-1] + 1)):
            return f"{value[0]}–{value[-1]} ({len(value):,} samples)"
        return f"{', '.join(map(str, value[:5]))}, … ({len(value):,} samples)"
    return str(value)


def model_card(role: str, model: dict[str, Any], task: str, ece: float | None = None, ratio: str = "") -> str:
    """One model's card: its headline number, parameter count (and, for the student, the size ratio) and ECE."""
    colour = theme.ROLE_COLOURS[role]
    heads = model.get("heads") or []
    attention = f"{len(heads)} attention layers, up to {max(heads)} heads" if heads else "no attention layers captured"
    number, caption = headline(model, task)
    calibration = f"ECE {ece:.3f} (15 bins, T = 1)<br>" if ece is not None else ""
    return (
        f'<div class="kd-card" style="border-top: 4px solid {colour}">'
        f'<h3 style="color:{colour}">{escape(role.title())}: {escape(model["name"])}</h3>'
        f'<div class="kd-metric">{escape(number)}</div>'
        f'<div class="kd-sub">{escape(caption)}<br>{calibration}'
        f"{escape(format_count(model['n_params']))} parameters{escape(ratio)}<br>{escape(attention)}<br>"
        f"{len(model.get('feature_names') or [])} feature layers</div></div>"
    )


def pair_card(summary: dict[str, Any]) -> str:
    """How close the student is to the teacher: top-1 agreement and mean KL at T = 1."""
    agreement = summary.get("top1_agreement")
    number = f"{100 * agreement:.1f}%" if agreement is not None else f"{summary['kl_T1']:.3f}"
    caption = "top-1 agreement" if agreement is not None else "mean KL(teacher‖student) per token, nats"
    kl = f"mean KL(teacher‖student) at T = 1: {summary['kl_T1']:.4f} nats<br>" if agreement is not None else ""
    return (
        f'<div class="kd-card" style="border-top: 4px solid {theme.HIGHLIGHT}">'
        f"<h3>Student vs teacher</h3><div class='kd-metric'>{escape(number)}</div>"
        f"<div class='kd-sub'>{escape(caption)}<br>{kl}over {summary['n']:,} samples</div></div>"
    )


def comparison_table(rows: list[tuple[str, dict[str, Any], dict[str, Any]]], current: str) -> str:
    """Students of one teacher side by side, from (run name, ``meta.json``, logit summary) rows: size, accuracy (or
    perplexity), agreement, KL, ECE; the best of each column bold."""
    tokens = rows[0][1]["task"] == "tokens"
    columns = ["run", "student", "parameters", "perplexity" if tokens else "accuracy", "top-1 agreement", "mean KL (T = 1)", "ECE"]
    def cells(name: str, meta: dict[str, Any], summary: dict[str, Any]) -> list[tuple[str, float | None]]:
        model = meta["student"]
        quality = model.get("perplexity") if tokens else summary.get("student_accuracy")
        return [(name, None), (model["name"], None), (format_count(model["n_params"]), -model["n_params"]),
                (f"{quality:.2f}" if tokens and quality is not None else f"{100 * quality:.1f}%" if quality is not None else "—",
                 None if quality is None else (-quality if tokens else quality)),
                (f"{100 * summary['top1_agreement']:.1f}%" if summary.get("top1_agreement") is not None else "—",
                 summary.get("top1_agreement")),
                (f"{summary['kl_T1']:.4f}", -summary["kl_T1"]),
                (f"{summary['student_ece']:.3f}" if summary.get("student_ece") is not None else "—",
                 None if summary.get("student_ece") is None else -summary["student_ece"])]
    table = [cells(name, meta, summary) for name, meta, summary in rows]
    best = [max((row[c][1] for row in table if row[c][1] is not None), default=None) for c in range(len(columns))]
    body = ""
    for (name, _, _), row in zip(rows, table, strict=True):
        style = f" style='background:{theme.SELECTED_ROW}'" if name == current else ""
        tds = "".join(f"<td>{'<b>' if best[c] is not None and value == best[c] and len(rows) > 1 else ''}{escape(text)}"
                      f"{'</b>' if best[c] is not None and value == best[c] and len(rows) > 1 else ''}</td>"
                      for c, (text, value) in enumerate(row))
        body += f"<tr{style}>{tds}</tr>"
    header = "".join(f"<th>{escape(c)}</th>" for c in columns)
    return (f"<h3 style='font-family:{theme.FONT_FAMILY};margin:14px 6px 4px 6px'>Students of the same teacher</h3>"
            f"<table class='kd-compare'><tr>{header}</tr>{body}</table>"
            f"<div class='kd-sub' style='margin:4px 6px'>bold: best in its column (smaller models, lower KL and ECE count as "
            "better)</div>")


def _capture_setting(key: str, value: Any, meta: dict[str, Any]) -> str:
    """A capture setting as text; ``attentions`` asked for says when a model had no attention layers to give."""
    if key == "attentions" and value is True:
        lacking = [role for role in ("teacher", "student") if not meta[role].get("heads")]
        if lacking:
            return (f"on, none captured: the {' and the '.join(lacking)} "
                    f"{'has' if len(lacking) == 1 else 'have'} no attention layers")
    return plain(value)


def settings_table(meta: dict[str, Any]) -> str:
    """A run's task, size ratio, layer map, classes and capture settings, from its ``meta.json``."""
    rows = [
        ("task", f"{meta['task']}, {meta['n_samples']} samples"),
        ("size ratio", f"teacher has {meta['teacher']['n_params'] / max(1, meta['student']['n_params']):.1f}× the student's parameters"),
        ("layer map", f"{meta['layer_map']['spec']} over {meta['layer_map']['unit']}: {describe_layer_map(meta['layer_map']['pairs'])}"),
    ]
    if meta.get("class_names"):
        rows.append(("classes", ", ".join(meta["class_names"])))
    rows += [(f"capture: {k}", _capture_setting(k, v, meta)) for k, v in meta.get("capture", {}).items()
             if v is not None and k != "full_logits_index"]
    rows += [(str(k), plain(v)) for k, v in (meta.get("extra") or {}).items()]
    rows.append(("written by", f"kdviz {meta.get('kdviz_version', '?')} on {meta.get('created', '?')}"))
    body = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="kd-table">{body}</table>'
