"""Views of how the student's output distribution differs from the teacher's. Each function returns a go.Figure.

Numbers come from `kdviz.metrics`; colours and fonts from `kdviz.views.theme`. Every string that comes from a
run (class names, tokens) passes through `text.escape_label` before it reaches the figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdviz.metrics import logits as lm
from kdviz.metrics.classwise import QUADRANTS
from kdviz.text import display_token, escape_label
from kdviz.views import scales, theme

if TYPE_CHECKING:
    from kdviz.readers.logits import LogitData


def measure_label(measure: str, T: float, t2_scale: bool = False, *, alpha: float | None = None) -> str:
    """Axis text that states the convention: which divergence (with its order α for Rényi), which temperature,
    whether ×T² is applied."""
    base = lm.MEASURES[measure] if measure != "renyi" or alpha is None else f"Rényi D_{alpha:g}(p_t‖p_s)"
    unit = "" if measure in ("tv", "hellinger") else " (nats)"
    scale = ", ×T² as in the KD loss" if t2_scale and measure in lm.T2_MEASURES else ""
    return f"{base} at T={T:g}{unit}{scale}"


def _names(class_names: Sequence[str] | None, n: int) -> list[str]:
    return [escape_label(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]


# ---- distribution of divergence -------------------------------------------------------------------------------
def divergence_histogram(
    values: Any, *, measure: str = "kl", T: float = 1.0, t2_scale: bool = False, selected: int | None = None, nbins: int = 60,
    unit: str = "samples", sample_ids: Any | None = None, alpha: float | None = None, log_x: bool | None = None,
) -> go.Figure:
    """Histogram of per-sample (or per-token) divergence [N], its mean, median and the selected value named in the
    legend (close values would print labels over each other).

    Clicking a bar selects its samples (plotly passes ``pointNumbers``, positions among the finite values);
    ``selected`` marks the value at that position, labelled with ``sample_ids[selected]`` when ``values`` are a subset
    of a run's samples (default: the position). ``unit`` names what is counted (``"samples"``, or ``"tokens"``).
    ``log_x``: bin by log₁₀ (None: when the values are heavy-tailed, `scales.heavy_tailed`); the axis says so.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = v[np.isfinite(v)]
    log = scales.heavy_tailed(finite, nbins) if log_x is None else bool(log_x) and len(finite) and finite.min() >= 0
    scale = scales.LogScale(finite) if log else None
    drawn = scale(finite) if scale is not None else finite
    fig = go.Figure(
        go.Histogram(
            x=drawn, nbinsx=nbins, marker={"color": theme.PAIR_FILL, "line": {"color": "white", "width": 0.5}},
            name=unit, showlegend=False,
            hovertemplate=("log₁₀ value %{x}" if scale is not None else "%{x}") + "<br>%{y} " + unit + "<extra></extra>",
        )
    )

    def place(x: float) -> float:  # a value's position on the drawn axis
        return float(scale(x)) if scale is not None else float(x)

    items = []
    if len(finite):
        mean, median = float(finite.mean()), float(np.median(finite))
        items += [(place(mean), f"mean {mean:.3g}", {"color": theme.PAIR_INK, "dash": "dash", "width": 1.5}),
                  (place(median), f"median {median:.3g}", {"color": theme.PAIR_INK, "dash": "dot", "width": 1.5})]
    if selected is not None and 0 <= selected < len(v) and np.isfinite(v[selected]):
        name = selected if sample_ids is None else int(sample_ids[selected])
        items.append((place(v[selected]), f"sample {name}: {v[selected]:.3g}", {"color": theme.SELECTED, "width": 3}))
    theme.marks(fig, items)
    title = measure_label(measure, T, t2_scale, alpha=alpha)
    if scale is not None:
        fig.update_xaxes(**scale.ticks(float(drawn.min()), float(drawn.max())))
        zeros = int((finite <= 0).sum())
        title += f", log scale ({zeros:,} zeros drawn at {scale.floor:.2g})" if zeros else ", log scale"
    fig.update_xaxes(title=title)
    fig.update_yaxes(title=unit)
    fig.update_layout(bargap=0.02, clickmode="event+select")
    return theme.style(fig, f"How far the student is from the teacher ({len(finite):,} values)")


