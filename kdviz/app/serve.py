"""``kdviz serve``: a read-only Panel server over runs named on the command line.

The server opens each run once per process, never writes, never runs user code and never takes a path from a URL
(``?run=`` picks among the served runs by name). It binds to localhost unless an address is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from kdviz.app.library import RunLibrary, open_runs
from kdviz.errors import InputError

LOCALHOST = "127.0.0.1"

__all__ = ["LOCALHOST", "open_runs", "serve"]


def serve(paths: Sequence[str | os.PathLike], *, port: int = 5006, address: str | None = None, show: bool = False,
          warm: bool = False, num_procs: int = 1) -> None:
    """Serve the dashboard for ``paths`` until interrupted; prints the URL. ``warm`` reads every page's data before
    the first visitor; ``num_procs`` > 1 forks that many server processes (each with its own cache)."""
    import panel as pn

    from kdviz.app.dashboard import session_app

    if num_procs < 1:
        raise InputError(f"--num-procs must be at least 1, not {num_procs}")
    library = RunLibrary.from_paths(paths)
    if warm:
        library.warm(progress=lambda what: print(f"kdviz: warming {what}", flush=True))
    host = address or LOCALHOST
    shown = "localhost" if host in (LOCALHOST, "localhost") else host
    procs = f", {num_procs} processes" if num_procs > 1 else ""
    print(f"kdviz: serving {len(library.names)} run(s) ({', '.join(library.names)}) at http://{shown}:{port}{procs}", flush=True)
    origins = [f"localhost:{port}", f"127.0.0.1:{port}"] + ([f"{address}:{port}"] if address else [])
    pn.serve(
        {"/": lambda: session_app(library)},
        port=port,
        address=host,
        websocket_origin=origins,
        show=show,
        title="kdviz",
        num_procs=num_procs,
        static_dirs={},
    )
