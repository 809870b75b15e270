"""Views of attention distillation: the head grid, a teacher/student head pair, layer and head matching, rollout,
and CNN attention-transfer overlays. Each function takes an `AttentionData` and returns a go.Figure.

The browser never receives a whole [L, H, T, T] tensor: the grid sends ≤32×32 uint8 thumbnails, the pair view
one head per model at ≤``max_side``² float32 (longer inputs are pooled; ``window`` shows any token range at full
resolution). Numbers come from `kdviz.metrics.attention`; colours from `kdviz.views.theme`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from kdviz.errors import InputError, MissingDataError
from kdviz.layer_map import resolve_layer_map
from kdviz.metrics import attention as attn
from kdviz.metrics.attention_digest import bin_starts, pool_map
from kdviz.metrics.features import map_total
from kdviz.readers.attention import ROLES, AttentionData
from kdviz.text import escape_label
from kdviz.views import theme
from kdviz.views.layers import draw_layer_maps, short_name
from kdviz.views.overlay import overlay, overlay_pair

THUMBNAIL = 32  # largest thumbnail side in the head grid
GAP = 4  # pixels between thumbnails
SUMMARY_LABELS = {**attn.SUMMARIES, "match": "divergence to matched head"}


# ---- array shaping for the browser -----------------------------------------------------------------
def thumbnail(a: np.ndarray, side: int = THUMBNAIL) -> np.ndarray:
    """[side, side] uint8 of a [T, T] map pooled to ≤ ``side`` bins (a shorter map is enlarged, each bin a block of
    cells) and scaled to its own maximum (patterns, not levels)."""
    pooled, _ = pool_map(a.astype(np.float64), side)
    if pooled.shape[-1] < side:
        index = np.arange(side) * pooled.shape[-1] // side
        pooled = pooled[np.ix_(index, index)]
    top = pooled.max()
    return np.zeros(pooled.shape, np.uint8) if top <= 0 else np.rint(255 * pooled / top).astype(np.uint8)


def grid_cell(x: float, y: float, cell: int) -> tuple[int, int]:
    """(layer, head) under composite-image pixel (x, y) of a head grid with thumbnails of ``cell`` pixels."""
    return round(y) // (cell + GAP), round(x) // (cell + GAP)


def _finish(fig: go.Figure, title: str, *, height: int, width: int | None = None, top: int = 115) -> go.Figure:
    """`theme.style`, with room above the plots for a two-line title and the subplot titles."""
    theme.use_white_template(fig)
    return fig.update_layout(_finish_layout(title, height=height, width=width, top=top))


def _finish_layout(title: str, *, height: int, width: int | None = None, top: int = 115) -> dict:
    """`_finish`'s layout as a dict, for a view built as one figure dict."""
    styled = theme.style_layout(title, height=height, width=width, legend=False)
    styled["title"].update(_finish_title(height))
    styled["margin"]["t"] = top
    return styled


def _finish_title(height: int) -> dict:
    """Where `_finish` puts the title: at the top of the figure, whatever the plots' top margin."""
    return {"yref": "container", "y": 1 - 12 / height, "yanchor": "top", "pad": {"t": 4}}



def token_labels(tokens: Sequence[str] | None, starts: np.ndarray, stop: int) -> list[str]:
    """Unique, escaped axis labels for token positions (or token bins starting at ``starts``, ending at ``stop``):
    "12 the" keeps repeated tokens apart on a category axis; a bin reads "8–15"."""
    ends = np.append(starts[1:], stop) - 1
    labels = []
    for first, last in zip(starts.tolist(), ends.tolist(), strict=True):
        if last > first:
            labels.append(f"{first}–{last}")
        else:
            labels.append(f"{first} {escape_label(tokens[first])}" if tokens is not None else str(first))
    return labels


# ---- the head grid ----------------------------------------------------------------------------------
def grid_values(data: AttentionData, role: str, sample: int, summary: str) -> np.ndarray:
    """[L, H] values of the chosen summary for one model (one sample; ``match`` uses the dataset matching)."""
    if summary == "match":
        return data.matched_divergence(role)
    if summary not in attn.SUMMARIES:
        raise InputError(f"unknown head summary {summary!r}; choose one of {list(SUMMARY_LABELS)}")
    return data.sample_summaries(role, sample, summary)