# ---- one sample ---------------------------------------------------------------------------------------------------
def sample_drilldown(
    z_t: Any,
    z_s: Any,
    *,
    T: float = 1.0,
    target: int | None = None,
    class_names: Sequence[str] | None = None,
    thumbnail: np.ndarray | None = None,
    context: str | None = None,
    sample_index: int | None = None,
    max_classes: int = 20,
    fixed_axis: bool = True,
) -> go.Figure:
    """Teacher vs student probabilities at temperature T for one sample (logits [C] each), on a probability axis
    fixed at [0, 1] (``fixed_axis``), so that raising T shows the distributions flatten instead of rescaling them.

    The target class comes first and is outlined; the non-target classes are shaded, with their total mass
    (the "dark knowledge") written on top. Above ``max_classes`` classes, the classes with the highest
    probability under either model are shown. An image sample shows its thumbnail; text shows its context.
    """
    row_t, row_s = np.asarray(z_t, dtype=np.float64)[None], np.asarray(z_s, dtype=np.float64)[None]
    p_t, p_s = lm.probabilities(row_t, T)[0], lm.probabilities(row_s, T)[0]
    n = len(p_t)
    names = _names(class_names, n)
    order = np.argsort(-np.maximum(p_t, p_s), kind="stable")
    if target is not None:
        order = np.concatenate([[target], order[order != target]])
    order = order[:max_classes]
    labels = [names[i] for i in order]
    has_image = thumbnail is not None
    fig = make_subplots(rows=1, cols=2 if has_image else 1, column_widths=[0.22, 0.78] if has_image else None,
                        horizontal_spacing=0.1)  # room for the probability axis title beside the image
    col = 2 if has_image else 1
    if has_image:
        image = np.asarray(thumbnail)
        fig.add_trace(go.Heatmap(z=image[::-1] if image.ndim == 2 else None, colorscale="Greys", showscale=False,
                                 hoverinfo="skip", name="input image") if image.ndim == 2 else go.Image(z=image), row=1, col=1)
        fig.update_xaxes(visible=False, row=1, col=1)
        fig.update_yaxes(visible=False, scaleanchor="x", row=1, col=1)
    for role, probs in (("teacher", p_t), ("student", p_s)):
        fig.add_trace(
            go.Bar(x=labels, y=probs[order], name=role, marker={"color": theme.ROLE_COLOURS[role]},
                   hovertemplate="class %{x}<br>" + role + " p = %{y:.4f}<extra></extra>"),
            row=1, col=col,
        )
    xref = "x2" if has_image else "x"
    if target is not None:
        rest_t, rest_s = 1 - p_t[target], 1 - p_s[target]
        yref = f"{xref.replace('x', 'y')} domain"  # add_shape, not add_vrect: a fifth of the cost (no subplot scan)
        fig.add_shape(type="rect", x0=0.5, x1=len(order) - 0.5, xref=xref, y0=0, y1=1, yref=yref, fillcolor=theme.SHADE,
                      line_width=0, layer="below")
        fig.add_shape(type="rect", x0=-0.5, x1=0.5, xref=xref, y0=0, y1=1, yref=yref,
                      line={"color": theme.HIGHLIGHT, "width": 1.5}, fillcolor=theme.TRANSPARENT)
        # inside the plot's top right: the classes are ordered by probability, so the last bars are the lowest
        fig.add_annotation(x=len(order) - 0.5, xref=xref, xanchor="right", y=0.98, yref=yref, yanchor="top", showarrow=False, align="right",
                           text=f"non-target mass (dark knowledge)<br>teacher {rest_t:.1%} · student {rest_s:.1%}",
                           font={"color": theme.NEUTRAL}, bgcolor=theme.rgba(theme.CARD, 0.8))
        # above the target's frame, not across its top edge; left-aligned with it, since it is wider than one bar
        fig.add_annotation(x=-0.5, xref=xref, xanchor="left", y=1, yref="paper", yanchor="bottom", yshift=2, showarrow=False,
                           text="target", font={"color": theme.HIGHLIGHT})
    fig.update_xaxes(title="class", type="category", row=1, col=col)
    fig.update_yaxes(title=f"probability at T={T:g}", rangemode="tozero", row=1, col=col,
                     **({"range": [0, 1.0], "dtick": 0.25} if fixed_axis else {}))
    fig.update_layout(barmode="group", bargap=0.25)
    kl_value = float(lm.kl(row_t, row_s, T)[0])
    head = f"Sample {sample_index}" if sample_index is not None else "Sample"
    title = f"{head}: teacher vs student at T={T:g} (KL(p_t‖p_s) = {kl_value:.3g} nats)"
    if context:
        title += theme.subtitle(escape_label(context))
    return theme.style(fig, title, height=400)


