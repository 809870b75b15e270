"""Signals of on-policy vs off-policy drift in generated text (issue 19): where two continuations of one prompt fork,
how repetitive a continuation is, and the student's length against the teacher's (KD-NOTES: exposure bias)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fork_position(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where two token sequences differ (the shorter one ending counts as a difference); None
    when they are identical."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def repeated_ngram_rate(ids: Sequence[int], n: int = 4) -> float:
    """The share of a sequence's n-grams that already occurred earlier in it (0: none repeats; degenerate loops
    approach 1). NaN for sequences shorter than n."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    if not grams:
        return float("nan")
    seen: set[tuple[int, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def mean_by_position(rows: Sequence[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The mean over sequences of a per-position value, and how many sequences reach each position ([L] each):
    continuations of different lengths are averaged over those that have that position."""
    length = length or max((len(r) for r in rows), default=0)
    total, count = np.zeros(length), np.zeros(length, dtype=np.int64)
    for row in rows:
        values = np.asarray(row, dtype=np.float64)[:length]
        finite = np.isfinite(values)
        total[:len(values)][finite] += values[finite]
        count[:len(values)] += finite
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan), count
