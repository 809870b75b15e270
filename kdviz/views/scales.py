"""Honest axes for heavy-tailed values: when most of a histogram would sit in one linear bin, bin it by log₁₀.

A divergence per sample is often heavy-tailed (a ViT pair: 360 of 500 samples in the first of 60 linear bins), so a
linear histogram hides every difference among the typical samples. The log axis keeps the values in their order
(plotly's ``pointNumbers`` still index them) and labels its ticks with the values themselves.
"""

from __future__ import annotations

import numpy as np

HEAVY_SHARE = 0.5  # a linear histogram whose fullest bin holds more than this share of the values is heavy-tailed


def heavy_tailed(values: np.ndarray, nbins: int) -> bool:
    """Whether ``values`` [N] (finite) are non-negative, span over a decade, and put more than `HEAVY_SHARE` of
    themselves into one of ``nbins`` equal linear bins."""
    if len(values) < 10 or values.min() < 0:
        return False
    positive = values[values > 0]
    if len(positive) < len(values) // 2 or positive.max() < 10 * np.median(positive):
        return False
    counts, _ = np.histogram(values, bins=nbins)
    return counts.max() > HEAVY_SHARE * len(values)


class LogScale:
    """log₁₀ of non-negative values, with values under ``floor`` (zeros among them) drawn at the floor: the smallest
    positive value, or 1e-12 when there is none."""

    def __init__(self, values: np.ndarray) -> None:
        positive = values[values > 0]
        self.floor = float(positive.min()) if len(positive) else 1e-12

    def __call__(self, values: np.ndarray | float) -> np.ndarray:
        return np.log10(np.maximum(values, self.floor))

    def ticks(self, low: float, high: float) -> dict:
        """Tick values (in log₁₀) and their labels as plain numbers at 1, 2 and 5 per decade between the log₁₀ values
        ``low`` and ``high`` (only the decades when the range spans more than three)."""
        decades = range(int(np.floor(low)), int(np.ceil(high)) + 1)
        steps = (1,) if high - low > 3 else (1, 2, 5)
        values = [np.log10(step) + decade for decade in decades for step in steps]
        shown = [v for v in values if low - 1e-9 <= v <= high + 1e-9]
        return {"tickvals": shown, "ticktext": [f"{10 ** v:.3g}" for v in shown]}


def log_axis_ticks(values: np.ndarray) -> dict:
    """Ticks for a plotly log axis over the positive ``values``: 1, 2 and 5 per decade (the decades alone past
    three), each labelled with its value at the axis's own font size (plotly's "D2" draws the 2s and 5s smaller)."""
    positive = np.asarray(values, dtype=np.float64)
    positive = positive[np.isfinite(positive) & (positive > 0)]
    if not len(positive):
        return {}
    low, high = np.log10(positive.min()), np.log10(positive.max())
    ticks = LogScale(positive).ticks(low - 0.15, high + 0.15)  # the axis pads its range a little past the data
    return {"tickvals": [10 ** v for v in ticks["tickvals"]], "ticktext": ticks["ticktext"]}
