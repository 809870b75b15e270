"""Shared helpers for the benchmark scripts: interleaved repeated timing and JSON results."""

from __future__ import annotations

import json
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def time_interleaved(candidates: dict[str, Callable[[], Any]], repeats: int = 5, warmup: int = 1) -> dict[str, list[float]]:
    """Run each candidate ``repeats`` times, round-robin (so machine noise hits all alike); seconds per run."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpu": platform.processor() or platform.machine()},
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return path


def run_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def array_sizes(path: Path) -> dict[str, int]:
    """Bytes on disk per stored array (zarr keeps an array's chunks under ``<key>/c/``), largest first."""
    sizes: dict[str, int] = {}
    for f in path.rglob("*"):
        if f.is_file():
            parts = f.relative_to(path).parts
            key = "/".join(parts[: parts.index("c")]) if "c" in parts else "/".join(parts[:-1]) or parts[0]
            sizes[key] = sizes.get(key, 0) + f.stat().st_size
    return dict(sorted(sizes.items(), key=lambda item: -item[1]))


class PeakRSS:
    """The highest resident memory above the level at entry, sampled every 0.5 ms by a thread (CPU runs).

    ``ru_maxrss`` cannot be used: it is the peak since the process started, which model loading already set.
    """

    def __enter__(self) -> PeakRSS:
        import psutil

        self._process = psutil.Process()
        self.before = self._process.memory_info().rss
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(0.0005)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def rise(self) -> int:
        return self.peak - self.before
