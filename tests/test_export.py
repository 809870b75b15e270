"""``kdviz export``: one self-contained HTML file, opened in a real Chromium with every request off the page blocked."""

from __future__ import annotations

import contextlib
import re

import pytest
import torch
from browser import ARTIFACTS, offline_page, text_overlaps
from playwright.sync_api import TimeoutError as PlaywrightTimeout

import kdviz
from kdviz.cli import main
from kdviz.demo.data import load_digits
from kdviz.demo.weights import load_pair


def open_offline(path, screenshot: str | None = None, viewport: tuple[int, int] = (1280, 900),
                 overlaps: list[str] | None = None) -> tuple[dict, int, int]:
    """Load the file's HTML into a page that refuses every request; returns the log, the plots and the drawn plots.
    ``overlaps``, when given, receives every pair of text boxes that intersect in a drawn plot (`text_overlaps`)."""
    with offline_page(viewport) as (page, log):
        page.set_content(path.read_text(encoding="utf-8"), wait_until="load")
        with contextlib.suppress(PlaywrightTimeout):  # every plot drawn; if one never is, the counts below say so
            page.wait_for_function("() => document.querySelectorAll('.plotly-graph-div').length === "
                                   "document.querySelectorAll('.plotly-graph-div:has(.main-svg)').length", timeout=20_000)
        plots = page.locator(".plotly-graph-div").count()
        drawn = page.locator(".plotly-graph-div:has(.main-svg)").count()  # plots that plotly.js actually drew
        if overlaps is not None:
            overlaps.extend(text_overlaps(page))
        if screenshot:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
        return log, plots, drawn


@pytest.mark.browser
def test_export_of_the_demo_runs_opens_offline_with_every_page(explained_demo_runs, tmp_path, capsys):
    """Every view of every demo run, drawn in Chromium at 1440 px: offline, each plot drawn, and no two text boxes of
    a plot intersecting (issue 20: labels that ran into each other, colour bars over titles, ticks over ticks)."""
    out = tmp_path / "demo.html"
    assert main(["export", str(next(iter(explained_demo_runs.values())).path.parent), str(out), "--sample", "3"]) == 0
    assert "opens offline" in capsys.readouterr().out
    html = out.read_text(encoding="utf-8")
    where = str(next(iter(explained_demo_runs.values())).path.parent)
    assert where not in html and str(tmp_path) not in html  # a published export never says where the runs lay
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=", html)  # plotly.js is inlined, nothing else is loaded
    overlaps: list[str] = []
    log, plots, drawn = open_offline(out, "export-demo.png", viewport=(1440, 900), overlaps=overlaps)
    assert log["blocked"] == [] and log["console_errors"] == [] and log["dialogs"] == []
    assert overlaps == [], "text that collides:\n" + "\n".join(overlaps)
    # every explorer's figures(): overview 1 (summary card), logits 4 (summary, histogram, drill-down, class view; the
    # language models 3: no classes), tokens 2 for charlm (strip, token map), 3 for cross-tokenizer (and the two
    # tokenizations) and 5 for on-policy (and the drift and the fork), attention 1 for the CNN (attention-transfer
    # overlay) or 3 (grid, pair, layer map), features 5, attribution 5 (4 for charlm: no class logits, so no scatter);
    # the two runs of two tokenizers have no attention, features or attributions; training 2 (curves, teacher hacking)
    # for digits-cnn, the run with history.
    # digits-cnn 18, digits-vit 18, charlm 18, on-policy 9, cross-tokenizer 7
    assert plots == drawn == 70
    for name in explained_demo_runs:
        assert f"<h2>{name}</h2>" in html
    # four runs have no training history, the two image runs have no tokens, the two runs of two tokenizers no
    # attention, features or attributions: each page says how to capture what it lacks (4 + 2 + 3 + 3)
    assert html.count("class='kd-missing'") == 12


