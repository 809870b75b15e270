"""On-policy vs off-policy (issue 19): divergence against position on the student's own continuations and on the
teacher's, and the fork of one prompt, both continuations from where they part."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from kdviz.metrics import logits as lm
from kdviz.metrics.generation import mean_by_position
from kdviz.text import display_token, escape_label
from kdviz.views import theme

WRITERS = {"student": ("on-policy: the student's continuations", theme.STUDENT),
           "teacher": ("off-policy: the teacher's continuations", theme.TEACHER)}


def drift_by_position(generations: Sequence[Any], measure: str = "kl") -> go.Figure:
    """Mean ``measure`` at each new-token position over the prompts, on the student's continuations (on-policy) and
    on the teacher's (off-policy); hover gives how many continuations reach each position. ``generations``:
    `generation.PromptGenerations`. A student trained only off-policy drifts on its own prefixes: its line rises."""
    fig = go.Figure()
    for writer, (label, colour) in WRITERS.items():
        rows = [(g.on_policy if writer == "student" else g.off_policy).stats[measure] for g in generations]
        mean, count = mean_by_position(rows)
        fig.add_trace(go.Scatter(
            x=np.arange(1, len(mean) + 1), y=mean, mode="lines+markers", name=label, line={"color": colour, "width": 2.5},
            marker={"size": 5}, customdata=count,
            hovertemplate=f"{label}<br>position %{{x}}: mean %{{y:.4f}} nats over %{{customdata}} continuations<extra></extra>"))
    forks = [g.fork for g in generations if g.fork is not None]
    ratio = np.nanmean([g.length_ratio for g in generations]) if generations else float("nan")
    repeats = {w: np.nanmean([(g.on_policy if w == "student" else g.off_policy).repetition for g in generations])
               for w in WRITERS}
    detail = (f"{len(generations)} continuations of each writer; they part at position "
              f"{int(np.median(forks)) + 1 if forks else '—'} (median; {len(forks)} of {len(generations)} part)<br>"
              f"length student ÷ teacher {ratio:.2f}; repeated 4-grams: student {repeats['student']:.0%}, "
              f"teacher {repeats['teacher']:.0%}{drift_flags(ratio, repeats)}")
    unit = "new token" if all(g.unit == "token" for g in generations) else "new span"
    fig.update_xaxes(title_text=f"{unit} (position after the prompt)", rangemode="tozero")
    fig.update_yaxes(title_text=f"mean {lm.MEASURES[measure]} (nats)", rangemode="tozero")
    fig = theme.style(fig, "Divergence along the continuation, on-policy and off-policy" + theme.subtitle(detail),
                      height=520)
    lines = detail.count("<br>") + 1  # the subtitle's lines, above the plot; the legend sits under it, never on a line
    return fig.update_layout(margin={"t": 70 + 24 * lines, "b": 120},
                             legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top"})


MAX_WIDTH = 1080  # px: the fork view shows as many units as fit beside the sidebar of a 1440 px window
LENGTH_COLLAPSE = 0.8  # the student's continuations under 80 % of the teacher's length: it stops early
REPETITION_EXCESS = 0.1  # 10 points more repeated 4-grams than the teacher: it loops


def drift_flags(ratio: float, repeats: dict[str, float]) -> str:
    """The warnings a drift view states: length collapse and repetition beyond the teacher's ("" when neither)."""
    flags = []
    if np.isfinite(ratio) and ratio < LENGTH_COLLAPSE:
        flags.append("length collapse: the student stops early")
    if np.isfinite(repeats["student"]) and repeats["student"] - np.nan_to_num(repeats["teacher"]) > REPETITION_EXCESS:
        flags.append("the student repeats itself more than the teacher")
    return "".join(f"<br><b>⚠ {flag}</b>" for flag in flags)


