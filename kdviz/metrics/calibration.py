"""Calibration: expected and maximum calibration error with per-bin statistics for reliability diagrams."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from kdviz.errors import InputError
from kdviz.metrics.tempered import check_finite, log_probs

N_BINS = 15


def ece(z: Any, labels: Any, T: float = 1.0, n_bins: int = N_BINS) -> dict[str, Any]:
    """ECE = Σ_m (|B_m| / N)·|acc(B_m) − conf(B_m)| over ``n_bins`` equal-width bins of the max probability.

    Bins are (lo, hi], so a confidence of exactly 1/n_bins falls in the first bin. Returns ``ece``, ``mce``
    (the largest gap over non-empty bins), and per bin ``lower``, ``upper``, ``accuracy``, ``confidence`` (NaN
    for empty bins) and ``count``, the inputs of a reliability diagram. ``z``: logits [N, C]; ``labels``: [N].
    """

    if n_bins < 1:
        raise InputError(f"n_bins must be at least 1, got {n_bins}")
    logits = z if isinstance(z, torch.Tensor) else torch.as_tensor(np.asarray(z))
    if logits.ndim != 2:
        raise InputError(f"ece takes logits [N, C], got shape {tuple(logits.shape)}")
    check_finite(logits, "logits")
    y = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)).long().reshape(-1)
    if y.shape[0] != logits.shape[0]:
        raise InputError(f"labels has {y.shape[0]} entries but the logits have {logits.shape[0]} samples")
    logp = log_probs(logits.double(), T)
    # the prediction is the argmax of the logits themselves: in log-softmax a gap below float64 resolution next to the
    # log-normaliser (say −2e-16 against 0) vanishes into a tie, and the tie would go to the wrong class
    prediction = logits.argmax(dim=1)
    confidence = logp.gather(1, prediction[:, None])[:, 0].exp().cpu().numpy()
    correct = (prediction.cpu() == y).double().numpy()
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)  # (lo, hi] bins
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
        mean_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / count
    gaps = np.abs(accuracy - mean_confidence)
    filled = count > 0
    return {
        "ece": float(np.sum(count[filled] / len(confidence) * gaps[filled])),
        "mce": float(gaps[filled].max()) if filled.any() else float("nan"),
        "lower": edges[:-1],
        "upper": edges[1:],
        "accuracy": accuracy,
        "confidence": mean_confidence,
        "count": count,
    }
