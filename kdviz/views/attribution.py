"""Views of attribution agreement: does the student look where the teacher looks? Each function takes an
`AttributionData` and returns a go.Figure.

Teacher and student maps are each scaled to their own largest |value| before they are drawn or subtracted, because
each model's attributions live on the scale of its own logits; the agreement measures are scale-free for the same
reason. Numbers come from `kdviz.metrics.attribution_agreement`; colours from `kdviz.views.theme`.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdviz.errors import MissingDataError
from kdviz.metrics import attribution_agreement as ag
from kdviz.readers.attribution import AttributionData
from kdviz.text import display_token, escape_label
from kdviz.views import theme
from kdviz.views.overlay import overlay_pair

METHOD_LABELS = {"saliency": "Saliency", "integrated_gradients": "Integrated gradients", "input_x_gradient": "Input × gradient",
                 "grad_cam": "Grad-CAM", "attention_x_gradient": "Attention × gradient"}
TARGET_LABELS = {"teacher_pred": "the teacher's predicted class", "label": "the true class"}
# What two unrelated maps score: 0 for correlations, k/P / (2 − k/P) ≈ 0.05 for the top-10% overlap of many positions.
CHANCE = {"spearman": 0.0, "cosine": 0.0, "topk_iou": 0.1 / (2 - 0.1)}
RANGES = {"spearman": (-1.0, 1.0), "cosine": (-1.0, 1.0), "topk_iou": (0.0, 1.0)}


def _finish(fig: go.Figure, title: str, subtitle: str, *, height: int, width: int | None = None, legend: bool = False,
            top: int = 105) -> go.Figure:
    """`theme.style` with a grey subtitle under the title (which may hold a second line) and room above the plots."""
    theme.style(fig, title + theme.subtitle(subtitle), height=height,
                width=width, legend=legend)
    return fig.update_layout(margin={"t": top})


def _selection(data: AttributionData, method: str | None, target: str | None) -> tuple[str, str]:
    default_method, default_target = data.default_selection()
    return method or default_method, target or default_target


def target_label(target: str) -> str:
    return TARGET_LABELS.get(target, f"class {target.removeprefix('class_')}")


def class_label(data: AttributionData, c: int) -> str:
    """A class name or token made safe and visible (escaped; whitespace tokens shown as ␣, ⏎)."""
    return escape_label(display_token(data.class_name(c)))


def _scaled(m: np.ndarray) -> np.ndarray:
    """A map divided by its largest |value| (all-zero maps stay zero)."""
    top = float(np.abs(m).max()) if m.size else 0.0
    return m / top if top > 0 else m


# ---- one sample ----------------------------------------------------------------------------------------------------
def attribution_pair(data: AttributionData, sample: int, method: str | None = None, target: str | None = None) -> go.Figure:
    """Teacher | student | teacher − student attribution for one sample: over the input image, or for text as tokens
    coloured by attribution (escaped text, wrapped into lines)."""
    method, target = _selection(data, method, target)
    stored = data.stored(method, target)
    row = data.row_of(method, target, sample)
    t_map, s_map = (_scaled(m) for m in data.maps(method, target, sample))
    signed = bool(stored.attrs.get("signed"))
    explained = int(stored.classes[row])
    parts = [f"sample {sample}", f"explaining «{class_label(data, explained)}» ({target_label(target)})"]
    z_t, z_s = data.logits("teacher"), data.logits("student")
    if z_t is not None and z_s is not None:
        parts.append(f"teacher says «{class_label(data, int(z_t[sample].argmax()))}», "
                     f"student says «{class_label(data, int(z_s[sample].argmax()))}»")
    tokens = data.tokens(sample)
    positions = stored.positions  # read from the run once
    if positions is not None:
        position = int(positions[row])
        token = f" «{escape_label(display_token(tokens[position]))}»" if tokens is not None else ""
        parts.append(f"the prediction at token {position}{token}")
    scores = " · ".join(f"{label} {data.agreement(method, target, metric)[row]:.2f}" for metric, label in
                        (("spearman", "Spearman"), ("cosine", "cosine"), ("topk_iou", "top-10% IoU")))
    subtitle = " · ".join(parts) + "<br>" + scores + " · each map scaled to its largest |value|"
    title = f"{METHOD_LABELS.get(method, method)}: where each model finds the evidence"
    image = data.image(sample)
    if stored.attrs.get("map_kind") == "image" and image is not None:
        fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07, subplot_titles=("teacher", "student", "teacher − student"))
        scale_title = "evidence<br>for (+) /<br>against (−)" if signed else "importance"
        overlay_pair(fig, image, t_map, s_map, row=1, what=METHOD_LABELS.get(method, method), signed=signed,
                     colorbar={"title": scale_title, "x": 0.635, "thickness": 12},
                     difference_colorbar={"title": "teacher −<br>student", "thickness": 12})
        return _finish(fig, title, subtitle, height=500, top=140)
    mask = data.mask(method, target, np.array([row]))
    n_real = int(mask[0].sum()) if mask is not None else len(t_map)
    tokens = tokens or [str(i) for i in range(len(t_map))]
    short = max((len(t) for t in tokens[:n_real]), default=0) <= 3  # characters, digits: more per line
    fig = token_attribution_strip(tokens[:n_real], t_map[:n_real], s_map[:n_real], signed=signed, per_row=32 if short else 16)
    return _finish(fig, title, subtitle, height=int(fig.layout.height), top=125).update_layout(
        margin={"r": COLOUR_BARS_MARGIN})


COLOUR_BARS_MARGIN = 220  # px right of the strip: two colour bars with two-line titles side by side


def token_attribution_strip(tokens: list[str], teacher: np.ndarray, student: np.ndarray, *, signed: bool, per_row: int = 16) -> go.Figure:
    """Tokens [L] coloured by the teacher's and the student's attribution [L] (each scaled to ±1) and their difference:
    three rows per line of ``per_row`` tokens, so long inputs wrap instead of shrinking."""
    length = len(tokens)
    lines = max(1, math.ceil(length / per_row))
    height = lines * 4
    both = np.full((height, per_row), np.nan)
    diff = np.full((height, per_row), np.nan)
    text = np.full((height, per_row), "", dtype=object)  # the two model rows' labels (drawn by the first heatmap)
    diff_text = np.full((height, per_row), "", dtype=object)  # the difference rows' (the second): never both at once
    hover = np.full((height, per_row), "", dtype=object)
    for i in range(length):
        line, col = divmod(i, per_row)
        label = escape_label(display_token(tokens[i]))
        values = (teacher[i], student[i], teacher[i] - student[i])
        for offset, (who, value) in enumerate(zip(("teacher", "student", "teacher − student"), values, strict=True)):
            r = line * 4 + offset
            (diff if offset == 2 else both)[r, col] = value
            (diff_text if offset == 2 else text)[r, col] = label
            hover[r, col] = f"token {i}: <b>{label}</b><br>{who}: {value:+.3f}"
    low = -1.0 if signed else 0.0
    fig = go.Figure([
        go.Heatmap(z=both, text=text, customdata=hover, texttemplate="%{text}", textfont={"family": "monospace", "size": 12},
                   colorscale=theme.SIGNED_SCALE if signed else theme.SEQUENTIAL_SCALE, zmin=low, zmax=1.0, xgap=1, ygap=1,
                   colorbar={"title": "attribution<br>(scaled)", "thickness": 12, "x": 1.0, "xanchor": "left", "len": 1.0,
                             "nticks": 5},
                   hovertemplate="%{customdata}<extra></extra>"),
        go.Heatmap(z=diff, text=diff_text, customdata=hover, texttemplate="%{text}", textfont={"family": "monospace", "size": 12},
                   colorscale=theme.DIFFERENCE_SCALE, zmin=-2.0 if signed else -1.0, zmax=2.0 if signed else 1.0, xgap=1, ygap=1,
                   colorbar={"title": "teacher −<br>student", "thickness": 12, "xref": "container", "x": 0.97,
                             "xanchor": "right", "len": 1.0, "nticks": 5},  # at the figure's edge: never on the first bar
                   hovertemplate="%{customdata}<extra></extra>"),
    ])
    ticks = [line * 4 + offset for line in range(lines) for offset in range(3)]
    fig.update_yaxes(autorange="reversed", tickvals=ticks, ticktext=["teacher", "student", "t − s"] * lines, showgrid=False,
                     zeroline=False)
    fig.update_xaxes(visible=False)
    return fig.update_layout(height=200 + 96 * lines, margin={"r": COLOUR_BARS_MARGIN})  # a styled caller keeps it


# ---- over the data set ---------------------------------------------------------------------------------------------
def _defined(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values)


def agreement_histogram(data: AttributionData, method: str | None = None, target: str | None = None, metric: str = "spearman",
                        selected: int | None = None) -> go.Figure:
    """Per-sample agreement of the two models' maps. Clicking a bar selects its samples: plotly's ``pointNumbers``
    index the samples of `defined_samples` (those whose agreement is defined)."""
    method, target = _selection(data, method, target)
    values = data.agreement(method, target, metric)
    defined = values[_defined(values)]
    lo, hi = RANGES[metric]
    fig = go.Figure(go.Histogram(x=defined, xbins={"start": lo, "end": hi + 1e-9, "size": (hi - lo) / 40},
                                 marker={"color": theme.PAIR_FILL, "line": {"color": "white", "width": 0.5}},
                                 showlegend=False, hovertemplate="agreement %{x}<br>%{y} samples<extra></extra>"))
    items = [(CHANCE[metric], "unrelated maps", {"color": theme.NEUTRAL, "dash": "dot", "width": 1.5})]
    if len(defined):
        mean = float(defined.mean())
        items.append((mean, f"mean {mean:.2f}", {"color": theme.PAIR_INK, "dash": "dash", "width": 1.5}))
    if selected is not None:
        row = data.row_of(method, target, selected)
        if np.isfinite(values[row]):
            items.append((float(values[row]), f"sample {selected}: {values[row]:.2f}", {"color": theme.SELECTED, "width": 3}))
    theme.marks(fig, items)
    fig.update_xaxes(title=f"{ag.AGREEMENT_METRICS[metric]} of teacher and student maps", range=[lo - 0.02, hi + 0.02])
    fig.update_yaxes(title="samples")
    fig.update_layout(bargap=0.02, clickmode="event+select")
    missing = len(values) - len(defined)
    note = (f"{len(defined):,} samples · {METHOD_LABELS.get(method, method)}, explaining {target_label(target)}<br>"
            "1 = same ranking / direction / top set")
    if missing:
        note += f" · {missing} undefined (constant map) not shown"
    return _finish(fig, "Does the student look where the teacher looks?", note, height=440, legend=True, top=122)


def defined_samples(data: AttributionData, method: str, target: str, metric: str) -> np.ndarray:
    """Run sample indices of the points a histogram of (method, target, metric) draws, in its order."""
    values = data.agreement(method, target, metric)
    return data.stored(method, target).index[_defined(values)]


def agreement_scatter(data: AttributionData, method: str | None = None, target: str | None = None, metric: str = "spearman",
                      threshold: float = ag.DEFAULT_THRESHOLD, selected: int | None = None) -> go.Figure:
    """Same answer? × same reason? per sample: attribution agreement (x) against the student's margin for the teacher's
    class (y, > 0 exactly when both give the same answer), coloured by the explained class, quadrants labelled."""
    method, target = _selection(data, method, target)
    table = data.fidelity(method, target, metric, threshold)
    stored = data.stored(method, target)
    keep = _defined(table["agreement"])
    index, classes = stored.index[keep], stored.classes[keep]
    x, y = table["agreement"][keep], table["margin"][keep]
    teacher_pred, student_pred = table["teacher_pred"][keep], table["student_pred"][keep]
    fig = go.Figure()
    for c in np.unique(classes):
        members = classes == c
        hover = [f"sample {i}<br>teacher «{class_label(data, int(tp))}», student «{class_label(data, int(sp))}»"
                 for i, tp, sp in zip(index[members], teacher_pred[members], student_pred[members], strict=True)]
        fig.add_trace(go.Scattergl(
            x=x[members], y=y[members], mode="markers", name=class_label(data, int(c)), customdata=index[members],
            text=hover, marker={"color": theme.class_colour(int(c)), "size": 7, "opacity": 0.75, "line": {"width": 0}},
            hovertemplate="%{text}<br>agreement %{x:.3f}<br>student margin %{y:.2f}<extra></extra>",
        ))
    if selected is not None and selected in set(index.tolist()):
        i = int(np.flatnonzero(index == selected)[0])
        fig.add_trace(go.Scatter(x=[x[i]], y=[y[i]], mode="markers", name=f"sample {selected}", hoverinfo="skip",
                                 marker={"symbol": "circle-open", "size": 16, "color": theme.HIGHLIGHT, "line": {"width": 2.5}}))
    theme.vline(fig, threshold, {"color": theme.NEUTRAL, "dash": "dash", "width": 1})
    theme.hline(fig, 0.0, {"color": theme.NEUTRAL, "dash": "dash", "width": 1})
    counts = ag.quadrant_counts({k: v[keep] for k, v in table.items()})
    lo, hi = RANGES[metric]
    corners = {ag.QUADRANTS[0]: (1, 1), ag.QUADRANTS[1]: (0, 1), ag.QUADRANTS[2]: (1, 0), ag.QUADRANTS[3]: (0, 0)}
    for name, (right, top) in corners.items():
        info = counts[name]
        accuracy = "" if info["student_accuracy"] is None else f", student right {info['student_accuracy']:.0%}"
        fig.add_annotation(x=hi if right else lo, y=1 if top else 0, xref="x", yref="y domain", showarrow=False,
                           xanchor="right" if right else "left", yanchor="top" if top else "bottom",
                           text=f"<b>{name}</b><br>{info['count']} sample{'' if info['count'] == 1 else 's'}{accuracy}",
                           align="right" if right else "left",
                           font={"size": 11, "color": theme.HIGHLIGHT}, bgcolor=theme.rgba(theme.CARD, 0.8))
    fig.update_xaxes(title=f"{ag.AGREEMENT_METRICS[metric]} of the two {METHOD_LABELS.get(method, method)} maps",
                     range=[lo - 0.03, hi + 0.03])
    fig.update_yaxes(title="student's margin for the teacher's class<br>(log-prob gap to its runner-up)")
    subtitle = (f"above 0: the student gives the teacher's answer<br>right of {threshold:g}: its evidence agrees "
                f"({target_label(target)} explained)")
    missing = int((~keep).sum())
    if missing:
        subtitle += f" · {missing} undefined not shown"
    _finish(fig, "Same answer, and for the same reason?", subtitle, height=560, legend=True, top=142)
    fig.update_layout(margin={"l": 96})  # room for the two-line y title
    return fig.update_layout(legend={"title": {"text": "class"}})


def class_agreement_bars(data: AttributionData, method: str | None = None, target: str | None = None,
                         metric: str = "spearman") -> go.Figure:
    """Mean agreement per explained class with 95% intervals (±1.96 standard errors) and the number of samples."""
    method, target = _selection(data, method, target)
    values = data.agreement(method, target, metric)
    stored = data.stored(method, target)
    summary = ag.per_class_summary(values, stored.classes, data.n_classes(method, target))
    present = np.flatnonzero(summary["count"] > 0)
    counts = summary["count"][present]
    names = [f"{class_label(data, int(c))}<br><span style='font-size:11px'>n={n}</span>" for c, n in zip(present, counts, strict=True)]
    fig = go.Figure(go.Bar(  # n= under each class, on the axis: inside a bar the interval would cross it
        x=names, y=summary["mean"][present], marker={"color": theme.PAIR_FILL}, showlegend=False,
        error_y={"type": "data", "array": 1.96 * np.nan_to_num(summary["sem"][present]), "color": theme.PAIR_INK, "thickness": 1.2},
        customdata=counts, hovertemplate="class %{x}<br>mean %{y:.3f}<br>n = %{customdata}<extra></extra>",
    ))
    defined = values[_defined(values)]
    items = [(CHANCE[metric], "unrelated maps", {"color": theme.NEUTRAL, "dash": "dot", "width": 1})]
    if len(defined):
        items.append((float(defined.mean()), f"all samples {defined.mean():.2f}",
                      {"color": theme.PAIR_INK, "dash": "dash", "width": 1.5}))
    theme.hmarks(fig, items)
    low = np.nanmin(summary["mean"][present] - 1.96 * np.nan_to_num(summary["sem"][present])) if len(present) else 0.0
    fig.update_xaxes(title=f"explained class ({target_label(target)})", type="category")
    fig.update_yaxes(title=f"mean {ag.AGREEMENT_METRICS[metric]}", range=[min(0.0, float(low)) - 0.05, RANGES[metric][1] * 1.05])
    return _finish(fig, "Agreement by class", f"{METHOD_LABELS.get(method, method)} · bars: mean ± 95% interval",
                   height=420, legend=True)


def agreement_overview(data: AttributionData, target: str | None = None) -> go.Figure:
    """Mean agreement of every stored method (rows) under every measure (columns), for one target."""
    target = target or data.default_selection()[1]
    methods = data.targets.get(target)
    if not methods:
        raise MissingDataError(f"no attributions for target {target!r}; stored targets: {list(data.targets)}")
    metrics = list(ag.AGREEMENT_METRICS)
    z = np.array([[np.nanmean(data.agreement(m, target, metric)) if np.isfinite(data.agreement(m, target, metric)).any()
                   else np.nan for metric in metrics] for m in methods])
    columns = [theme.two_lines(ag.AGREEMENT_METRICS[m]) for m in metrics]
    fig = go.Figure(go.Heatmap(z=z, x=columns, y=[METHOD_LABELS.get(m, m) for m in methods],
                               zmin=0, zmax=1, colorscale=theme.SEQUENTIAL_SCALE, text=np.round(z, 2), texttemplate="%{text}",
                               colorbar={"title": "mean", "thickness": 12},
                               hovertemplate="%{y}<br>%{x}: %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    n = len(data.stored(methods[0], target))
    return _finish(fig, "Teacher–student agreement by method", f"mean over {n:,} samples, explaining {target_label(target)} · "
                   "1 = identical ranking / direction / top set", height=180 + 48 * len(methods))


def head_importance_view(data: AttributionData, target: str | None = None) -> go.Figure:
    """Which heads the prediction flows through, per model: mean |Σ A ⊙ ∂y/∂A| per head over the explained samples,
    as a share of the model's total, so the teacher's and the student's maps share one scale."""
    target = target or data.default_selection()[1]
    if "attention_x_gradient" not in data.targets.get(target, []):
        raise MissingDataError("head importance comes from attention_x_gradient; compute it with "
                               "kdviz.attribute(..., methods=['attention_x_gradient'])")
    stored = data.stored("attention_x_gradient", target)
    shares = {}
    for role in ("teacher", "student"):
        heads = stored.heads(role)
        mean = np.nanmean(np.abs(heads[:].astype(np.float64)), axis=0)  # [L, H]
        shares[role] = mean / np.nansum(mean) if np.nansum(mean) > 0 else mean
    top = float(max(np.nanmax(shares["teacher"]), np.nanmax(shares["student"]), 1e-12))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("teacher", "student"), horizontal_spacing=0.12)
    for col, role in enumerate(("teacher", "student"), start=1):
        z = shares[role]
        fig.add_trace(go.Heatmap(z=z, x=[f"H{h}" for h in range(z.shape[1])], y=[f"L{layer}" for layer in range(z.shape[0])],
                                 zmin=0, zmax=top, colorscale=theme.SEQUENTIAL_SCALE, showscale=col == 2,
                                 colorbar={"title": "share of<br>importance", "thickness": 12},
                                 text=np.round(z * 100, 1), texttemplate="%{text}%" if z.size <= 200 else None,
                                 hovertemplate=f"{role} %{{y}} %{{x}}<br>share %{{z:.3f}}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(autorange="reversed", title="layer" if col == 1 else None, row=1, col=col)
        fig.update_xaxes(title="head", row=1, col=col)
    layers = max(shares["teacher"].shape[0], shares["student"].shape[0])
    return _finish(fig, "Which attention heads carry the prediction", f"mean |Σ A ⊙ ∂y/∂A| per head over {len(stored):,} samples "
                   f"(first-order effect of switching the head off), as a share of each model's total · {target_label(target)}",
                   height=max(360, 200 + 40 * layers))