def head_grid(data: AttentionData, sample: int = 0, summary: str = "entropy",
              selected: dict[str, tuple[int, int]] | None = None) -> go.Figure:
    """Every (layer, head) of the teacher and the student as a thumbnail of its attention on one sample, framed in
    the colour of a per-head summary. Thumbnails are ≤32×32 uint8, so the grid stays small for any length.

    Built as one figure dict, validated once: four traces per figure whatever the head count (the frames are one
    open-square marker per head, not a shape each), so a sample switch on BERT-base's 216 heads stays cheap."""
    data.require_attention()
    values = {role: grid_values(data, role, sample, summary) for role in ROLES}
    finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1e-9
    heads = {role: max(data.heads(role)) for role in ROLES}
    rows = max(len(data.layers(r)) for r in ROLES)
    # fixed pixel geometry, so thumbnails are square and equally large for both models
    block = float(np.clip(900 / (heads["teacher"] + heads["student"]), 30, 96))
    spacing, margin_l, margin_r, margin_t, margin_b = 80, 60, 150, 135, 60
    plot_width = (heads["teacher"] + heads["student"]) * block + spacing
    cell = data.grid_side
    pitch, centre = cell + GAP, (cell - 1) / 2
    frame_px = block * (cell + 2) / pitch  # a frame one data unit outside the thumbnail, in screen pixels
    split = heads["teacher"] * block / plot_width
    domains = {"teacher": [0.0, split], "student": [split + spacing / plot_width, 1.0]}
    traces, layout = [], {"annotations": []}
    for col, role in enumerate(ROLES, start=1):
        axis = "" if col == 1 else "2"
        n_layers = len(data.layers(role))
        composite = np.zeros((n_layers * pitch - GAP, heads[role] * pitch - GAP), np.uint8)
        maps = data.sample_thumbnails(role, sample)
        for layer, layer_maps in enumerate(maps):
            for head in range(layer_maps.shape[0]):
                composite[layer * pitch:layer * pitch + cell, head * pitch:head * pitch + cell] = thumbnail(layer_maps[head], cell)
        traces.append({"type": "heatmap", "z": composite, "colorscale": theme.SEQUENTIAL_SCALE, "zmin": 0, "zmax": 255,
                       "showscale": False, "hoverinfo": "skip", "name": f"{role} grid", "xaxis": f"x{axis}", "yaxis": f"y{axis}"})
        present = [(lay, h) for lay, n_heads in enumerate(data.heads(role)) for h in range(n_heads)]
        v = np.array([values[role][lay, h] for lay, h in present])
        known = np.isfinite(v)
        traces.append({
            "type": "scatter", "mode": "markers", "name": f"{role} heads", "showlegend": False,
            "x": [h * pitch + centre for _, h in present], "y": [lay * pitch + centre for lay, _ in present],
            "customdata": [[lay, h] for lay, h in present], "xaxis": f"x{axis}", "yaxis": f"y{axis}",
            "marker": {"symbol": "square-open", "size": frame_px, "line": {"width": 2.5},
                       # a head outside the layer map has no value: a thin grey frame, and "n/a" on hover
                       "color": [theme.MUTED if not ok else c for ok, c in zip(known, sample_colorscale(
                           theme.SUMMARY_SCALE, [float((x - lo) / (hi - lo)) if ok else 0.0 for x, ok in zip(v, known, strict=True)]),
                           strict=True)]},
            "text": [f"{role} layer {lay} · head {h}<br>{SUMMARY_LABELS[summary]}: "
                     + ("n/a (not in the layer map)" if not ok else f"{val:.3f}")
                     for (lay, h), val, ok in zip(present, v, known, strict=True)],
            "hovertemplate": "%{text}<extra></extra>"})
        layout[f"xaxis{axis}"] = {
            "domain": domains[role], "anchor": f"y{axis}", "tickmode": "array", "title": {"text": "head"},
            "tickvals": [h * pitch + centre for h in range(heads[role])], "ticktext": [f"h{h}" for h in range(heads[role])],
            "showgrid": False, "zeroline": False, "range": [-2, heads[role] * pitch - GAP + 1]}
        layout[f"yaxis{axis}"] = {
            "domain": [0.0, 1.0], "anchor": f"x{axis}", "tickmode": "array",
            "tickvals": [lay * pitch + centre for lay in range(n_layers)], "ticktext": [f"L{lay}" for lay in range(n_layers)],
            "range": [rows * pitch - GAP + 1, -2], "showgrid": False, "zeroline": False}
        layout["annotations"].append({
            "text": f"{role} · {escape_label(data.side(role).name)}", "xref": "paper", "yref": "paper", "showarrow": False,
            "x": sum(domains[role]) / 2, "y": 1.0, "xanchor": "center", "yanchor": "bottom", "font": {"size": 16}})
    # the colour bar of the frames: an invisible point carrying the scale (the frames' colours are computed above,
    # so heads outside the layer map can be grey)
    traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "xaxis": "x2", "yaxis": "y2",
                   "hoverinfo": "skip", "showlegend": False, "name": "frame scale",
                   "marker": {"color": [lo], "cmin": lo, "cmax": hi, "colorscale": theme.SUMMARY_SCALE, "showscale": True,
                              "colorbar": {"title": {"text": SUMMARY_LABELS[summary].replace(" (", "<br>("), "side": "right"},
                                           "thickness": 14, "len": 0.8}}})
    layout["shapes"] = [_selection_mark(data, role, (selected or {}).get(role)) for role in ROLES]
    scope = f"{data.scope} (matching)" if summary == "match" else f"sample {sample}"
    title = (f"Every attention head · frame: {SUMMARY_LABELS[summary]}" + theme.subtitle(f"frame colour over {scope}")
             + theme.subtitle(f"thumbnail: the head's attention on this sample (queries × keys) pooled into ≤{data.grid_side} "
                              "bins at capture, scaled to its own maximum")
             + theme.subtitle("click a head to open it"))
    height = int(rows * block + margin_t + margin_b)
    styled = _finish_layout(title, height=height, width=int(plot_width + margin_l + margin_r), top=margin_t)
    # fixed margins (the colour bar's labels may not widen them): the frames are sized in pixels for this plot area
    styled["margin"] = {"l": margin_l, "r": margin_r, "t": margin_t, "b": margin_b, "autoexpand": False}
    fig = go.Figure({"data": traces, "layout": {**layout, **styled}})
    theme.use_white_template(fig)
    return fig