@pytest.mark.browser
def test_export_escapes_run_text_and_filters_pages(tmp_path):
    digits = load_digits()
    teacher, student, _ = load_pair("cnn")
    names = ["<script>alert(1)</script>", *digits.class_names[1:]]
    run = kdviz.capture(teacher, student, (digits.x_test[:60], digits.y_test[:60]), path=tmp_path / "x<b>.kdviz",
                        class_names=names, progress=False)
    out = tmp_path / "x.html"
    assert main(["export", str(run.path), str(out), "--pages", "overview", "logits"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html and "<h2>x<b></h2>" not in html and "<h2>x&lt;b&gt;</h2>" in html
    log, plots, drawn = open_offline(out)
    assert log["dialogs"] == [] and log["console_errors"] == [] and plots == drawn == 5  # overview 1, logits 4
    assert main(["export", str(run.path), str(out), "--pages", "everything"]) == 2
    assert main(["export", str(run.path), str(out), "--sample", "60"]) == 2
    assert torch.equal(torch.tensor(run.labels[:]), digits.y_test[:60])  # export never writes into the run
    assert not run.has("cache")


@pytest.mark.parametrize("page", ["features"])
def test_export_never_writes_into_the_run(demo_runs, tmp_path, page):
    run = demo_runs["digits-cnn"]
    before = sorted(p.relative_to(run.path) for p in run.path.rglob("*"))
    assert main(["export", str(run.path), str(tmp_path / "f.html"), "--pages", page]) == 0
    assert sorted(p.relative_to(run.path) for p in run.path.rglob("*")) == before


def test_export_draws_the_logit_explorer_with_the_chosen_measure(demo_runs, tmp_path):
    run = demo_runs["digits-cnn"]
    out = tmp_path / "renyi.html"
    assert main(["export", str(run.path), str(out), "--pages", "logits", "--measure", "renyi", "--alpha", "2", "--T", "3"]) == 0
    html = out.read_text(encoding="utf-8")
    assert "nyi D_2(p_t" in html and "at T=3 (nats)" in html  # the histogram's axis: Rényi of order 2 at T=3
    assert main(["export", str(run.path), str(out), "--measure", "nonsense"]) == 2  # one line, the choices in it
    assert main(["export", str(run.path), str(out), "--measure", "renyi", "--alpha", "-1"]) == 2


def test_a_failing_view_fails_the_export_instead_of_reading_as_missing_data(demo_runs, tmp_path, monkeypatch):
    from kdviz.app.export import export_html
    from kdviz.views import logits as logit_views

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in a view")

    monkeypatch.setattr(logit_views, "summary_card", broken)
    with pytest.raises(RuntimeError, match="a bug in a view"):
        export_html([demo_runs["digits-cnn"].path], tmp_path / "x.html", pages=["logits"])
    assert not (tmp_path / "x.html").exists()


@pytest.mark.browser
def test_the_overlap_check_finds_text_drawn_over_text(tmp_path):
    """The check of the export test sees two labels printed over each other, and leaves apart ones alone."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1]))
    fig.add_annotation(x=0.5, y=0.5, text="median 0.280", showarrow=False)
    fig.add_annotation(x=0.52, y=0.5, text="mean 0.285", showarrow=False)  # on top of the first
    fig.add_annotation(x=0.1, y=0.9, text="far away", showarrow=False)
    out = tmp_path / "overlap.html"
    fig.write_html(out, include_plotlyjs=True)
    overlaps: list[str] = []
    open_offline(out, overlaps=overlaps)
    assert len(overlaps) == 1 and "median 0.280" in overlaps[0] and "mean 0.285" in overlaps[0]



def test_an_export_embeds_plotlyjs_compressed_and_its_figures_in_single_precision():
    """plotly.js goes in gzip-compressed (unpacked in the page, as the browser tests above draw it), and a figure's
    float64 arrays go in as float32 base64 without plotly's six-character escape of each "/": the demo export fell
    from 10.1 MB to 4.8 MB. Nothing in a figure's JSON can close its script, and a run's text comes back unchanged."""
    import base64
    import gzip
    import json

    import numpy as np
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    from kdviz.app.embed import figure_json, packed_plotlyjs

    plotlyjs = get_plotlyjs()
    packed = packed_plotlyjs()
    assert gzip.decompress(base64.b64decode(packed)).decode("utf-8") == plotlyjs
    assert len(packed) < 0.45 * len(plotlyjs)
    z = np.random.default_rng(0).normal(size=(64, 64))
    label = "</script><script>alert(1)</script> \\u002f and a / slash"
    text = figure_json(go.Figure(go.Heatmap(z=z, text=[[label]], name=label), layout={"title": {"text": label}}))
    assert "<" not in text and "\\u002f" not in text.split('"bdata":"')[1].split('"')[0]
    decoded = json.loads(text)
    spec = decoded["data"][0]["z"]
    assert spec["dtype"] == "f4"
    values = np.frombuffer(base64.b64decode(spec["bdata"]), dtype="<f4").reshape(64, 64)
    np.testing.assert_array_equal(values, z.astype(np.float32))
    assert decoded["data"][0]["name"] == label and decoded["layout"]["title"]["text"] == label
    assert len(text) < 0.55 * len(go.Figure(go.Heatmap(z=z)).to_html(full_html=False, include_plotlyjs=False))
