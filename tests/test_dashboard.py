"""The dashboard's pages, run in-process (the browser tests drive the served app): every page of every demo run
draws from views, the sample is linked across pages, missing data is a notice, and the run is never written."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from conftest import TinyCNN

import kdviz
from kdviz.app.dashboard import Dashboard
from kdviz.errors import InputError
from kdviz.explore.library import RunLibrary
from kdviz.metrics import logits as lm


def tree_digest(path) -> str:
    """A digest of every file's name and bytes under a run: any write changes it."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def notices(page) -> list[str]:
    return [str(o.object) for o in page.view.objects if "kd-notice" in str(getattr(o, "object", ""))]


@pytest.fixture(scope="module")
def dashboard(explained_demo_runs):
    return Dashboard(RunLibrary(list(explained_demo_runs.values())))


def open_page(board: Dashboard, title: str):
    board.tabs.active = list(board.pages).index(title)
    return board.pages[title]


EXPECTED = {  # figures each page draws for each demo run
    "Logits": {"summary", "histogram", "detail"},
    "Attention": {"charlm": {"grid", "pair", "bottom"}, "digits-vit": {"grid", "pair", "bottom"}, "digits-cnn": {"spatial"}},
    "Features": {"cka", "within", "projection", "relations", "scores"},
    "Attribution": {"pair", "histogram", "overview", "classes"},
}


@pytest.mark.parametrize("name", ["charlm", "digits-cnn", "digits-vit"])
def test_every_page_draws_for_every_demo_run_without_writing(dashboard, explained_demo_runs, name):
    before = tree_digest(explained_demo_runs[name].path)
    dashboard.show_run(name)
    for title, expected in EXPECTED.items():
        page = open_page(dashboard, title)
        want = expected[name] if isinstance(expected, dict) else expected
        assert want <= set(page.figures()), (title, name, set(page.figures()), notices(page))
        assert not notices(page), (title, notices(page))
    training = open_page(dashboard, "Training")
    if name == "digits-cnn":  # the demo's distilled run: its curves and the teacher-hacking plot
        assert set(training.figures()) == {"curves", "hacking"} and not notices(training)
    else:  # no history: the page says how to record one
        assert any("kdviz.distill" in text for text in notices(training))
    assert tree_digest(explained_demo_runs[name].path) == before


def test_a_sample_picked_on_one_page_is_shown_on_every_page(dashboard):
    dashboard.show_run("digits-vit")
    logits = open_page(dashboard, "Logits")
    values = logits.values
    # clicking a histogram bar: plotly sends the bar's point numbers; the page opens that bar's most divergent sample
    finite = logits.visible[np.isfinite(values[logits.visible])]
    top_bar = np.flatnonzero(values[finite] >= np.quantile(values[finite], 0.98))
    logits.panes["histogram"].click_data = {"points": [{"curveNumber": 0, "pointNumbers": top_bar.tolist()}]}
    expected = int(finite[top_bar][np.argmax(values[finite[top_bar]])])
    assert dashboard.selection.sample == expected
    assert f"Sample {expected}:" in logits.figures()["detail"].layout.title.text
    assert dashboard.sample_input.value == expected  # the header follows
    assert set(logits.samples.options.values()) == set(finite[top_bar].tolist())  # the list shows that bar
    attention = open_page(dashboard, "Attention")  # hidden while the sample changed: it catches up when opened
    assert f"sample {expected}" in attention.figures()["pair"].layout.title.text
    attribution = open_page(dashboard, "Attribution")
    assert f"sample {expected}" in attribution.figures()["pair"].layout.title.text


def test_temperature_changes_the_plotted_divergence(dashboard):
    dashboard.show_run("digits-cnn")
    logits = open_page(dashboard, "Logits")
    z_t, z_s = logits.logit_data.require_logits()
    for T in (1.0, 8.0):
        dashboard.selection.T = T
        np.testing.assert_allclose(logits.values, lm.kl(z_t, z_s, T), rtol=1e-12)
        histogram = logits.figures()["histogram"]
        plotted = np.asarray(histogram.data[0].x)
        if "log scale" in histogram.layout.xaxis.title.text:  # heavy-tailed values are drawn as log₁₀, in order
            plotted = 10.0 ** plotted
        np.testing.assert_allclose(np.sort(plotted), np.sort(lm.kl(z_t, z_s, T)), rtol=1e-12)