def _frame(role: str, layer: int, head: int, cell: int, pad: float) -> dict:
    """Where the frame of one head's thumbnail goes in the head grid (a rect shape without its line)."""
    axis = "" if role == ROLES[0] else "2"
    return {"type": "rect", "xref": f"x{axis}", "yref": f"y{axis}",
            "x0": head * (cell + GAP) - pad - 0.5, "x1": head * (cell + GAP) + cell + pad - 0.5,
            "y0": layer * (cell + GAP) - pad - 0.5, "y1": layer * (cell + GAP) + cell + pad - 0.5}


def _selection_mark(data: AttentionData, role: str, chosen: tuple[int, int] | None) -> dict:
    """The dark frame over one model's chosen head (hidden without a choice): the last two shapes of a head grid."""
    cell = data.grid_side
    layer, head = chosen if chosen is not None else (0, 0)
    return {**_frame(role, int(layer), int(head), cell, pad=1.5), "visible": chosen is not None,
            "line": {"color": theme.HIGHLIGHT, "width": 4}}


def select_in_grid(fig: go.Figure, data: AttentionData, selected: dict[str, tuple[int, int]]) -> None:
    """Move the chosen-head marks of a `head_grid` figure in place. Only those two shapes change, so a shown grid
    is patched (a relayout of two shapes) instead of rebuilt and resent when only the chosen head changes."""
    first = len(fig.layout.shapes) - len(ROLES)
    changes = {}
    for index, role in enumerate(ROLES, start=first):
        for key, value in _selection_mark(data, role, selected.get(role)).items():
            if key not in ("type", "xref", "yref", "line"):
                changes[f"shapes[{index}].{key}"] = value
    fig.plotly_relayout(changes)


# ---- a teacher head next to a student head -----------------------------------------------------------
def _window(n_real: int, window: tuple[int, int] | None) -> tuple[int, int]:
    if window is None:
        return 0, n_real
    start, stop = int(window[0]), int(min(window[1], n_real))
    if not 0 <= start < stop:
        raise InputError(f"token window {window} is empty or outside 0..{n_real}")
    return start, stop


PAIR_SCALES = {"auto": "linear up to 64 tokens, log beyond", "linear": "attention", "log": "log₁₀ attention",
               "row": "attention ÷ its row's largest"}
LOG_FLOOR = 1e-4  # the log scale's lowest level: 1/10,000 of a query's attention
LOG_AUTO_TOKENS = 64  # beyond this many tokens shown, most of a map is tiny levels a linear scale draws white
SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
PAIR_SPACING = 0.15  # between the three panels: wide enough for the shared colour bar and its ticks between 2 and 3
PAIR_BAR_X = 0.635  # just right of the student panel, clear of the difference panel's tick labels


