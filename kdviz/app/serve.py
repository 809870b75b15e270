"""``kdviz serve``: a read-only Panel server over runs named on the command line.

The server opens each run once per process, never writes, never runs user code and never takes a path from a URL
(``?run=`` picks among the served runs by name). It binds to localhost unless an address is given, and answers
only for allowed hosts and the dashboard's own routes (`kdviz.app.guard`).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence

from kdviz.app.guard import RequestGuard
from kdviz.errors import InputError
from kdviz.explore.library import RunLibrary, open_runs

LOCALHOST = "127.0.0.1"

__all__ = ["LOCALHOST", "open_runs", "serve"]


def serve(paths: Sequence[str | os.PathLike], *, port: int = 5006, address: str | None = None, show: bool = False,
          warm: bool = False, num_procs: int = 1, origins: Sequence[str] = (), present: bool = False) -> None:
    """Serve the dashboard for ``paths`` until interrupted; prints the URL. ``warm`` reads every page's data before
    the first visitor; ``num_procs`` > 1 forks that many server processes (each with its own cache). ``origins``
    adds the public ``host[:port]`` names a proxy or load balancer serves the app under (websocket origins); ``present``
    opens every session in presentation mode (a visitor's ``?present=0`` opts out)."""
    import panel as pn

    if num_procs < 1:
        raise InputError(f"--num-procs must be at least 1, not {num_procs}")
    library = RunLibrary.from_paths(paths)
    if num_procs > 1 and any(library.run(name).remote for name in library.names):
        # object-storage clients (fsspec's event loop thread) do not survive fork: each process opens its own runs
        app = per_process_app(paths, warm, present)
    else:
        if warm:
            library.warm(progress=lambda what: print(f"kdviz: warming {what}", flush=True))
        app = lambda: served_session(library, present)  # noqa: E731
    host = address or LOCALHOST
    shown = "localhost" if host in (LOCALHOST, "localhost") else host
    procs = f", {num_procs} processes" if num_procs > 1 else ""
    for name, reason in library.failures.items():
        print(f"kdviz: not serving {name}: {reason}", flush=True)
    print(f"kdviz: serving {len(library.names)} run(s) ({', '.join(library.names)}) at http://{shown}:{port}{procs}", flush=True)
    guard = RequestGuard([*([address] if address else []), *origins])
    parent = os.getpid()
    server = pn.serve(
        {"/": app},
        port=port,
        address=host,
        websocket_origin=[f"{name}:{port}" for name in ("localhost", "127.0.0.1")]  # Bokeh cannot parse [::1]
        + ([f"{address}:{port}"] if address else []) + list(origins),
        show=show,
        title="kdviz",
        num_procs=num_procs,
        static_dirs={},
        start=False,
        # a session whose visitor left is discarded 15 s later (Bokeh's default); looking every 5 s instead of every
        # 17 s frees them sooner, which bounds the memory that sessions awaiting cleanup hold under load
        check_unused_sessions_milliseconds=5000,
    )
    if os.getpid() != parent:  # a forked server process (num_procs > 1): it must not outlive `kdviz serve`
        end_with_parent(parent)
    guard.install(server._tornado)  # in each process: with num_procs > 1, Bokeh has forked by now
    server.start()
    server.io_loop.start()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def end_with_parent(parent: int) -> None:
    """Have the kernel send this forked server process SIGTERM when ``parent`` (the `kdviz serve` that forked it)
    ends. Tornado's fork leaves the workers running when their parent is stopped: each kept a server port and its
    runs in memory. Linux only; elsewhere the workers must be stopped with their process group."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent ended before the request was made: end now
        os.kill(os.getpid(), signal.SIGTERM)


def served_session(library: RunLibrary, present: bool = False) -> None:
    """Put one session's app into the server's document, its CSS linked from this server.

    Panel points its components' stylesheets at its CDN and rewrites them to the server's copy only when it renders
    the page's HTML. With --num-procs, the page and its websocket can reach different processes, and the document of
    a process that rendered no page kept the CDN links (offline, the page lost its styles); so they are rewritten
    here, for every session, as Panel does for the page."""
    import panel as pn
    from panel.io.resources import LOCAL_DIST, patch_model_css

    from kdviz.app.dashboard import session_app

    document = pn.state.curdoc
    # no Location model: Panel parses the query with str.isdigit() + int() (a 500 on ?sample=²); kdviz.app.query
    # reads the session arguments itself, strictly
    session_app(library, present=present).server_doc(document, title="kdviz", location=False)
    dist_url = f"{pn.state.rel_path}/{LOCAL_DIST}" if pn.state.rel_path else LOCAL_DIST
    for root in document.roots:
        patch_model_css(root, dist_url=dist_url)


def per_process_app(paths: Sequence[str | os.PathLike], warm: bool, present: bool = False) -> Callable[[], None]:
    """The app for forked server processes that must open their runs themselves: each process opens (and with
    ``warm`` reads) the runs on its first session and keeps them for the next ones."""
    opened: dict[int, RunLibrary] = {}

    def app() -> None:
        library = opened.get(os.getpid())
        if library is None:
            library = opened[os.getpid()] = RunLibrary.from_paths(paths)
            if warm:
                library.warm()
        served_session(library, present)

    return app
