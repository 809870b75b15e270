"""Views of representation alignment between teacher and student layers. Each function returns a go.Figure.

Numbers come from `kdviz.metrics.features` / `kdviz.metrics.relations`; colours from `kdviz.views.theme`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdviz.layer_map import resolve_layer_map
from kdviz.metrics.features import map_total
from kdviz.text import escape_label
from kdviz.views import theme
from kdviz.views.layers import draw_layer_maps, short_name


def cka_heatmap(
    result: Mapping[str, Any],
    *,
    suggested: Sequence[tuple[int, int]] | None = None,
    layer_map: Sequence[tuple[int, int]] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Teacher layers (rows) × student layers (columns) CKA from `readers.features.cka_matrix`, with the suggested
    monotone path and the run's layer map drawn on top as (student, teacher) pairs. Hover shows value and n."""
    cross = np.asarray(result["cross"])
    t_names = [short_name(n) for n in result["teacher_layers"]]
    s_names = [short_name(n) for n in result["student_layers"]]
    estimator = "debiased" if result.get("unbiased", True) else "biased"
    fig = go.Figure(go.Heatmap(
        z=cross, x=s_names, y=t_names, zmin=min(0.0, float(cross.min())), zmax=1.0, colorscale=theme.SEQUENTIAL_SCALE,
        colorbar={"title": "CKA"}, text=np.round(cross, 2), texttemplate="%{text}" if cross.size <= 400 else None,
        hovertemplate=f"teacher %{{y}}<br>student %{{x}}<br>{estimator} CKA %{{z:.3f}} over n={result.get('n', '?')}<extra></extra>",
    ))
    draw_layer_maps(fig, s_names, t_names, layer_map=layer_map, suggested=suggested)
    fig.update_xaxes(title="student layer", type="category")
    fig.update_yaxes(title="teacher layer", type="category", autorange="reversed")
    height = max(360, 140 + 34 * len(t_names))
    heading = title or f"Which student layer matches which teacher layer ({estimator} linear CKA)"
    totals = []
    if suggested:
        totals.append(f"suggested map: total {map_total(cross, suggested):.2f}")
    if layer_map:
        totals.append(f"run's map: {map_total(cross, layer_map):.2f}")
    uniform = [(p["student"], p["teacher"]) for p in resolve_layer_map("uniform", len(t_names), len(s_names))]
    totals.append(f"uniform map: {map_total(cross, uniform):.2f}")
    heading += theme.subtitle(" · ".join(totals))
    return theme.style(fig, heading, height=height)


