"""`kdviz serve` under load: 20 protocol-level clients (real Bokeh sessions over the websocket, in their own
processes) open the Overview and Logits pages again and again for 60 s, while two real Chromium sessions check that
the pages still render with no console error. The server's memory must stay bounded.

The load is generated without browsers because on 2 cores 20 Chromium contexts starve the server they measure."""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest
from browser import kdviz_server, offline_page, offline_tab
from conftest import report
from load import run_clients
from test_serve_browser import PLOTS_JS

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def browse(url: str, seconds: float) -> dict[str, list]:
    """Two Chromium sessions (own contexts) take turns visiting the Overview and the Logits page, once each and then
    until ``seconds`` have passed; returns their console errors, blocked requests, failures and visits per session."""
    outcome: dict[str, list] = {"failures": [], "visits": [0, 0]}
    with offline_page() as (first, log):
        second = offline_tab(first.context.browser, log)
        deadline = time.monotonic() + seconds
        while outcome["visits"] == [0, 0] or time.monotonic() < deadline:
            if outcome["failures"] and not any(outcome["visits"]):
                break  # the very first visits failed: no point in retrying for a minute
            for index, page in enumerate((first, second)):
                try:
                    page.goto(url, timeout=90_000)
                    page.get_by_text("Teacher:").first.wait_for(timeout=90_000)
                    page.locator(".bk-tab", has_text="Logits").first.click()
                    page.wait_for_function(PLOTS_JS.replace("return out; }", "return out.length >= 3; }"), timeout=90_000)
                    outcome["visits"][index] += 1
                except Exception as exc:
                    outcome["failures"].append(f"{type(exc).__name__}: {exc}")
        outcome["console_errors"] = log["console_errors"]
        outcome["blocked"] = log["blocked"]
    return outcome


@pytest.mark.parametrize("sessions,seconds", [(20, 60)])
def test_twenty_concurrent_sessions_for_a_minute(demo_runs, sessions, seconds):
    """No failed session, no browser error, every client and both browsers complete visits, and the server's
    memory grows by under 300 MB (sessions are cleaned up; runs are cached once)."""
    cnn = demo_runs["digits-cnn"]
    with kdviz_server(cnn.path) as url:
        server = next(p for p in psutil.Process().children(recursive=True) if "serve" in " ".join(p.cmdline()))

        def memory() -> int:
            return sum(p.memory_info().rss for p in [server, *server.children(recursive=True)])

        browse(url, 0)  # one warm-up visit, so the baseline includes the cached run and Panel's imports
        before = memory()
        per_client, errors, browsers = run_clients(url, sessions, seconds, alongside=lambda s: browse(url, s))
        growth = memory() - before
    times = [t for client_times in per_client for t in client_times]
    p50, p95 = (1000 * np.percentile(times, q) if times else float("nan") for q in (50, 95))
    report(f"load test: {sessions} clients × {seconds} s: {len(times)} sessions (p50 {p50:.0f} ms, p95 {p95:.0f} ms), "
           f"{len(errors)} errors; browsers {browsers['visits']} visits; server memory "
           f"{before / 2**20:.0f} MB -> {(before + growth) / 2**20:.0f} MB")
    assert errors == []
    assert len(per_client) == sessions and min(map(len, per_client)) >= 2  # every client completed a visit (two sessions)
    assert browsers["failures"] == [] and browsers["console_errors"] == [] and browsers["blocked"] == []
    assert min(browsers["visits"]) >= 1
    assert growth < 300 * 2**20, f"server memory grew by {growth / 2**20:.0f} MB over {len(times)} sessions"