def scaled_maps(t_map: np.ndarray, s_map: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(teacher, student, difference, labels) drawn on one colour ``scale``:
    - ``linear``: attention, and teacher − student;
    - ``log``: log₁₀ of attention floored at `LOG_FLOOR`, and log₁₀(teacher ÷ student): the structure of long inputs,
      where a linear scale shows only the few largest cells;
    - ``row``: each query row divided by its largest value (where each query looks most, whatever its spread), and
      the difference of those."""
    if scale == "log":
        t, s = np.log10(np.maximum(t_map, LOG_FLOOR)), np.log10(np.maximum(s_map, LOG_FLOOR))
        levels = list(range(int(np.log10(LOG_FLOOR)), 1))
        return t, s, t - s, {"unit": "attention<br>(log)", "diff": "log₁₀ teacher<br>÷ student",
                             "zmin": np.log10(LOG_FLOOR), "ticks": {"tickvals": levels, "ticktext": [
                                 "1" if v == 0 else f"10{str(v).translate(SUPERSCRIPT)}" for v in levels]}}
    if scale == "row":
        def per_row(m: np.ndarray) -> np.ndarray:
            return m / np.maximum(m.max(axis=1, keepdims=True), 1e-12)

        t, s = per_row(t_map), per_row(s_map)
        return t, s, t - s, {"unit": "÷ its row's<br>largest", "diff": "teacher −<br>student<br>(row-scaled)", "zmin": 0.0}
    return t_map, s_map, t_map - s_map, {"unit": "attention", "diff": "teacher −<br>student", "zmin": 0.0}


def pair_view(data: AttentionData, teacher: tuple[int, int], student: tuple[int, int], sample: int = 0, *,
              window: tuple[int, int] | None = None, query: int | None = None, max_side: int = 128,
              scale: str = "auto") -> go.Figure:
    """Teacher head | student head | teacher − student for one sample on one shared colour scale.

    ``teacher``/``student`` are (layer, head). Padded tokens are cut off; inputs longer than ``max_side`` tokens are
    pooled into token bins (keys summed, queries averaged) unless ``window`` = (start, stop) selects a range. For a
    ViT, a second row draws query token ``query``'s attention (default: the CLS token) over the input image.
    ``scale`` (`PAIR_SCALES`, `scaled_maps`): ``auto`` is linear up to `LOG_AUTO_TOKENS` tokens and log beyond; the
    title says which is shown.
    """
    if scale not in PAIR_SCALES:
        raise InputError(f"scale must be one of {list(PAIR_SCALES)}, got {scale!r}")
    data.require_attention()
    (t_layer, t_head), (s_layer, s_head) = teacher, student
    for role, (layer, head) in (("teacher", teacher), ("student", student)):
        if not 0 <= layer < len(data.layers(role)) or not 0 <= head < data.heads(role)[layer]:
            raise InputError(f"{role} has no layer {layer} head {head}: it has {len(data.layers(role))} layers with heads "
                             f"{data.heads(role)}")
    mask = data.mask(sample)
    n_real = data.n_real(sample)
    exact = data.has_exact(sample)
    if exact:
        t_full = data.head_map("teacher", t_layer, t_head, sample)
        s_full = data.head_map("student", s_layer, s_head, sample)
        start, stop = _window(n_real, window)
        t_map, starts = pool_map(t_full[start:stop, start:stop].astype(np.float64), max_side)
        s_map, _ = pool_map(s_full[start:stop, start:stop].astype(np.float64), max_side)
        starts = starts + start
    else:  # the digest's thumbnails: pooled over the real tokens while capturing
        if window is not None:
            raise InputError(f"sample {sample} has no exact attention maps, so no token window can be shown; "
                             f"{data.exact_note()}")
        start, stop = 0, n_real
        t_map = data.thumbnails("teacher", t_layer, sample)[t_head].astype(np.float64)
        s_map = data.thumbnails("student", s_layer, sample)[s_head].astype(np.float64)
        starts = bin_starts(n_real, data.grid_side)
    pooled = len(starts) < stop - start
    labels = token_labels(data.tokens(sample), starts, stop)
    token_grid = data.grid("teacher") if data.image(sample) is not None else None
    rows = 2 if exact and token_grid and data.grid("student") == token_grid else 1
    match = data.match(t_layer, s_layer) if data.mapped_student_layer(t_layer) == s_layer else None
    matched = match is not None and match.student_of(t_head) == s_head
    closest = (not matched and match is not None
               and int(np.argmin(data.pair_divergence(t_layer, s_layer)[t_head])) == s_head)
    names = (f"teacher L{t_layer} · head {t_head}",
             f"student L{s_layer} · head {s_head}" + (" (matched)" if matched else " (closest)" if closest else ""),
             "teacher − student")
    shown = "log" if scale == "auto" and len(starts) > LOG_AUTO_TOKENS else "linear" if scale == "auto" else scale
    t_show, s_show, diff, names_of = scaled_maps(t_map, s_map, shown)
    top = float(max(t_show.max(), s_show.max(), names_of["zmin"] + 1e-12))
    diff = diff.astype(np.float32)
    spread = float(max(np.abs(diff).max(), 1e-12))
    unit = names_of["unit"]  # pooling is said in the title
    # centred on the (square, centred) maps and shorter than them: clear of the subplot titles and the tick labels
    bar = {"len": 0.5 / rows, "y": 0.5 if rows == 1 else 0.79, "yanchor": "middle", "thickness": 12,
           "title": {"side": "top", "font": {"size": 12}}}
    shared_bar = {**bar, "x": PAIR_BAR_X, "title": {**bar["title"], "text": unit}, **names_of.get("ticks", {})}
    traces = []
    for col, (z, raw, role) in enumerate(((t_show, t_map, "teacher"), (s_show, s_map, "student")), start=1):
        traces.append({"type": "heatmap", "z": z.astype(np.float32), "x": labels, "y": labels,
                       "customdata": raw.astype(np.float32), "colorscale": theme.SEQUENTIAL_SCALE,
                       "zmin": names_of["zmin"], "zmax": top, "showscale": col == 2, "colorbar": shared_bar,
                       "hovertemplate": f"{role}<br>query %{{y}} → key %{{x}}<br>attention %{{customdata:.4g}}<extra></extra>"})
    traces.append({"type": "heatmap", "z": diff, "x": labels, "y": labels, "colorscale": theme.DIFFERENCE_SCALE,
                   "zmin": -spread, "zmax": spread, "colorbar": {**bar, "title": {**bar["title"], "text": names_of["diff"]}},
                   "hovertemplate": f"query %{{y}} → key %{{x}}<br>{names_of['diff'].replace('<br>', ' ')} "
                                    "%{z:.4f}<extra></extra>"})
    axes = {}
    for col, trace in enumerate(traces, start=1):
        suffix = "" if col == 1 else str(col)
        trace.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
        axes[f"xaxis{suffix}"] = {"title": {"text": "key" if col == 2 else None}, "type": "category", "showgrid": False,
                                  "constrain": "domain", "tickfont": {"size": 10}}
        axes[f"yaxis{suffix}"] = {"title": {"text": "query" if col == 1 else None}, "type": "category",
                                  "autorange": "reversed", "showgrid": False, "showticklabels": col == 1,
                                  "scaleanchor": f"x{suffix}", "constrain": "domain", "tickfont": {"size": 10}}
    titles = names + (("teacher: query → image", "student: query → image", "teacher − student") if rows == 2 else ())
    if exact:
        kl: float | None = attn.head_divergence(t_full[None, None], s_full[None, None],
                                                mask=None if mask is None else mask[None])[0, 0]
    else:
        stored = data.sample_head_divergence(t_layer, s_layer, sample)
        kl = None if stored is None else float(stored[t_head, s_head])
    detail = [f"sample {sample}", "KL(teacher ‖ student) per query: " + (f"{kl:.3f} nats" if kl is not None else
                                                                         "not stored for this layer pair"),
              {"linear": "linear colour scale", "log": f"log colour scale from {LOG_FLOOR:g}",
               "row": "each query row scaled to its largest"}[shown]]
    how = []
    if not exact:
        how += [f"{n_real:,} tokens pooled at capture into {len(starts)} bins (keys summed, queries averaged)",
                data.exact_note()]
    elif pooled:
        how.append(f"{stop - start:,} tokens pooled into {len(starts)} bins (keys summed, queries averaged); "
                   "a token window shows each token")
    elif window is not None:
        detail.append(f"tokens {start}–{stop - 1}")
    if exact and len(starts) > 1:
        how.append("drag a box on a map to open those tokens; double-click to go back")
    title = ("One teacher head and one student head, side by side" + theme.subtitle(" · ".join(detail))
             + "".join(theme.subtitle(line) for line in how))
    height = 450 if rows == 1 else 860
    styled = _finish_layout(title, height=height)
    # what a dragged box maps back to (`window_from_range`): the first token of each shown bin, and the end
    styled["meta"] = {"bin_starts": [int(v) for v in starts], "stop": int(stop), "exact": bool(exact)}
    if rows == 1:  # one figure dict, validated once (make_subplots and updates cost more than the rest of the view)
        layout = _pair_grid(titles)
        for key, axis in axes.items():
            layout[key] = {**layout[key], **axis}
        fig = go.Figure({"data": traces, "layout": {**layout, **styled}})
        theme.use_white_template(fig)
        return fig
    # a ViT: a second row draws the query token's attention over the image
    fig = make_subplots(rows=2, cols=3, subplot_titles=titles, **PAIR_GRID)
    fig.add_traces(traces)
    theme.use_white_template(fig)
    fig.update_layout({**axes, **styled})
    _query_overlay_row(fig, data, t_full, s_full, sample, token_grid, query)
    return fig


PAIR_GRID = {"horizontal_spacing": PAIR_SPACING, "vertical_spacing": 0.17}  # the pair view's subplot spacing


@functools.cache
def _pair_grid_template() -> dict:
    """The layout of the one-row pair view's empty subplot grid (axis domains and anchors, three title
    annotations), made by make_subplots once."""
    layout = make_subplots(rows=1, cols=3, subplot_titles=["·", "·", "·"], **PAIR_GRID).layout.to_plotly_json()
    layout.pop("template", None)
    return layout


def _pair_grid(titles: Sequence[str]) -> dict:
    """A fresh copy of `_pair_grid_template` with the subplot titles ``titles``."""
    template = _pair_grid_template()
    layout = {key: dict(value) for key, value in template.items() if key != "annotations"}
    layout["annotations"] = [{**note, "text": text} for note, text in zip(template["annotations"], titles, strict=True)]
    return layout


def window_from_range(meta: dict, low: float, high: float) -> tuple[int, int] | None:
    """The token window (start, stop) under a box dragged on a `pair_view` from category position ``low`` to
    ``high`` (plotly's axis range; bin i is centred on i): the bins whose centres the box holds, from the figure's
    ``layout.meta``; None when it holds none or the sample has no exact maps."""
    starts, stop = meta.get("bin_starts") or [], meta.get("stop")
    if not meta.get("exact") or not starts or stop is None:
        return None
    low, high = sorted((low, high))
    first, last = max(0, int(np.ceil(low))), min(len(starts) - 1, int(np.floor(high)))
    if last < first:
        return None
    return int(starts[first]), int(starts[last + 1]) if last + 1 < len(starts) else int(stop)


def _grid_map(values: np.ndarray, layout: dict) -> np.ndarray:
    rows, cols = layout["grid"]
    return values[layout["prefix"]:].reshape(rows, cols)


def _query_overlay_row(fig: go.Figure, data: AttentionData, t_full: np.ndarray, s_full: np.ndarray, sample: int,
                       layout: dict, query: int | None) -> None:
    query = 0 if query is None else query  # the CLS token by default
    prefix = layout["prefix"]
    t_row, s_row = _grid_map(t_full[query].astype(np.float64), layout), _grid_map(s_full[query].astype(np.float64), layout)
    who = "CLS" if query == 0 and prefix else f"prefix token {query}" if query < prefix else f"patch {query - prefix}"
    overlay_pair(fig, data.image(sample), t_row, s_row, row=2, what=f"query {who}",
                  colorbar={"title": f"attention<br>from {who}", "x": PAIR_BAR_X, "len": 0.42, "y": 0.0, "yanchor": "bottom",
                            "thickness": 12})


# ---- layer and head matching ---------------------------------------------------------------------------
def layer_similarity_view(data: AttentionData) -> go.Figure:
    """Teacher layers × student layers divergence of head-averaged attention, with the run's layer map and the
    lowest-divergence monotone map drawn on top. Lower is better: a good map follows the light cells."""
    matrix = data.layer_similarity()
    t_names = [f"L{i} {short_name(n, 18)}" for i, n in enumerate(data.layers("teacher"))]
    s_names = [f"L{i} {short_name(n, 18)}" for i, n in enumerate(data.layers("student"))]
    fig = go.Figure(go.Heatmap(z=matrix, x=s_names, y=t_names, **theme.from_zero(matrix), colorscale=theme.DIVERGENCE_SCALE,
                               colorbar={"title": f"{data.measure.upper()}<br>(nats)"}, text=np.round(matrix, 3),
                               texttemplate="%{text}" if matrix.size <= 400 else None,
                               hovertemplate="teacher %{y}<br>student %{x}<br>divergence %{z:.4f} nats<extra></extra>"))
    suggested = data.suggested_map()
    draw_layer_maps(fig, s_names, t_names, layer_map=data.layer_map or None, suggested=suggested,
                    suggested_label="suggested (lowest-divergence monotone path)")
    fig.update_xaxes(title="student layer", type="category")
    fig.update_yaxes(title="teacher layer", type="category", autorange="reversed")
    totals = [f"mean over mapped pairs — suggested: {map_total(matrix, suggested) / len(suggested):.3f}"]
    if data.layer_map:
        totals.append(f"run's map: {map_total(matrix, data.layer_map) / len(data.layer_map):.3f}")
    uniform = [(p["student"], p["teacher"]) for p in resolve_layer_map("uniform", len(t_names), len(s_names))]
    totals.append(f"uniform: {map_total(matrix, uniform) / len(uniform):.3f}")
    title = ("Which student layer attends like which teacher layer"  # the rest on the subtitle: one line fits 1,000 px
             + theme.subtitle(f"{data.measure.upper()} of head-averaged attention, {data.scope}")
             + theme.subtitle(" · ".join(totals)))
    return theme.style(fig, title, height=max(380, 150 + 40 * len(t_names)))


def head_match_view(data: AttentionData, teacher_layer: int, student_layer: int) -> go.Figure:
    """Teacher heads × student heads divergence for one layer pair, with the best one-to-one matching outlined."""
    matrix = data.pair_divergence(teacher_layer, student_layer)
    match = data.match(teacher_layer, student_layer)
    t_names = [f"T h{h}" for h in range(matrix.shape[0])]
    s_names = [f"S h{h}" for h in range(matrix.shape[1])]
    fig = go.Figure(go.Heatmap(z=matrix, x=s_names, y=t_names, **theme.from_zero(matrix), colorscale=theme.DIVERGENCE_SCALE,
                               colorbar={"title": f"{data.measure.upper()}<br>(nats)"}, text=np.round(matrix, 3),
                               texttemplate="%{text}" if matrix.size <= 400 else None,
                               hovertemplate="teacher %{y} vs student %{x}: %{z:.4f} nats<extra></extra>"))
    fig.add_trace(go.Scatter(x=[s_names[s] for _, s in match.pairs], y=[t_names[t] for t, _ in match.pairs], mode="markers",
                             name="matched pair (Hungarian)", hoverinfo="skip",
                             marker={"symbol": "square-open", "size": 40 if matrix.size <= 64 else 22, "color": theme.HIGHLIGHT,
                                     "line": {"width": 3}}))
    fig.update_xaxes(title=f"student layer {student_layer} heads", type="category")
    fig.update_yaxes(title=f"teacher layer {teacher_layer} heads", type="category", autorange="reversed")
    notes = [f"best matching: mean {match.total / len(match.pairs):.3f} nats"]
    if matrix.shape[0] == matrix.shape[1]:
        notes.append(f"same-index pairing (as MiniLM assumes): {float(np.mean(np.diag(matrix))):.3f}")
    if match.unmatched_teacher:
        notes.append(f"teacher heads with no student partner: {', '.join(f'h{h}' for h in match.unmatched_teacher)}")
    if match.unmatched_student:
        notes.append(f"unmatched student heads: {', '.join(f'h{h}' for h in match.unmatched_student)}")
    title = (f"Which student head follows which teacher head (teacher L{teacher_layer} ↔ student L{student_layer}, "
             f"{data.scope})" + theme.subtitle(" · ".join(notes)))
    return theme.style(fig, title, height=max(360, 160 + 44 * matrix.shape[0]))


# ---- rollout --------------------------------------------------------------------------------------------
def rollout_view(data: AttentionData, sample: int = 0) -> go.Figure:
    """Attention rollout of both models for one sample: for a ViT the CLS token's rollout over the image, for text
    the rollout row of the CLS token (encoders) or of the last real token (causal models) over the tokens."""
    data.require_attention()
    if not data.has_exact(sample):
        fig = go.Figure()
        fig.add_annotation(text=f"Rollout multiplies every layer's exact maps, and sample {sample} has only its digest."
                                f"<br>{data.exact_note()}.", x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                           font={"size": 15, "color": theme.NEUTRAL})
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return theme.style(fig, "Attention rollout" + theme.subtitle(f"sample {sample}"), height=220, legend=False)
    r_t, r_s = data.rollout("teacher", sample), data.rollout("student", sample)
    layout, image = data.grid("teacher"), data.image(sample)
    if layout and image is not None and layout["prefix"] and data.grid("student") == layout:
        fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.07,
                            subplot_titles=("teacher rollout", "student rollout", "teacher − student"))
        overlay_pair(fig, image, _grid_map(r_t[0], layout), _grid_map(r_s[0], layout), row=1, what="rollout from CLS",
                      colorbar={"title": "share of<br>CLS input", "x": 0.635, "thickness": 12},
                      difference_colorbar={"title": "teacher −<br>student", "thickness": 12})
        what = "how much of each patch flows into the CLS token through all layers (residual 0.5, heads averaged)"
        return _finish(fig, "Attention rollout over the image" + theme.subtitle(f"sample {sample} · {what}"), height=460)
    mask = data.mask(sample)
    n_real = int(mask.sum()) if mask is not None else r_t.shape[0]
    causal = attn.is_causal(data.maps("teacher", 0, sample))
    query = n_real - 1 if causal else 0
    tokens = data.tokens(sample) or [str(i) for i in range(n_real)]
    z = np.stack([r_t[query, :n_real], r_s[query, :n_real]]).astype(np.float32)
    fig = go.Figure(go.Heatmap(z=z, y=["teacher", "student"], x=token_labels(tokens, np.arange(n_real), n_real),
                               colorscale=theme.SEQUENTIAL_SCALE, **theme.from_zero(z),
                               colorbar={"title": "rollout share", "thickness": 12},
                               hovertemplate="%{y}<br>token %{x}: %{z:.4f}<extra></extra>"))
    fig.update_xaxes(showgrid=False, type="category", tickfont={"size": 10})
    fig.update_yaxes(autorange="reversed")
    who = f"the last token «{escape_label(tokens[query])}»" if causal else f"token 0 «{escape_label(tokens[0])}»"
    title = ("Attention rollout: where the final representation of one token draws from"
             + theme.subtitle(f"sample {sample} · row of {who} · residual 0.5, heads averaged, all captured layers"))
    return theme.style(fig, title, height=300, legend=False)


# ---- CNN attention transfer -------------------------------------------------------------------------------
def at_scope(data: AttentionData) -> str:
    """Which samples the mean AT distance is over, and why when it is not all of them."""
    total = data.run.n_samples
    if data.max_samples >= total:
        return f"all {total:,} samples"
    return (f"the first {data.max_samples:,} of {total:,} samples<br>(read whole maps: capped for speed, "
            "AttentionExplorer(run, max_samples=N) reads more)")


def spatial_overlay(data: AttentionData, sample: int = 0, pairs: Sequence[tuple[str, str]] | None = None) -> go.Figure:
    """Attention-transfer maps (channel mean of |A|^p, L2-normalised) of the teacher and the student over the input
    image, one column per mapped layer pair, with the AT distance ‖Q_s − Q_t‖ on this sample and over the data."""
    pairs = list(pairs or data.spatial_pairs)
    if not pairs:
        raise MissingDataError(f"run {data.run.name!r} has no attention-transfer maps on both models; capture CNN "
                               "features with layers=[...] (4-D conv outputs) and spatial_p set")
    image = data.image(sample)
    if image is None:
        raise MissingDataError("this run stored no input thumbnails to draw the attention maps over")
    fig = make_subplots(rows=2, cols=len(pairs), vertical_spacing=0.12, horizontal_spacing=0.1,
                        row_titles=["teacher", "student"],
                        subplot_titles=[f"{short_name(t, 16)} ↔ {short_name(s, 16)}" for t, s in pairs] + [""] * len(pairs))
    notes = []
    for col, (t_name, s_name) in enumerate(pairs, start=1):
        q_t, q_s = attn.match_spatial_size(data.spatial("teacher", t_name, sample), data.spatial("student", s_name, sample))
        q_t, q_s = q_t[0].numpy(), q_s[0].numpy()
        top = float(max(q_t.max(), q_s.max(), 1e-12))
        distance = float(np.linalg.norm(q_t - q_s))
        mean = float(data.at_distances(t_name, s_name).mean())
        # one colour bar per layer pair, beside its column: both models of a pair share a scale, pairs do not (a
        # coarser map has larger cells after L2 normalisation)
        domain = fig.layout[f"xaxis{col if col > 1 else ''}"].domain
        bar = {"title": {"text": "Q", "side": "top"}, "x": domain[1] + 0.01, "xanchor": "left", "y": 0.5, "len": 0.75,
               "thickness": 10, "nticks": 4}
        for row, (q, role) in enumerate(((q_t, "teacher"), (q_s, "student")), start=1):
            overlay(fig, image, q, row=row, col=col, n_cols=len(pairs), zmax=top, showscale=row == 1, colorbar=bar,
                     label=f"{role} {escape_label(t_name if row == 1 else s_name)}")
        fig.layout.annotations[col - 1].text += f"<br><span style='font-size:11px'>AT distance {distance:.3f}</span>"
        notes.append(f"{short_name(t_name, 16)}: {mean:.3f}")
    for note in fig.layout.annotations:  # the row titles go left of the grid: the colour bars hold its right side
        if note.text in ("teacher", "student"):
            note.update(x=0, xshift=-14, xanchor="right", textangle=-90)
    title = ("Where each model looks: attention-transfer maps over the input"
             + theme.subtitle(f"sample {sample} · Q = mean<sub>c</sub> |A<sub>c</sub>|<sup>p</sup>, L2-normalised; "
                         "the smaller map is resampled to the larger")
             + theme.subtitle("mean AT distance " + ", ".join(notes) + f" over {at_scope(data)}"))
    return _finish(fig, title, height=640, width=max(600, 290 * len(pairs) + 120), top=168)
