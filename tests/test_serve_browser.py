"""`kdviz serve` in a real headless Chromium: the Overview shows each run's models and accuracies, offline, escaped."""

from __future__ import annotations

import torch
from browser import ARTIFACTS, kdviz_server, offline_page, require_chromium
from conftest import TinyCNN

import kdviz

XSS = "<script>alert(1)</script>"


def test_overview_shows_each_runs_accuracies_offline(demo_runs):
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    runs = [demo_runs[name] for name in ("charlm", "digits-cnn", "digits-vit")]
    with kdviz_server(*(run.path for run in runs)) as url, offline_page() as (page, log):
        page.goto(url)
        for run in runs:
            page.locator(".bk-tab", has_text=run.name).first.click()
            for role in ("teacher", "student"):
                model = run.meta[role]
                expected = f"{model['perplexity']:.2f}" if run.task == "tokens" else f"{100 * model['accuracy']:.1f}%"
                page.get_by_text(f"{role.title()}: {model['name']}").wait_for(timeout=20_000)
                assert page.locator(".kd-metric", has_text=expected).count() >= 1, (run.name, role, expected)
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / f"overview-{run.name}.png"), full_page=True)
    assert log["console_errors"] == []
    assert log["blocked"] == []  # nothing is fetched from outside: no CDN


def test_names_from_a_run_are_shown_as_text_never_run(tmp_path):
    require_chromium()
    torch.manual_seed(0)
    run = kdviz.capture(TinyCNN(4, n_classes=3), TinyCNN(2, n_classes=3), torch.randn(6, 1, 8, 8), path=tmp_path / "xss.kdviz",
                        class_names=[XSS, "b", "c"], names=(XSS, "student"), progress=False)
    with kdviz_server(run.path) as url, offline_page() as (page, log):
        page.goto(url)
        page.get_by_text(f"Teacher: {XSS}").wait_for(timeout=20_000)
        assert page.get_by_text(XSS, exact=False).count() >= 2  # model name and class list, as literal text
        page.wait_for_timeout(500)
    assert log["dialogs"] == []