def test_choosing_a_teacher_head_updates_the_pair_and_the_following_student(dashboard):
    dashboard.show_run("digits-vit")
    attention = open_page(dashboard, "Attention")
    attention.head["teacher"].value = 2
    title = attention.figures()["pair"].layout.annotations[0].text
    assert "head 2" in title
    assert attention.selected("student") == attention.attention.follow(attention.selected("teacher")[0], 2)
    # a click on the grid's marker of student layer 0 head 1 opens it
    attention.panes["grid"].click_data = {"points": [{"curveNumber": 3, "customdata": [0, 1], "x": 0, "y": 0}]}
    assert attention.selected("student") == (0, 1)


def test_runs_are_opened_by_served_name_only(demo_runs):
    library = RunLibrary([demo_runs["digits-cnn"]])
    with pytest.raises(InputError, match="no run named"):
        library.run("../../etc/passwd")
    board = Dashboard(library, run="/etc/passwd", sample=10**9)  # ?run= and ?sample= cannot escape either
    assert board.selection.run == "digits-cnn" and board.selection.sample == demo_runs["digits-cnn"].n_samples - 1


def test_two_students_of_one_teacher_are_compared_on_the_overview(tmp_path):
    torch.manual_seed(0)
    teacher, x = TinyCNN(8, n_classes=3), torch.randn(40, 1, 8, 8)
    y = torch.randint(0, 3, (40,))
    runs = [kdviz.capture(teacher, TinyCNN(width, n_classes=3), (x, y), path=tmp_path / f"s{width}.kdviz",
                          names=("teacher", f"student-{width}"), progress=False) for width in (2, 4)]
    board = Dashboard(RunLibrary(runs))
    overview = open_page(board, "Overview")
    html = "".join(str(getattr(o, "object", "")) for o in overview.view.objects)
    assert "Students of the same teacher" in html and "student-2" in html and "student-4" in html
    agreement = lm.topk_agreement(runs[1].teacher.logits[:], runs[1].student.logits[:], k=1)["top1"].mean()
    assert f"{100 * agreement:.1f}%" in html


def test_a_run_with_training_history_shows_its_curves_and_steps(tmp_path, digits):
    from kdviz.demo.models import DigitsCNN

    torch.manual_seed(0)
    teacher, student = DigitsCNN((8, 8, 8)), DigitsCNN((4, 4, 4))
    kdviz.distill(teacher, student, (digits.x_train[:96], digits.y_train[:96]), epochs=2, batch_size=32,
                  record=tmp_path / "hist.kdviz", probe=(digits.x_test[:48], digits.y_test[:48]), progress=False)
    board = Dashboard(RunLibrary.from_paths([tmp_path / "hist.kdviz"]))
    steps = board.library.run("hist").steps
    assert board.step_menu.visible and list(board.step_menu.options.values()) == steps
    training = open_page(board, "Training")
    assert "curves" in training.figures() and not notices(training)
    board.selection.step = steps[0]  # every page shows the run as it was then
    logits = open_page(board, "Logits")
    np.testing.assert_allclose(logits.logit_data.z_s, board.library.run("hist").at_step(steps[0]).student.logits[:])


def test_discrete_controls_are_handled_at_once_and_sliders_stay_merged(dashboard):
    """Panel waits 50 ms after each browser change (to merge a dragged slider's bursts): the header's menus and
    sample box, the explorers' menus and buttons, and clicks on plots skip that wait; sliders keep it."""
    dashboard.show_run("digits-vit")
    attention, logits = open_page(dashboard, "Attention"), open_page(dashboard, "Logits")
    at_once = [dashboard.run_menu, dashboard.sample_input, attention.head["teacher"], attention.layer["student"],
               attention.summary_menu, attention.bottom_buttons, attention.follow_box]
    for widget in at_once:
        assert "value" in widget._priority_changes or "active" in widget._priority_changes, widget
    for pane in (*attention.panes.values(), *logits.panes.values()):
        assert {"click_data", "relayout_data"} <= set(pane._priority_changes)
    for slider in (logits.alpha_slider, logits.temperature._slider, attention.window_slider):
        assert not slider._priority_changes, slider