# ---- agreement ------------------------------------------------------------------------------------------------------
def agreement_matrix(matrix: Any, class_names: Sequence[str] | None = None) -> go.Figure:
    """Heatmap of teacher-argmax (rows) × student-argmax (columns) counts [C, C]; the diagonal is agreement."""
    counts = np.asarray(matrix)
    names = _names(class_names, len(counts))
    total = counts.sum()
    fig = go.Figure(
        go.Heatmap(z=counts, x=names, y=names, colorscale=theme.SEQUENTIAL_SCALE, **theme.from_zero(counts),
                   colorbar={"title": "samples"},
                   text=np.where(counts > 0, counts.astype(str), ""), texttemplate="%{text}" if len(counts) <= 20 else None,
                   hovertemplate="teacher says %{y}, student says %{x}: %{z} samples<extra></extra>")
    )
    fig.update_xaxes(title="student's prediction", type="category", side="bottom", showgrid=False)
    fig.update_yaxes(title="teacher's prediction", type="category", autorange="reversed", scaleanchor="x", showgrid=False)
    agree = np.trace(counts) / total if total else float("nan")
    return theme.style(fig, f"Where the student agrees with the teacher (top-1 agreement {agree:.1%})", height=480, legend=False)


def quadrant_chart(quadrants: Mapping[str, int]) -> go.Figure:
    """2×2 counts of teacher right/wrong × student right/wrong (from `metrics.classwise.correctness_quadrants`)."""
    total = max(1, sum(quadrants.values()))
    grid = np.array([[quadrants[QUADRANTS[0]], quadrants[QUADRANTS[1]]], [quadrants[QUADRANTS[2]], quadrants[QUADRANTS[3]]]])
    text = [[f"{c:,}<br>{c / total:.1%}" for c in row] for row in grid]
    fig = go.Figure(
        go.Heatmap(z=grid, x=["student right", "student wrong"], y=["teacher right", "teacher wrong"], text=text,
                   texttemplate="%{text}", textfont={"size": 16}, colorscale=theme.SEQUENTIAL_SCALE, showscale=False,
                   **theme.from_zero(grid),
                   hovertemplate="%{y}, %{x}: %{z} samples<extra></extra>")
    )
    fig.update_yaxes(autorange="reversed")
    return theme.style(fig, "Right and wrong: teacher × student", height=340, legend=False)


# ---- calibration ----------------------------------------------------------------------------------------------------
def reliability_diagram(teacher: Mapping[str, Any], student: Mapping[str, Any], *, T: float = 1.0) -> go.Figure:
    """Both models' reliability curves on one chart, from `metrics.calibration.ece` results; perfect = diagonal."""
    fig = make_subplots(rows=2, cols=1, row_heights=[0.75, 0.25], shared_xaxes=True, vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"color": theme.MUTED, "dash": "dash"},
                             name="perfectly calibrated", hoverinfo="skip"), row=1, col=1)
    for role, result in (("teacher", teacher), ("student", student)):
        filled = np.asarray(result["count"]) > 0
        centres = (np.asarray(result["lower"]) + np.asarray(result["upper"])) / 2
        colour = theme.ROLE_COLOURS[role]
        fig.add_trace(go.Scatter(
            x=np.asarray(result["confidence"])[filled], y=np.asarray(result["accuracy"])[filled], mode="lines+markers",
            name=f"{role} (ECE {result['ece']:.3f}, MCE {result['mce']:.3f})", line={"color": colour, "width": 2.5},
            marker={"size": 7}, customdata=np.asarray(result["count"])[filled],
            hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>%{customdata} samples<extra>" + role + "</extra>",
        ), row=1, col=1)
        fig.add_trace(go.Bar(x=centres, y=result["count"], marker={"color": colour}, opacity=0.7, showlegend=False,
                             width=1 / len(centres) * 0.45, offset=(-1 / len(centres) * 0.45) if role == "teacher" else 0,
                             hovertemplate="%{y} samples<extra>" + role + "</extra>"), row=2, col=1)
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_xaxes(range=[0, 1], title=f"confidence (max probability at T={T:g}), 15 bins (lo, hi]", row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], title="accuracy", row=1, col=1)
    fig.update_yaxes(title="samples", type="log", dtick=1, row=2, col=1)
    theme.style(fig, f"Calibration at T={T:g}: teacher vs student", height=560)
    # the legend gets a band of its own under the title: inside the plot any corner can hold a bin, and at the
    # default place its three long entries ran into the title
    return fig.update_layout(margin={"t": 120}, legend={"orientation": "h", "xanchor": "left", "x": 0, "yanchor": "bottom",
                                                        "y": 1.03})


