"""The visual language (`kdviz.views.theme`, written down in docs/visual-language.md), checked on every figure every
explorer draws for every demo run: the role colours mark only the teacher and the student, classes wear one palette,
pair measures are neutral, and heavy-tailed histograms are binned by log₁₀ with their marks in the legend."""

from __future__ import annotations

import re

import numpy as np
import panel as pn
import plotly.graph_objects as go
import pytest

from kdviz.app.export import explorer_figures
from kdviz.errors import KdvizError
from kdviz.explore import EXPLORERS, RunLibrary, Selection
from kdviz.views import logits as logit_views
from kdviz.views import scales, theme

ROLE = {theme.TEACHER.lower(): "teacher", theme.STUDENT.lower(): "student"}


def _colours(value) -> list[str]:
    """The colour strings in a trace property: one string, or a list of them (per-bar colours)."""
    if isinstance(value, str):
        return [value.lower()]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [v.lower() for v in value if isinstance(v, str)]
    return []


def _scale_colours(scale) -> list[str]:
    return [str(colour).lower() for _, colour in scale] if isinstance(scale, (list, tuple)) else []


def role_colour_misuses(fig: go.Figure) -> list[str]:
    """Each place ``fig`` wears a role colour for something its own words do not say is that model: a trace whose name
    and hover text never name the role, a colour scale holding a role colour with no teacher and student in its
    trace's words, an annotation or a table header cell in a role colour that does not name it."""
    found = []
    for trace in fig.data:
        plotly = trace.to_plotly_json()
        words = " ".join(str(plotly.get(key, "")) for key in ("name", "legendgroup", "hovertemplate", "text")).lower()
        words += " " + str(plotly.get("colorbar", {}).get("title", "")).lower()
        colours = []
        for part in ("marker", "line", "textfont"):
            colours += _colours(plotly.get(part, {}).get("color"))
            colours += _colours(plotly.get(part, {}).get("line", {}).get("color"))
        colours += _colours(plotly.get("fillcolor"))
        for colour in colours:
            if colour in ROLE and ROLE[colour] not in words:
                found.append(f"{trace.type} {plotly.get('name')!r} is {ROLE[colour]} coloured")
        scale = _scale_colours(plotly.get("colorscale"))
        if any(colour in ROLE for colour in scale) and not ("teacher" in words and "student" in words):
            found.append(f"{trace.type} {plotly.get('name')!r} has a colour scale in role colours")
        if trace.type == "table":
            header = trace.header
            for value, colour in zip(header.values, _colours(header.font.color), strict=False):
                if colour in ROLE and ROLE[colour] not in str(value).lower():
                    found.append(f"table header {value!r} is {ROLE[colour]} coloured")
    for note in fig.layout.annotations:
        colour = (note.font.color or "").lower() if note.font else ""
        if colour in ROLE and ROLE[colour] not in (note.text or "").lower():
            found.append(f"annotation {note.text!r} is {ROLE[colour]} coloured")
    return found


@pytest.fixture(scope="module")
def every_figure(explained_demo_runs) -> dict[str, go.Figure]:
    """Every figure of every explorer for every demo run, as the dashboard and the export draw them: {label: figure}."""
    runs = list(explained_demo_runs.values())
    library = RunLibrary(runs)
    figures = {}
    for run in runs:
        for kind in EXPLORERS:
            selection = Selection.for_run(run, library.names, sample=3)
            try:
                drawn = explorer_figures(kind, library, selection, {})
            except KdvizError:  # the page says what the run lacks
                continue
            for i, fig in enumerate(drawn):
                figures[f"{run.name} / {kind.title} #{i}: {(fig.layout.title.text or '')[:50]}"] = fig
    return figures


@pytest.mark.slow
def test_role_colours_mark_only_the_teacher_and_the_student_on_every_page(every_figure):
    assert len(every_figure) >= 60
    found = [f"{label}: {problem}" for label, fig in every_figure.items() for problem in role_colour_misuses(fig)]
    assert found == [], "\n".join(found)