def within_model_cka(result: Mapping[str, Any]) -> go.Figure:
    """Teacher × teacher and student × student CKA side by side on one colour scale."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("teacher layers vs teacher layers", "student layers vs student layers"),
                        horizontal_spacing=0.18)
    for col, role in ((1, "teacher"), (2, "student")):
        names = [short_name(n, 20) for n in result[f"{role}_layers"]]
        matrix = np.asarray(result[role])
        fig.add_trace(go.Heatmap(z=matrix, x=names, y=names, zmin=0, zmax=1, colorscale=theme.SEQUENTIAL_SCALE,
                                 showscale=col == 2, colorbar={"title": "CKA"}, text=np.round(matrix, 2),
                                 texttemplate="%{text}" if matrix.size <= 144 else None,
                                 hovertemplate="%{y} vs %{x}: %{z:.3f}<extra>" + role + "</extra>"), row=1, col=col)
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=col)
        fig.update_xaxes(type="category", row=1, col=col)
    return theme.style(fig, "How each model's own layers relate (the block structure of its representations)", height=440, legend=False)


def _cosine(m: np.ndarray) -> np.ndarray:
    centred = m - m.mean(0)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-300)
    return unit @ unit.T


def relation_matrices(x_t: Any, x_s: Any, labels: Any | None = None, *, teacher_name: str = "", student_name: str = "",
                      note: str = "") -> go.Figure:
    """Sample × sample cosine similarity (of centred features) for teacher and student, sorted by class when there are
    ``labels`` (else in sample order), and their difference: the relational structure RKD-style methods distil.
    ``note``: a subtitle (how the features were pooled)."""
    a, b = np.asarray(x_t, dtype=np.float64), np.asarray(x_s, dtype=np.float64)
    order = np.argsort(np.asarray(labels), kind="stable") if labels is not None else np.arange(len(a))
    rel_t, rel_s = _cosine(a[order]), _cosine(b[order])
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.11,
                        subplot_titles=(f"teacher {short_name(teacher_name, 24)}", f"student {short_name(student_name, 24)}",
                                        "teacher − student"))
    for col, matrix in ((1, rel_t), (2, rel_s)):
        fig.add_trace(go.Heatmap(z=matrix, zmin=-1, zmax=1, zmid=0, colorscale=theme.SIGNED_SIMILARITY_SCALE, showscale=col == 2,
                                 colorbar={"title": "cosine", "x": 0.625, "thickness": 12, "len": 0.9},
                                 hovertemplate="samples %{y}, %{x}: %{z:.2f}<extra></extra>"),
                      row=1, col=col)
    diff = rel_t - rel_s
    reach = max(float(np.abs(diff).max()), 1e-12)  # symmetric about 0: equal differences look equal either way
    fig.add_trace(go.Heatmap(z=diff, zmid=0, zmin=-reach, zmax=reach, colorscale=theme.DIFFERENCE_SCALE,
                             colorbar={"title": {"text": "teacher −<br>student", "side": "top"}, "thickness": 12, "len": 0.9},
                             hovertemplate="samples %{y}, %{x}: teacher − student %{z:.2f}<extra></extra>"), row=1, col=3)
    if labels is not None:
        sorted_labels = np.asarray(labels)[order]
        edges = np.flatnonzero(np.diff(sorted_labels)) + 0.5
        line = {"color": theme.rgba(theme.INK, 0.25), "width": 0.5}
        shapes = []  # as one list: add_hline scans the subplots for every line (2 s for 54 lines)
        ends = (-0.5, len(sorted_labels) - 0.5)  # across the matrix only, not the square subplot's margin
        for col in (1, 2, 3):
            axis = "" if col == 1 else str(col)
            for edge in edges:
                shapes.append({"type": "line", "xref": f"x{axis}", "x0": ends[0], "x1": ends[1], "yref": f"y{axis}",
                               "y0": edge, "y1": edge, "line": line})
                shapes.append({"type": "line", "yref": f"y{axis}", "y0": ends[0], "y1": ends[1], "xref": f"x{axis}",
                               "x0": edge, "x1": edge, "line": line})
        fig.update_layout(shapes=shapes)
    for col in (1, 2, 3):
        fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor=f"x{col if col > 1 else ''}", row=1, col=col)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    mean_gap = float(np.abs(diff).mean())
    order_said = "sorted by class" if labels is not None else "in sample order"
    title = f"Sample relations, {order_said}" + theme.subtitle(f"mean |teacher − student| = {mean_gap:.3f}")
    fig = theme.style(fig, title + (theme.subtitle(note) if note else ""), height=460 if note else 440, legend=False)
    return fig


def joint_projection(x_t: Any, x_s: Any, labels: Any | None = None, class_names: Sequence[str] | None = None,
                     *, components: int = 10, link: int = 150, note: str = "") -> go.Figure:
    """Teacher and student features in one 2-D PCA, each sample's two points linked by a line: coloured by class when
    there are ``labels``, else by model (teacher blue, student orange). ``note``: a subtitle.

    The models' widths differ, so each is first reduced to ``components`` principal directions, the student's are
    rotated onto the teacher's by orthogonal Procrustes (geometry preserved), and the two clouds are projected
    together. ``link`` caps how many sample pairs get a connecting line (readability).
    """
    a, b = np.asarray(x_t, dtype=np.float64), np.asarray(x_s, dtype=np.float64)

    def reduce(m: np.ndarray) -> np.ndarray:
        centred = m - m.mean(0)
        u, s, _ = np.linalg.svd(centred, full_matrices=False)
        k = min(components, len(s))
        z = u[:, :k] * s[:k]
        z = z / max(np.linalg.norm(z), 1e-300) * np.sqrt(len(z))
        return np.pad(z, ((0, 0), (0, components - k)))

    zt, zs = reduce(a), reduce(b)
    u, _, vt = np.linalg.svd(zs.T @ zt)
    zs = zs @ (u @ vt)
    both = np.vstack([zt, zs])
    both -= both.mean(0)
    _, _, directions = np.linalg.svd(both, full_matrices=False)
    points = both @ directions[:2].T
    pt, ps = points[: len(a)], points[len(a):]
    if labels is None:  # no classes (a language model's texts): each model in its own colour
        return _projection_by_model(pt, ps, _links(pt, ps, link), note)
    y = np.asarray(labels)
    names = [escape_label(c) for c in class_names] if class_names is not None else [str(c) for c in np.unique(y)]
    fig = go.Figure(_links(pt, ps, link))
    for c in np.unique(y):
        mask = y == c
        colour = theme.class_colour(int(c))  # the marker shape says teacher or student
        label = names[int(c)] if class_names is not None and int(c) < len(names) else str(c)
        fig.add_trace(go.Scatter(x=pt[mask, 0], y=pt[mask, 1], mode="markers", name=f"{label} · teacher", legendgroup=label,
                                 marker={"color": colour, "size": 7, "symbol": "circle"}))
        fig.add_trace(go.Scatter(x=ps[mask, 0], y=ps[mask, 1], mode="markers", name=f"{label} · student", legendgroup=label,
                                 marker={"color": colour, "size": 7, "symbol": "diamond-open", "line": {"width": 1.5}}))
    return _finish_projection(fig, note)


PROJECTION_TITLE = "Teacher (●) and student (◇) features, one projection" + theme.subtitle("lines join each sample's two points")


def _links(pt: np.ndarray, ps: np.ndarray, link: int) -> go.Scatter:
    """Lines joining the teacher's and the student's point of (at most ``link``) samples."""
    step = max(1, len(pt) // link)
    xs, ys = [], []
    for i in range(0, len(pt), step):
        xs += [pt[i, 0], ps[i, 0], None]
        ys += [pt[i, 1], ps[i, 1], None]
    return go.Scatter(x=xs, y=ys, mode="lines", line={"color": theme.rgba(theme.NEUTRAL, 0.25), "width": 1},
                      name="same sample", hoverinfo="skip")


def _projection_by_model(pt: np.ndarray, ps: np.ndarray, links: go.Scatter, note: str) -> go.Figure:
    fig = go.Figure(links)
    for points, role, symbol in ((pt, "teacher", "circle"), (ps, "student", "diamond-open")):
        fig.add_trace(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers", name=role,
                                 customdata=np.arange(len(points)),
                                 marker={"color": theme.ROLE_COLOURS[role], "size": 7, "symbol": symbol, "line": {"width": 1.5}},
                                 hovertemplate=f"{role}, sample %{{customdata}}<extra></extra>"))
    return _finish_projection(fig, note)


def _finish_projection(fig: go.Figure, note: str) -> go.Figure:
    fig.update_xaxes(title="joint PC 1", zeroline=False)
    fig.update_yaxes(title="joint PC 2", zeroline=False, scaleanchor="x")
    fig = theme.style(fig, PROJECTION_TITLE + (theme.subtitle(note) if note else ""), height=520)
    return fig.update_layout(legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"})


def pair_scores(scores: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Bars per (student, teacher) layer pair: projector held-out R² and mutual-kNN overlap (both in [0, 1] when good)."""
    labels = [f"S {short_name(s['student'], 18)} → T {short_name(s['teacher'], 18)}" for s in scores]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=[s["r2"] for s in scores], name="projector R² (ridge, 5-fold held out)",
                         marker={"color": theme.PAIR_INK}, hovertemplate="%{x}<br>R² %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Bar(x=labels, y=[s["knn"] for s in scores], name="mutual 10-NN overlap",
                         marker={"color": theme.PAIR_FILL}, hovertemplate="%{x}<br>overlap %{y:.3f}<extra></extra>"))
    fig.update_yaxes(title="score", range=[min(0.0, min(min(s["r2"], s["knn"]) for s in scores) - 0.05), 1.05])
    fig.update_layout(barmode="group")
    return theme.style(fig, "Projector fit and shared neighbours, by layer pair", height=420)
