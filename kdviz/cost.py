"""What a capture will cost, known after its first batch: bytes on disk and seconds, per sample and in all.

`capture` shows it on its progress bar before it goes on and refuses to start filling a disk that cannot hold the run;
`kdviz.estimate(...)` (``capture(..., dry_run=True)``) returns it without writing anything.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdviz.errors import InputError
from kdviz.store.format import stored_bytes_per_row

SAFETY = 1.1  # the run's metadata, manifest and partial chunks on top of the arrays


@dataclass(frozen=True)
class CaptureEstimate:
    """A capture's expected cost, from the batches measured (``sampled`` samples)."""

    samples: int | None  # samples in the data, when known without reading it
    sampled: int
    bytes_per_sample: float  # as stored: compressed with the run's codecs
    seconds_per_sample: float  # forward passes and statistics of a batch after the first (the first warms up)
    arrays: tuple[tuple[str, float], ...]  # (array key, bytes per sample), largest first
    fixed_bytes: float = 0.0  # arrays kept for a few samples only (keep_full_logits), as seen in the first batch

    @property
    def total_bytes(self) -> float | None:
        return None if self.samples is None else (self.bytes_per_sample * self.samples + self.fixed_bytes) * SAFETY

    @property
    def total_seconds(self) -> float | None:
        return None if self.samples is None else self.seconds_per_sample * self.samples

    def __str__(self) -> str:
        per_sample = f"{size(self.bytes_per_sample)} and {duration(self.seconds_per_sample)} per sample"
        largest = ", ".join(f"{key} {size(value)}" for key, value in self.arrays[:3])
        if self.samples is None:
            return f"kdviz capture: {per_sample} (the number of samples is not known ahead); largest: {largest}"
        return (f"kdviz capture: about {size(self.total_bytes)} and {duration(self.total_seconds)} for "
                f"{self.samples:,} samples ({per_sample}); largest: {largest}")

    def brief(self) -> str:
        """The few words a progress bar has room for: ``run ≈ 1.9 GB, 42 min``."""
        if self.samples is None:
            return f"run ≈ {size(self.bytes_per_sample)} and {duration(self.seconds_per_sample)} per sample"
        return f"run ≈ {size(self.total_bytes)}, {duration(self.total_seconds)}"

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython shows the sentence, not the dataclass
        printer.text(str(self))


def from_records(records: Mapping[str, np.ndarray], *, batch_size: int, seconds: float, samples: int | None,
                 sampled: int, subsets: Mapping[str, int] | None = None) -> CaptureEstimate:
    """The estimate from one batch's records (array key → rows [B, …]) and the seconds per batch measured.

    ``subsets``: arrays kept for some samples only (exact attention maps, full logits), by key, with the number of
    rows they will have in the whole run; any other array with fewer rows than the batch is counted as it is."""
    subsets = subsets or {}
    rows_of = {key: len(rows) for key, rows in records.items() if len(rows)}
    arrays = sorted(((key, float(stored_bytes_per_row(records[key]))) for key in rows_of), key=lambda item: -item[1])
    per_sample = sum(value for key, value in arrays if rows_of[key] == batch_size and key not in subsets)
    fixed = sum(value * subsets.get(key, rows_of[key]) for key, value in arrays
                if rows_of[key] != batch_size or key in subsets)
    return CaptureEstimate(samples=samples, sampled=sampled, bytes_per_sample=per_sample,
                           seconds_per_sample=seconds / batch_size, arrays=tuple(arrays), fixed_bytes=fixed)


def check_free_space(estimate: CaptureEstimate, path: str | os.PathLike) -> None:
    """Refuse a local capture whose expected size exceeds the free space where it is written (before the disk
    fills), naming the sizes and what makes a run smaller."""
    if estimate.total_bytes is None:
        return
    where = Path(path).expanduser().absolute()
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if estimate.total_bytes > free:
        raise InputError(
            f"this capture needs about {size(estimate.total_bytes)} but {size(free)} are free at {where}; capture fewer "
            "samples, pass attentions=False, keep token_features='pooled', or write the run elsewhere (path=)")


UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
         "TIB": 2**40}


def parse_bytes(value: int | str, name: str) -> int:
    """Bytes from an int or a size such as ``"2GB"``, ``"512 MB"`` or ``"1.5GiB"``; ``name`` is the option, for errors."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number, unit = float(value), ""
    elif isinstance(value, str):
        text = value.strip().upper()
        digits = text.rstrip("KMGTIB ")
        number, unit = (float(digits) if digits.replace(".", "", 1).isdigit() else math.nan), text[len(digits):].strip()
    else:
        number, unit = math.nan, ""
    if not math.isfinite(number) or unit not in UNITS or number * UNITS[unit] < 1:
        raise InputError(f"{name}={value!r} is not a size; give bytes as an int, or a string like '2GB' or '512MB'")
    return int(number * UNITS[unit])


def size(n: float | None) -> str:
    if n is None or not math.isfinite(n):
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