def test_the_role_colour_check_sees_a_misuse():
    wrong = go.Figure(go.Histogram(x=[1, 2], name="samples", marker={"color": theme.STUDENT}))
    wrong.add_annotation(text="mean", font={"color": theme.TEACHER})
    wrong.add_trace(go.Heatmap(z=[[0, 1]], colorscale=theme.DIFFERENCE_SCALE, name="CKA"))
    assert len(role_colour_misuses(wrong)) == 3
    right = go.Figure(go.Bar(x=[1], y=[1], name="student", marker={"color": theme.STUDENT}))
    right.add_trace(go.Heatmap(z=[[0, 1]], colorscale=theme.DIFFERENCE_SCALE, hovertemplate="teacher − student"))
    assert role_colour_misuses(right) == []


def test_classes_wear_one_palette_that_holds_neither_role_colour():
    palette = [c.lower() for c in theme.CLASS_COLOURS]
    assert not set(palette) & set(ROLE)
    assert len(set(palette)) == len(palette) == 10
    assert [theme.class_colour(i) for i in (0, 2, 12)] == [theme.CLASS_COLOURS[0], theme.CLASS_COLOURS[2], theme.CLASS_COLOURS[2]]


@pytest.mark.slow
def test_class_two_has_the_same_colour_on_the_features_and_the_attribution_page(every_figure):
    def colour_of_class(fig: go.Figure, name: str) -> set[str]:
        """The colours of the traces of class ``name`` (the projection has one per model: "2 · teacher", …)."""
        return {trace.marker.color for trace in fig.data if (trace.legendgroup or trace.name) == name
                and isinstance(trace.marker.color, str)}

    projection = next(fig for label, fig in every_figure.items() if label.startswith("digits-cnn / Features")
                      and "projection" in (fig.layout.title.text or ""))
    scatter = next(fig for label, fig in every_figure.items() if label.startswith("digits-cnn / Attribution")
                   and "Same answer" in (fig.layout.title.text or ""))
    assert colour_of_class(projection, "2") == colour_of_class(scatter, "2") == {theme.class_colour(2)}


def test_heavy_tailed_values_are_binned_by_log10_and_uniform_ones_are_not():
    rng = np.random.default_rng(0)
    heavy = rng.lognormal(-3, 2, size=500)
    assert scales.heavy_tailed(heavy, 60)
    assert not scales.heavy_tailed(rng.uniform(0, 1, size=500), 60)
    assert not scales.heavy_tailed(rng.normal(size=500), 60)  # negative values: no log axis
    fig = logit_views.divergence_histogram(heavy, selected=7)
    np.testing.assert_allclose(fig.data[0].x, np.log10(heavy))  # in order: a clicked bar's pointNumbers still index them
    assert "log scale" in fig.layout.xaxis.title.text
    ticks = np.asarray(fig.layout.xaxis.tickvals, dtype=float)
    labels = [float(text) for text in fig.layout.xaxis.ticktext]
    np.testing.assert_allclose(np.log10(labels), ticks, rtol=0, atol=2e-3)  # each tick names the value it sits at
    assert ticks.min() >= np.log10(heavy).min() - 1e-9 and ticks.max() <= np.log10(heavy).max() + 1e-9
    linear = logit_views.divergence_histogram(rng.uniform(0, 1, size=500))
    assert "log" not in linear.layout.xaxis.title.text and linear.layout.xaxis.tickvals is None


def test_zeros_on_a_log_axis_are_drawn_at_the_smallest_value_and_said_so():
    values = np.concatenate([np.zeros(5), np.random.default_rng(1).lognormal(-4, 2, size=200)])
    fig = logit_views.divergence_histogram(values, log_x=True)
    assert np.isclose(fig.data[0].x.min(), np.log10(values[values > 0].min()))
    assert "5 zeros drawn at" in fig.layout.xaxis.title.text