def test_the_tokens_page_of_the_on_policy_run_shows_the_drift_and_the_open_pairs_fork(dashboard):
    from kdviz.demo.build import demo_prompts
    from kdviz.text import escape_label

    dashboard.show_run("on-policy")
    tokens = open_page(dashboard, "Tokens")
    assert {"strip", "token_map", "drift", "fork"} <= set(tokens.figures()) and not notices(tokens)
    drift = tokens.figures()["drift"]
    assert [trace.name.split(":")[0] for trace in drift.data] == ["on-policy", "off-policy"]
    dashboard.selection.sample = 7  # the teacher's continuation of the fourth prompt
    assert escape_label(demo_prompts()[3][-80:]) in tokens.figures()["fork"].layout.title.text
    labels = {index: label for label, index in tokens.samples.options.items()}  # the open text is always listed
    assert "off-policy" in labels[7] and all("on-policy" in labels[i] for i in labels if i % 2 == 0)


def test_a_dragged_slider_redraws_once_when_released(dashboard, explained_demo_runs):
    """A served session throttles its sliders: while the temperature is dragged the browser's values are ignored,
    and the value at release is drawn (a drag from T = 4 to 20 had redrawn the page at every step)."""
    import panel as pn

    from kdviz.app.dashboard import session_app

    before = pn.config.throttled
    try:
        session_app(RunLibrary([explained_demo_runs["digits-cnn"]]))
        assert pn.config.throttled
        dashboard.show_run("digits-cnn")
        logits = open_page(dashboard, "Logits")
        dashboard.selection.T = 4.0
        slider = logits.temperature._slider  # the index slider a browser drags
        options = list(logits.temperature.options.values())
        drawn = logits.figures()["histogram"]
        slider._process_events({"value": options.index(8.0)})  # mid-drag: nothing happens
        assert dashboard.selection.T == 4.0 and logits.figures()["histogram"] is drawn
        slider._process_events({"value_throttled": options.index(20.0)})  # released at 20
        assert dashboard.selection.T == 20.0 and logits.figures()["histogram"] is not drawn
    finally:
        pn.config.throttled = before


def test_each_page_hands_its_controls_to_the_sidebar_which_shows_only_the_open_pages(dashboard):
    """The sidebar holds the run, step and sample menus and, under them, the open page's own controls; the page
    itself holds only its figures and notes. A notebook explorer shows the same controls above its figures."""
    import panel as pn

    from kdviz.explore import LogitExplorer

    dashboard.show_run("digits-cnn")
    logits = open_page(dashboard, "Logits")
    sidebar = dashboard.layout.objects[0]
    assert logits.controls in sidebar.objects and logits.temperature in logits.controls.objects
    assert logits.samples in logits.controls.objects and logits.measure_menu in logits.controls.objects
    assert not [w for w in logits.view.select(pn.widgets.Widget) if w in (logits.temperature, logits.samples)]
    shown = [page.title for page in dashboard.pages.values() if page.controls.visible]
    assert shown == ["Logits"]
    open_page(dashboard, "Features")
    dashboard._tab_changed()
    assert [page.title for page in dashboard.pages.values() if page.controls.visible] == ["Features"]
    notebook = LogitExplorer(dashboard.library.run("digits-cnn"))
    assert notebook.controls in notebook._layout.objects and notebook.temperature in notebook.controls.objects
    # in a notebook they wrap across the output's width; in the dashboard they stack in the sidebar's column
    assert isinstance(notebook.controls, pn.FlexBox) and notebook.controls.flex_wrap == "wrap"
    assert isinstance(logits.controls, pn.Column) and not isinstance(logits.controls, pn.FlexBox)