# ---- class level ----------------------------------------------------------------------------------------------------
def per_class_divergence(per_class: Mapping[str, Any], class_names: Sequence[str] | None = None, *, T: float = 1.0) -> go.Figure:
    """Heatmap of per-class mean divergence: rows are measures, columns true classes. Colour is scaled per row
    (measures have different ranges); the numbers are the raw means."""
    measures = list(per_class)
    values = np.array([np.asarray(per_class[m], dtype=np.float64) for m in measures])
    names = _names(class_names, values.shape[1])
    lo, hi = np.nanmin(values, axis=1, keepdims=True), np.nanmax(values, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(hi > lo, (values - lo) / (hi - lo), 0.0)
    text = [[f"{v:.3g}" for v in row] for row in values]
    fig = go.Figure(go.Heatmap(
        z=scaled, x=names, y=[lm.MEASURES.get(m, m) for m in measures], text=text,
        texttemplate="%{text}" if values.shape[1] <= 20 else None, colorscale=theme.DIVERGENCE_SCALE,
        colorbar={"title": "within-row<br>rank", "tickvals": [0, 1], "ticktext": ["lowest", "highest"]},
        hovertemplate="class %{x}<br>%{y}: %{text}<extra></extra>",
    ))
    fig.update_xaxes(title="true class", type="category")
    fig.update_yaxes(autorange="reversed")
    return theme.style(fig, f"Which classes the student has not learned from the teacher (mean per class, T={T:g})",
                       height=140 + 45 * len(measures), legend=False)


def class_mean_logit_difference(diff: Any, class_names: Sequence[str] | None = None) -> go.Figure:
    """Heatmap [C, C]: row = true class, column = logit; mean teacher logit − mean student logit, centred on 0."""
    d = np.asarray(diff, dtype=np.float64)
    names = _names(class_names, len(d))
    bound = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 1.0
    fig = go.Figure(go.Heatmap(
        z=d, x=names, y=names, zmid=0, zmin=-bound, zmax=bound, colorscale=theme.DIFFERENCE_SCALE,
        colorbar={"title": "teacher −<br>student"},
        text=np.round(d, 2), texttemplate="%{text}" if len(d) <= 12 else None,
        hovertemplate="true class %{y}, logit %{x}<br>teacher − student = %{z:.3f}<extra></extra>",
    ))
    fig.update_xaxes(title="logit of class", type="category")
    fig.update_yaxes(title="true class", type="category", autorange="reversed", scaleanchor="x", showgrid=False)
    return theme.style(fig, "Class-mean logits: teacher − student (blue: teacher higher, orange: student higher)",
                       height=520, legend=False)


# ---- language models --------------------------------------------------------------------------------------------------
ROW_CHARS = 96  # monospace characters a strip row holds (about 700 px at 12 px: a notebook or a saved PNG)


def token_strip(
    tokens: Sequence[str],
    values: Any,
    *,
    measure: str = "kl",
    T: float = 1.0,
    teacher_top: tuple[Any, ...] | None = None,
    student_top: tuple[Any, ...] | None = None,
    vocab: Sequence[str] | None = None,
    student_vocab: Sequence[str] | None = None,
    per_row: int | None = None,
    top: int = 5,
    unit: str = "token",
    continuation: int | None = None,
) -> go.Figure:
    """Per-token divergence coloured behind the text, wrapped into rows so thousands of tokens stay readable.

    ``tokens`` [L] strings, ``values`` [L]; ``teacher_top`` / ``student_top`` = (ids [L, k], probs [L, k]) give the
    hover's top-``top`` next tokens of each model (``vocab`` maps ids to strings; ``student_vocab`` the student's
    ids where the two models have their own tokenizers), and an optional third item, the
    mass outside the top-k [L], is shown after them. Tokens are escaped text; ``unit`` names them ("span" in a run
    of two tokenizations). ``per_row`` (default: as many as fit
    `ROW_CHARS` characters of the tokens' usual length, 6 to 48) sets the cells a row; a token longer than its
    cell is cut with "…" in the cell and shown whole in the hover. ``continuation``: in a
    generated text, the index of its first new token (those before are the prompt); a bar marks where it starts and
    the hover says which part each token is in.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    length = len(v)
    if len(tokens) != length:
        raise ValueError(f"{len(tokens)} tokens but {length} values")
    if per_row is None:
        usual = float(np.percentile([len(t) for t in tokens], 90)) if length else 1.0
        per_row = int(np.clip(ROW_CHARS // (usual + 1), 6, 48))
    fits = max(2, ROW_CHARS // per_row - 1)  # characters a cell holds
    rows = max(1, -(-length // per_row))
    grid = np.full((rows, per_row), np.nan)
    grid.flat[:length] = v
    labels = np.full((rows, per_row), "", dtype=object)
    hover = np.full((rows, per_row), "", dtype=object)

    def top_text(pair: tuple[Any, ...] | None, i: int, names: Sequence[str] | None) -> str:
        if pair is None:
            return ""
        ids, probs = np.asarray(pair[0])[i][:top], np.asarray(pair[1])[i][:top]
        lines = [f"&nbsp;&nbsp;{escape_label(display_token(names[j] if names is not None and 0 <= j < len(names) else f'#{j}'))} {p:.1%}"
                 for j, p in zip(ids, probs, strict=True) if j >= 0]
        if len(pair) > 2 and pair[2] is not None:  # the mass outside the stored top-k, which the list above hides
            lines.append(f"&nbsp;&nbsp;<i>outside top-{np.shape(pair[0])[-1]}</i> {float(np.asarray(pair[2])[i]):.1%}")
        return "<br>".join(lines)

    for i in range(length):
        r, c = divmod(i, per_row)
        shown = display_token(tokens[i])
        whole = escape_label(shown)
        labels[r, c] = whole if len(shown) <= fits else escape_label(shown[: fits - 1] + "…")
        part = "" if continuation is None else (" (prompt)" if i < continuation else " (continuation)")
        text = f"{unit} {i}{part}: <b>{whole}</b><br>{lm.MEASURES[measure]} = {v[i]:.4f}"
        next_ = "next piece" if unit == "span" else "next"
        if teacher_top is not None:
            text += f"<br>teacher {next_}:<br>{top_text(teacher_top, i, vocab)}"
        if student_top is not None:
            text += f"<br>student {next_}:<br>{top_text(student_top, i, student_vocab if student_vocab is not None else vocab)}"
        hover[r, c] = text
    finite = v[np.isfinite(v)]
    fig = go.Figure(go.Heatmap(
        z=grid, text=labels, customdata=hover, texttemplate="%{text}", textfont={"family": "monospace", "size": 12},
        colorscale=theme.DIVERGENCE_SCALE, zmin=0, zmax=float(np.percentile(finite, 99)) if len(finite) else 1,
        colorbar={"title": "nats"}, hovertemplate="%{customdata}<extra></extra>", xgap=1, ygap=3,
    ))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    # no axes, so little bottom margin; at least 180 px, as plotly.js cannot scale a plot area of a few pixels
    title = f"{lm.MEASURES[measure]} per {unit} at T={T:g} ({length:,} {unit}s, darker = further apart)"
    if continuation is not None and 0 < continuation < length:  # a bar at the left edge of the first new token
        r, c = divmod(continuation, per_row)
        fig.add_shape(type="line", x0=c - 0.5, x1=c - 0.5, y0=r - 0.5, y1=r + 0.5, line={"color": theme.INK, "width": 4})
        title += theme.subtitle(f"{unit}s 0–{continuation - 1} are the prompt; the bar marks where the continuation starts")
    fig = theme.style(fig, title, height=max(180, 100 + 28 * rows) + (20 if continuation else 0), legend=False)
    return fig.update_layout(margin={"b": 20})


def sample_detail(data: LogitData, index: int, *, measure: str = "kl", T: float = 1.0,
                  continuation: int | None = None) -> go.Figure:
    """The drill-down of one sample of a run: `sample_drilldown` for classification, `token_strip` for language models
    (``continuation``: where a generated text's new tokens start, among its real tokens)."""
    if data.task == "tokens":
        stats = data.token_stats
        tokens = data.tokens[index] if data.tokens else [str(t) for t in range(stats["kl"].shape[1])]
        mask = stats.get("mask")
        real = np.asarray(mask[index], dtype=bool) if mask is not None else np.ones(len(tokens), dtype=bool)
        tops = [_top_of(stats, role, index, real) for role in ("teacher", "student")]
        return token_strip([t for t, keep in zip(tokens, real, strict=True) if keep], np.asarray(stats[measure][index])[real],
                           measure=measure, vocab=data.vocab("teacher"), student_vocab=data.vocab("student"),
                           teacher_top=tops[0], student_top=tops[1],
                           unit=data.token_unit(), continuation=continuation)
    z_t, z_s = data.require_logits()
    target = int(data.labels[index]) if data.labels is not None else None
    return sample_drilldown(z_t[index], z_s[index], T=T, target=target, class_names=data.class_names,
                            thumbnail=data.thumbnail(index), sample_index=index)


def _top_of(stats: Mapping[str, Any], role: str, index: int, real: np.ndarray) -> tuple[Any, Any, Any] | None:
    """(top-k ids [T, k], probabilities [T, k], mass outside the top-k [T] or None in runs that predate it) of a
    sample's ``real`` tokens; None for runs without top-k (two-tokenizer runs made before their spans kept one)."""
    if f"{role}_topk_ids" not in stats:
        return None
    tail = stats.get(f"{role}_tail_mass")
    return (np.asarray(stats[f"{role}_topk_ids"][index])[real], np.asarray(stats[f"{role}_topk_probs"][index])[real],
            np.asarray(tail[index])[real] if tail is not None else None)


# ---- summary ----------------------------------------------------------------------------------------------------------
def summary_card(summary: Mapping[str, Any]) -> go.Figure:
    """A table of the headline numbers from `metrics.summary.logit_summary` (or a token-run equivalent)."""

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{x:.1%}"

    def num(x: float | None) -> str:
        return "—" if x is None or not np.isfinite(x) else f"{x:.4f}"

    T = summary.get("T", 1.0)
    rows = [
        ("accuracy", pct(summary.get("teacher_accuracy")), pct(summary.get("student_accuracy")), ""),
        ("top-1 agreement", "", "", pct(summary.get("top1_agreement"))),
        ("mean KL(p_t‖p_s), T=1", "", "", num(summary.get("kl_T1"))),
    ]
    if float(T) != 1.0:  # at T = 1 these would repeat the row above
        rows.append((f"mean KL(p_t‖p_s), T={T:g}", "", "", num(summary.get("kl_T"))))
        if summary.get("kl_T_scaled") is not None:  # language-model runs: statistics at T = 1 only
            rows.append(("  × T² (KD-loss scale)", "", "", num(summary.get("kl_T_scaled"))))
    rows.append((f"ECE, T={T:g} (15 bins)", num(summary.get("teacher_ece")), num(summary.get("student_ece")), ""))
    if summary.get("teacher_perplexity") is not None:
        rows.insert(1, ("perplexity", num(summary["teacher_perplexity"]), num(summary.get("student_perplexity")), ""))
    if summary.get("student_padding_mass") is not None:  # a padded output layer: should be about 0
        rows.append(("mass on padding ids (≈ 0, else a bug)", num(summary.get("teacher_padding_mass")),
                     num(summary["student_padding_mass"]), ""))
    rows = [row for row in rows if any(cell not in ("", "—") for cell in row[1:])]  # a row with no number says nothing
    fig = go.Figure(go.Table(
        columnwidth=[2.5, 1, 1, 1],
        header={"values": ["", "<b>teacher</b>", "<b>student</b>", "<b>pair</b>"], "fill_color": "white",
                "align": ["left", "right", "right", "right"], "line_color": "white",
                "font": {"color": [theme.NEUTRAL, theme.TEACHER, theme.STUDENT, theme.HIGHLIGHT], "size": 14}},
        cells={"values": list(zip(*rows, strict=True)), "align": ["left", "right", "right", "right"], "fill_color": "white",
               "line_color": theme.RULE, "height": 30, "font": {"size": 14}},
    ))
    n = summary.get("n")
    fig = theme.style(fig, f"Summary ({n:,} samples)" if n else "Summary", height=120 + 32 * len(rows), legend=False)
    return fig.update_layout(margin={"l": 20, "r": 20, "t": 60, "b": 10})