def test_histogram_marks_are_named_in_the_legend_never_printed_on_the_plot():
    values = np.random.default_rng(2).gamma(2.0, size=300)
    fig = logit_views.divergence_histogram(values, selected=4, log_x=False)
    assert len(fig.layout.annotations) == 0
    legend = {trace.name: trace.line for trace in fig.data if trace.showlegend is not False and trace.type == "scatter"}
    assert set(legend) == {f"mean {values.mean():.3g}", f"median {np.median(values):.3g}", f"sample 4: {values[4]:.3g}"}
    lines = {shape.line.dash or "solid": shape.x0 for shape in fig.layout.shapes}
    np.testing.assert_allclose([lines["dash"], lines["dot"], lines["solid"]], [values.mean(), np.median(values), values[4]])
    assert fig.data[0].marker.color == theme.PAIR_FILL  # a measure of the pair: neither model's colour


def test_the_drill_down_keeps_its_probability_axis_as_t_rises():
    z_t, z_s = np.array([6.0, 2.0, 1.0, 0.0]), np.array([4.0, 3.0, 0.5, 0.0])
    for T in (1.0, 4.0, 20.0):
        fig = logit_views.sample_drilldown(z_t, z_s, T=T, target=0)
        assert tuple(fig.layout.yaxis.range) == (0, 1.0)
        assert max(max(trace.y) for trace in fig.data if trace.type == "bar") <= 1.0
    assert logit_views.sample_drilldown(z_t, z_s, T=20.0, fixed_axis=False).layout.yaxis.range is None


@pytest.mark.slow
def test_divergence_and_similarity_scales_start_at_zero_on_every_page(every_figure):
    """A divergence scale is anchored at 0 (white means none), with both ends given: plotly ignores a zmin given
    alone and stretches the scale from the data's minimum."""
    found = []
    for label, fig in every_figure.items():
        for trace in fig.data:
            if trace.type != "heatmap" or not isinstance(trace.colorscale, tuple):
                continue
            scale = [list(step) for step in trace.colorscale]
            if scale in (theme.DIVERGENCE_SCALE, theme.SEQUENTIAL_SCALE) and not (
                    trace.zmin is not None and trace.zmin <= 0 and trace.zmax is not None):
                found.append(f"{label}: zmin {trace.zmin}, zmax {trace.zmax}")
    assert found == [], "\n".join(found)


def test_from_zero_gives_both_ends_of_the_scale():
    assert theme.from_zero(np.array([[0.43, 0.7], [np.nan, 0.5]])) == {"zmin": 0.0, "zmax": 0.7}
    assert theme.from_zero(np.zeros(3)) == {"zmin": 0.0, "zmax": 1.0}


# ---- presentation mode (`theme.presented`): text a lecture hall can read ----
FONT_PARTS = {"font", "tickfont", "textfont", "insidetextfont", "outsidetextfont", "titlefont"}


