"""The runs a dashboard serves, by name: each run (and each page's data of it) is opened once per process and cached.

Only the names of the runs given on the command line can be asked for, so a URL can never reach another path.
Everything is read lazily by slice. A served library never writes: CKA is read from a run's cache when stored there,
else computed in memory. A notebook's library (``writes_cache=True``) stores the CKA it computes in the run's cache.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kdviz import remote
from kdviz.errors import InputError, KdvizError
from kdviz.readers.attention import AttentionData
from kdviz.readers.attribution import AttributionData
from kdviz.readers.features import cka_matrix
from kdviz.readers.generation import GenerationData
from kdviz.readers.logits import LogitData
from kdviz.readers.text import TextData
from kdviz.readers.training import TrainingData
from kdviz.store import Run, iter_run_paths

# what each page reads from a run; `RunLibrary.data(kind, ...)` builds and caches it
LOADERS: dict[str, Callable[[Run], Any]] = {
    "logits": LogitData.from_run,
    "attribution": AttributionData.from_run,
    "training": TrainingData.from_run,
    "text": TextData.from_run,
    "generation": GenerationData.from_run,
}


def open_runs(paths: Sequence[str | os.PathLike], failures: dict[str, str] | None = None) -> list[Run]:
    """Open every run (directories of ``*.kdviz`` runs expand to their runs); names must be unique. With
    ``failures``, a run that cannot be opened is recorded there (its path: the one-line reason) instead of raising,
    so one broken run does not stop the others from being served."""
    runs = []
    for path in iter_run_paths(list(paths)):
        try:
            run = Run.open(path)
            run.check_structure()  # a run with an absent, truncated or altered array is refused up front
            runs.append(run)
        except KdvizError as exc:
            if failures is None:
                raise
            # shown to visitors: the run's name, never where it lies on the server
            where, name = os.fspath(path), remote.url_name(os.fspath(path)).removesuffix(".kdviz")
            failures[name] = " ".join(str(exc).replace(str(Path(where).expanduser().absolute()), name).replace(where, name).split())
    if not runs:
        broken = "".join(f"; {path}: {reason}" for path, reason in (failures or {}).items())
        raise KdvizError(f"no runs to serve; pass run directories (NAME.kdviz) or a directory that holds them{broken}")
    names = [run.name for run in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise KdvizError(f"runs must have distinct names to be served together; repeated: {duplicates}")
    return runs


class RunLibrary:
    """Runs by name, opened once per process; ``data(kind, name)`` caches each page's data of a run (and of a run at a
    recorded training step). Safe to share between the sessions of one server process."""

    def __init__(self, runs: Sequence[Run], failures: dict[str, str] | None = None, *, writes_cache: bool = False) -> None:
        self._runs = {run.name: run for run in runs}
        self.writes_cache = writes_cache
        self.failures = dict(failures or {})  # runs that could not be opened: name -> one-line reason
        self._cache: dict[tuple[str, str, int | None], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_paths(cls, paths: Sequence[str | os.PathLike]) -> RunLibrary:
        """The runs under ``paths``; those that cannot be opened are kept in `failures` and shown as such."""
        failures: dict[str, str] = {}
        return cls(open_runs(paths, failures), failures)

    @property
    def names(self) -> list[str]:
        return list(self._runs)

    def run(self, name: str, step: int | None = None) -> Run:
        """The run called ``name`` (at a recorded training step, if given). Unknown names raise, never open a path."""
        if name not in self._runs:
            raise InputError(f"no run named {name!r} is served here; served runs: {self.names}")
        if step is None:
            return self._runs[name]
        return self.cached("run", name, step, lambda: self._runs[name].at_step(step))

    def data(self, kind: str, name: str, step: int | None = None) -> Any:
        """A page's data of a run (``kind`` in `LOADERS`), built on first use; a `KdvizError` (the run lacks it) is
        cached too, so a missing page costs nothing the second time."""
        run = self.run(name, step)
        return self.cached(kind, name, step, lambda: LOADERS[kind](run))

    def attention(self, name: str, step: int | None = None, *, max_samples: int = 256, measure: str = "kl") -> AttentionData:
        """The attention reader of a run over its first ``max_samples`` samples, with head divergence ``measure``."""
        run = self.run(name, step)
        return self.cached(f"attention-{max_samples}-{measure}", name, step,
                           lambda: AttentionData.from_run(run, max_samples=max_samples, measure=measure))

    def cka(self, name: str, step: int | None = None, *, unbiased: bool = True, conv: str = "flatten",
            tokens: str = "mean") -> dict[str, Any]:
        """`readers.features.cka_matrix` of a run with these options, read from the run's cache or computed (and
        stored in the run's cache only when this library ``writes_cache``)."""
        run = self.run(name, step)
        cache = True if self.writes_cache else "read"
        return self.cached(f"cka-{unbiased}-{conv}-{tokens}", name, step,
                            lambda: cka_matrix(run, unbiased=unbiased, conv=conv, tokens=tokens, cache=cache))

    def cached(self, kind: str, name: str, step: int | None, build: Callable[[], Any]) -> Any:
        key = (kind, name, step)
        with self._lock:
            hit = self._cache.get(key)
        if hit is None:
            try:
                hit = build()
            except KdvizError as exc:
                hit = exc
            with self._lock:
                hit = self._cache.setdefault(key, hit)
        if isinstance(hit, KdvizError):
            raise hit
        return hit

    def warm(self, progress: Callable[[str], None] | None = None) -> None:
        """Read every page's data of every run now (``kdviz serve --warm``), so the first visitor waits for nothing."""
        for name in self.names:
            for kind in (*LOADERS, "attention", "cka"):
                if progress is not None:
                    progress(f"{name}: {kind}")
                with contextlib.suppress(KdvizError):  # that explorer will say what the run lacks
                    if kind == "attention":
                        self.attention(name)
                    elif kind == "cka":
                        self.cka(name)
                    else:
                        self.data(kind, name)