def fork_view(generation: Any, *, measure: str = "kl", context: int = 4, max_tokens: int = 24) -> go.Figure:
    """One prompt's two continuations from a few units before their fork, one row each, every new unit (token, or
    shared span with two tokenizers) coloured by ``measure`` at it (white to deep red, one scale for both rows); the
    fork is marked and the rows are lined up on it. ``generation``: a `metrics.generation.PromptGenerations`."""
    rows = [("student (on-policy)", generation.on_policy), ("teacher (off-policy)", generation.off_policy)]
    unit = "new token" if generation.unit == "token" else "new span"
    forks = [c.fork if c.fork is not None else (generation.fork or 0) for _, c in rows]
    lead = min(context, *forks)  # columns before the fork, the same for both rows
    starts = [f - lead for f in forks]
    width = max(1, min(max_tokens, max(len(c.pieces) - s for (_, c), s in zip(rows, starts, strict=True))))
    shown = [display_token(c.pieces[j]) for (_, c), s in zip(rows, starts, strict=True)
             for j in range(s, min(s + width, len(c.pieces)))]
    chars = int(np.clip(np.percentile([len(t) for t in shown], 90) if shown else 1, 3, 10))  # a cell's characters
    cell = round(9 * theme.text_px() / theme.FONT_SIZE * chars) + 14  # a 13 px monospace character is about 8 px wide
    width = max(1, min(width, (MAX_WIDTH - 170) // cell))  # the figure fits beside the sidebar; the rest is hovered
    z = np.full((2, width), np.nan)
    text = np.full((2, width), "", dtype=object)
    hover = np.full((2, width), "", dtype=object)
    for r, ((name, continuation), start) in enumerate(zip(rows, starts, strict=True)):
        for column in range(width):
            j = start + column
            if j >= len(continuation.pieces):
                continue
            piece = display_token(continuation.pieces[j])
            token = escape_label(piece)
            value = float(continuation.stats[measure][j])
            z[r, column] = value
            text[r, column] = token if len(piece) <= chars else escape_label(piece[:chars - 1] + "…")
            hover[r, column] = (f"{name}, {unit} {j + 1}: <b>{token}</b><br>{lm.MEASURES[measure]} {value:.4f} nats"
                                f"<br>log p_t {continuation.stats['teacher_true_logprob'][j]:.3f}, "
                                f"log p_s {continuation.stats['student_true_logprob'][j]:.3f}")
    finite = z[np.isfinite(z)]
    fig = go.Figure(go.Heatmap(
        z=z, text=text, customdata=hover, texttemplate="%{text}", hovertemplate="%{customdata}<extra></extra>",
        textfont={"family": "monospace", "size": 13}, colorscale=theme.DIVERGENCE_SCALE, zmin=0,
        zmax=float(np.percentile(finite, 99)) if len(finite) else 1.0, xgap=2, ygap=6,
        colorbar={"title": {"text": "nats", "side": "right"}}))
    if generation.fork is not None and lead < width:
        fig.add_vline(x=lead - 0.5, line={"color": theme.INK, "width": 2})
        fig.add_annotation(x=lead - 0.5, y=1.02, yref="paper", text="fork", showarrow=False,
                           font={"color": theme.INK, "size": 13}, yanchor="bottom")
    fig.update_xaxes(tickvals=list(range(width)), ticktext=[str(starts[0] + c + 1) for c in range(width)],
                     title_text=f"{unit} (of the student's continuation)" if forks[0] != forks[1] else unit,
                     showgrid=False)
    fig.update_yaxes(tickvals=[0, 1], ticktext=[name for name, _ in rows], autorange="reversed", showgrid=False)
    fork = ("the continuations are identical" if generation.fork is None
            else f"they part at {unit} {generation.fork + 1}")
    title = f"Where the two continuations fork: {fork}" + theme.subtitle(
        f"prompt: {escape_label(generation.prompt[-80:])}; colour: {lm.MEASURES[measure]} at each {unit.split()[-1]}")
    fig = theme.style(fig, title, height=260, width=max(700, 170 + cell * width), legend=False)
    return fig.update_layout(margin={"l": 150, "r": 20, "t": 90, "b": 50})