def text_sizes_under(node, floor: float, where: str = "") -> list[str]:
    """Every font size under a figure's JSON below ``floor`` px: font dicts, inline ``font-size:Npx`` in texts, and
    sub- or superscripts whose text has no size of its own (plotly draws them at 70 % of the text around them)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in FONT_PARTS and isinstance(value, dict) and isinstance(value.get("size"), (int, float)) \
                    and value["size"] < floor:
                found.append(f"{where}.{key} {value['size']} px")
            found += text_sizes_under(value, floor, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += text_sizes_under(value, floor, f"{where}[{i}]")
    elif isinstance(node, str):
        found += [f"{where} «{node[:40]}» {size} px" for size in re.findall(r"font-size:\s*([\d.]+)px", node)
                  if float(size) < floor]
        found += [f"{where} «{node[:40]}» a bare <{tag}>" for tag, inner in re.findall(r"<(sub|sup)>(.*?)</\1>", node)
                  if "font-size" not in inner]
    return found


@pytest.mark.slow
def test_presented_figures_hold_no_text_under_18_px_on_every_page(every_figure):
    for label, fig in every_figure.items():
        before, json_before = fig.to_plotly_json(), fig.to_json()
        shown = theme.presented(fig).to_plotly_json()
        assert fig.to_json() == json_before, f"{label}: presented changed the figure it was given"
        assert shown["layout"]["font"]["size"] >= 18, label  # ticks and texts without a size of their own
        assert text_sizes_under(shown, 18) == [], f"{label}: {text_sizes_under(shown, 18)[:5]}"
        if (before["layout"].get("title") or {}).get("text"):
            assert shown["layout"]["title"]["font"]["size"] >= 24, label
        assert shown["layout"]["height"] > (before["layout"].get("height") or 450), label


def test_the_text_size_check_sees_small_text_and_bare_subscripts():
    fig = theme.style(go.Figure(go.Scatter(x=[0, 1], y=[1, 0], mode="lines")), "a" + theme.subtitle("Q = mean<sub>c</sub>"))
    fig.add_annotation(x=0, y=0, text="n=4", font={"size": 11})
    small = text_sizes_under(fig.to_plotly_json(), 18)
    assert any("12" in line for line in small) and any("<sub>" in line for line in small) and any("11 px" in line for line in small)
    shown = theme.presented(fig).to_plotly_json()
    assert text_sizes_under(shown, 18) == []
    assert shown["data"][0]["line"]["width"] == pytest.approx(2 * theme.PRESENT_LINES)  # plotly's 2 px, thicker
    assert "<sub><span style='font-size:18px'>c</span></sub>" in shown["layout"]["title"]["text"]


def test_views_size_their_cells_for_the_text_they_are_drawn_at():
    assert theme.text_px() == theme.FONT_SIZE
    with theme.drawing_for(True):
        assert theme.presenting() and theme.text_px() == theme.PRESENT_TEXT
        with theme.drawing_for(False):
            assert not theme.presenting()
    assert not theme.presenting()
    theme.present()
    try:
        assert theme.presenting()
        with theme.drawing_for(False):  # a served session that asked for ?present=0 in a presenting process
            assert not theme.presenting()
    finally:
        theme.present(False)
    assert not theme.presenting()


def test_an_explorer_in_presentation_mode_draws_every_figure_for_projection(demo_runs):
    from kdviz.explore import LogitExplorer

    plain = LogitExplorer(demo_runs["digits-cnn"])
    import kdviz.theme

    kdviz.theme.present()
    try:
        presented = LogitExplorer(demo_runs["digits-cnn"])
    finally:
        kdviz.theme.present(False)
    assert presented.present and not plain.present
    assert presented.figures().keys() == plain.figures().keys()
    for key, pane in presented.panes.items():
        if pane.object is None:
            continue
        assert text_sizes_under(pane.object.to_plotly_json(), 18) == [], key
        assert text_sizes_under(plain.panes[key].object.to_plotly_json(), 18) != [], key  # the plain one is not
    # figures() stays what a paper takes (`kdviz export`, save_figure): the figure as designed
    assert all(text_sizes_under(fig.to_plotly_json(), 18) for fig in presented.figures().values())
    html = [pane for pane in presented._layout.select(pn.pane.HTML)]
    assert html and all(theme.PRESENT_CSS in pane.stylesheets for pane in html)


def see_through_maps(fig: go.Figure) -> list[str]:
    """Heatmaps whose colour scale is partly transparent: a map blended onto what lies under it."""
    found = []
    for trace in fig.data:
        if trace.type != "heatmap" or not isinstance(trace.colorscale, (list, tuple)):
            continue
        for _, colour in trace.colorscale:
            alpha = re.fullmatch(r"rgba\([^,]+,[^,]+,[^,]+,\s*([\d.]+)\)", str(colour))
            if alpha and float(alpha.group(1)) < 1:
                found.append(f"{trace.name or trace.hovertemplate[:30]!r} is see-through ({colour})")
                break
    return found


def maps_without_a_colour_bar(fig: go.Figure) -> list[str]:
    """Groups of heatmaps drawn on one scale (colour scale and range) of which none shows its colour bar. Maps that
    carry their values as text in every cell, the head grid's thumbnails (each scaled to its own maximum, said in the
    title) and the input picture itself need none."""
    groups: dict[str, list] = {}
    for trace in fig.data:
        if trace.type != "heatmap" or trace.texttemplate or (trace.name or "").endswith(" grid") \
                or trace.name == "input image":
            continue
        key = f"{trace.colorscale}|{trace.zmin}|{trace.zmax}|{trace.coloraxis}"
        groups.setdefault(key, []).append(trace)
    return [f"{len(traces)} map(s) like {traces[0].hovertemplate and traces[0].hovertemplate[:40]!r}"
            for traces in groups.values() if not any(t.showscale is not False for t in traces)
            and not any(t.coloraxis for t in traces)]


@pytest.mark.slow
def test_no_map_is_blended_onto_the_input_and_every_map_has_a_colour_bar(every_figure):
    found = [f"{label}: {problem}" for label, fig in every_figure.items()
             for problem in see_through_maps(fig) + maps_without_a_colour_bar(fig)]
    assert found == [], "\n".join(found)
    outlined = [fig for label, fig in every_figure.items() if "attention-transfer" in label]
    assert outlined and all(any(t.type == "contour" for t in fig.data) for fig in outlined)


def test_the_map_checks_see_a_blended_map_and_a_missing_colour_bar():
    fig = go.Figure(go.Heatmap(z=[[0, 1]], colorscale=[[0, "rgba(255, 170, 0, 0)"], [1, "rgba(232, 89, 12, 0.6)"]],
                               showscale=False, hovertemplate="over the image"))
    assert see_through_maps(fig) and maps_without_a_colour_bar(fig)
    shown = go.Figure(go.Heatmap(z=[[0, 1]], colorscale=theme.SEQUENTIAL_SCALE))
    assert not see_through_maps(shown) and not maps_without_a_colour_bar(shown)


def test_long_category_ticks_break_in_two_and_subtitles_keep_their_style_on_every_line():
    """A figure half the page wide: a long tick label breaks at the space nearest its middle, a short one stays, and
    each line of a subtitle is its own grey span (plotly does not carry a span's style past a line break)."""
    assert theme.two_lines("Spearman rank correlation") == "Spearman rank<br>correlation"
    assert theme.two_lines("cosine") == "cosine" and theme.two_lines("top-10%-IoU-overlap") == "top-10%-IoU-overlap"
    lines = theme.subtitle("first line<br>second line")
    assert lines.count("<span style='font-size:12px") == 2 and lines.count("<br>") == 2
    assert theme.top_margin("Title" + lines, legend=False) > theme.top_margin("Title" + theme.subtitle("one"), legend=False)


def test_presentation_mode_leaves_room_for_a_colour_bars_ticks():
    heatmap = theme.style(go.Figure(go.Heatmap(z=[[0, 1], [1, 0]])), "a map", legend=False)
    bars = theme.style(go.Figure(go.Bar(x=[1, 2], y=[3, 4])), "bars", legend=False)
    assert theme.presented(heatmap).layout.margin.r >= theme.PRESENT_BAR_MARGIN
    assert theme.presented(bars).layout.margin.r < theme.PRESENT_BAR_MARGIN
    hidden = theme.style(go.Figure(go.Heatmap(z=[[0, 1]], showscale=False)), "no bar", legend=False)
    assert theme.presented(hidden).layout.margin.r < theme.PRESENT_BAR_MARGIN


def test_set_layout_is_update_layout_whole_or_merged():
    """`theme.set_layout` assigns a property not set yet whole and merges one already set, as update_layout does."""
    import plotly.graph_objects as go

    from kdviz.views import theme

    values = theme.style_layout("a title<br>its subtitle", height=380, legend=True)
    for before in ({}, {"title": {"text": "old", "font": {"color": "red"}}, "margin": {"l": 5}, "height": 100}):
        merged = go.Figure(go.Scatter(x=[1], y=[2]), layout=before).update_layout(values)
        fast = theme.set_layout(go.Figure(go.Scatter(x=[1], y=[2]), layout=before), values)
        assert fast.to_plotly_json() == merged.to_plotly_json()
    assert fast.layout.title.font.color == "red" and fast.layout.title.text == "a title<br>its subtitle"
