"""Dataset-level summary of a classification pair at a temperature: accuracy, agreement, mean KL, ECE."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdviz.metrics import logits as lm
from kdviz.metrics.calibration import ece


def logit_summary(z_t: Any, z_s: Any, labels: Any | None, T: float = 1.0) -> dict[str, Any]:
    """Numbers for a summary card. ``labels`` may be None (then accuracy and ECE are None)."""
    agreement = lm.topk_agreement(z_t, z_s, k=1)["top1"]
    out: dict[str, Any] = {
        "n": int(np.asarray(z_t).shape[0]),
        "T": T,
        "top1_agreement": float(np.mean(agreement)),
        "kl_T1": lm.dataset_mean(lm.kl(z_t, z_s, 1.0)),
        "kl_T": lm.dataset_mean(lm.kl(z_t, z_s, T)),
        "kl_T_scaled": lm.dataset_mean(lm.kl(z_t, z_s, T, t2_scale=True)),
    }
    for role, z in (("teacher", z_t), ("student", z_s)):
        out[f"{role}_accuracy"] = lm.accuracy(z, labels) if labels is not None else None
        out[f"{role}_ece"] = ece(z, labels, T)["ece"] if labels is not None else None
    return out
