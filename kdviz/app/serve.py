"""``kdviz serve``: a read-only Panel server over runs named on the command line.

The server opens each run once per process, never writes, never runs user code and never takes a path from a URL.
It binds to localhost unless an address is given.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from kdviz.errors import KdvizError
from kdviz.store import Run, iter_run_paths

LOCALHOST = "127.0.0.1"


def open_runs(paths: Sequence[str | os.PathLike]) -> list[Run]:
    """Open every run (directories of ``*.kdviz`` runs expand to their runs); names must be unique."""
    runs = [Run.open(path) for path in iter_run_paths(list(paths))]
    if not runs:
        raise KdvizError("no runs to serve; pass run directories (NAME.kdviz) or a directory that holds them")
    names = [run.name for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise KdvizError(f"runs must have distinct names to be served together; repeated: {duplicates}")
    return runs


def serve(paths: Sequence[str | os.PathLike], *, port: int = 5006, address: str | None = None, show: bool = False) -> None:
    """Serve the dashboard for ``paths`` until interrupted; prints the URL."""
    import panel as pn

    from kdviz.app.overview import overview_app

    runs = open_runs(paths)
    host = address or LOCALHOST
    shown = "localhost" if host in (LOCALHOST, "localhost") else host
    print(f"kdviz: serving {len(runs)} run(s) ({', '.join(r.name for r in runs)}) at http://{shown}:{port}", flush=True)
    origins = [f"localhost:{port}", f"127.0.0.1:{port}"] + ([f"{address}:{port}"] if address else [])
    pn.serve(
        {"/": lambda: overview_app(runs)},
        port=port,
        address=host,
        websocket_origin=origins,
        show=show,
        title="kdviz",
        static_dirs={},
    )
