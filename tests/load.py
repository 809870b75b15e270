"""Protocol-level dashboard load: real Bokeh sessions over the websocket, without a browser.

A visit opens two sessions as a browser would for the Overview and the Logits pages (``?page=logits``): the server
builds each session's app from its cached runs and sends the whole document, which must hold the page's figures.
Used by the load test (tests/test_serve_load.py) and by benchmarks/dashboard_load.py.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from typing import Any

# a page's document must hold at least this many Plotly figures to count as drawn
PAGE_PLOTS = {"overview": 0, "logits": 3}
# a visit still open at a client's deadline is waited for this long
VISIT_TIMEOUT_S = 120


def open_session(url: str, page: str = "overview") -> float:
    """Seconds to open one session of ``page`` (the server builds the app and sends its document) and close it;
    raises when the document comes back without the page's figures."""
    import panel.models.plotly  # noqa: F401  (registers Panel's Bokeh models, so the client can read the document)
    from bokeh.client import pull_session

    import kdviz.explore.redraw_once  # noqa: F401  (and the data model of the page's RedrawOnce, made with its class)

    start = time.perf_counter()
    session = pull_session(url=url, arguments={"page": page})
    elapsed = time.perf_counter() - start
    try:
        models = session.document.models
        plots = sum(1 for model in models if type(model).__name__ == "PlotlyPlot")
        if not session.document.roots or plots < PAGE_PLOTS[page]:
            raise RuntimeError(f"the {page} session came back with {plots} figures (expected {PAGE_PLOTS[page]}+)")
    finally:
        session.close()
    return elapsed


def visit(url: str) -> list[float]:
    """One visitor: the Overview, then the Logits page; each session's seconds."""
    return [open_session(url, "overview"), open_session(url, "logits")]


def run_clients(url: str, clients: int, seconds: float, *, alongside: Callable[[float], Any] | None = None,
                startup_timeout: float = 180, pause: float = 0.0) -> tuple[list[list[float]], list[str], Any]:
    """``clients`` processes visit ``url`` back to back (or ``pause`` seconds apart, a visitor reading the page) for
    ``seconds``, all starting together once each has imported Panel and made one visit; ``alongside(seconds)`` runs
    in this process meanwhile (for example real browser sessions). Returns (each client's session times, errors,
    what ``alongside`` returned). Bounded in time: every client stops at its deadline, and one that does not report
    is terminated."""
    # a fork server that has imported Panel and Bokeh's client once: the clients start in a fraction of a second
    # each, instead of importing them 20 times over on 2 cores (and it never forks this multi-threaded process)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["panel", "panel.models.plotly", "bokeh.client", "load"])
    barrier = context.Barrier(clients + 1)
    results = context.Queue()
    processes = [context.Process(target=_client, args=(url, barrier, seconds, results, pause), daemon=True)
                 for _ in range(clients)]
    for process in processes:
        process.start()
    times: list[list[float]] = []
    errors: list[str] = []
    try:
        barrier.wait(timeout=startup_timeout)
        extra = alongside(seconds) if alongside is not None else None
        for _ in processes:
            client_times, client_errors = results.get(timeout=seconds + VISIT_TIMEOUT_S)
            times.append(client_times)
            errors += client_errors
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
    return times, errors, extra


def _client(url: str, barrier: Any, seconds: float, results: Any, pause: float = 0.0) -> None:
    """One client process: one warm-up visit, then (after every client is ready) visits back to back until its
    deadline; reports (session times, errors) of the timed visits."""
    errors: list[str] = []
    try:
        visit(url)
    except Exception as exc:  # reported: the warm-up visit failed
        errors.append(f"warm-up: {type(exc).__name__}: {exc}")
    barrier.wait()
    deadline = time.monotonic() + seconds
    times: list[float] = []
    while time.monotonic() < deadline:
        try:
            times += visit(url)
        except Exception as exc:  # counted: a visit that failed
            errors.append(f"{type(exc).__name__}: {exc}")
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
    results.put((times, errors))
