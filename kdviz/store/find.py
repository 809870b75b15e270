"""Finding runs: directories of ``*.kdviz`` runs expand to their runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from kdviz import remote
from kdviz.store.format import META_FILE


def iter_run_paths(paths: list[str | os.PathLike]) -> Iterator[Path | str]:
    """Expand directories (or object-storage prefixes) that hold several ``*.kdviz`` runs into the runs themselves."""
    for raw in paths:
        if remote.is_url(raw):
            yield from remote.list_runs(os.fspath(raw))
            continue
        path = Path(raw).expanduser()
        if path.is_dir() and not (path / META_FILE).exists() and any(path.glob(f"*.kdviz/{META_FILE}")):
            yield from sorted(p.parent for p in path.glob(f"*.kdviz/{META_FILE}"))
        else:
            yield path
