"""Per-step series of a trained run (`kdviz.distill` history): what the training views plot, computed once.

Every number comes from `kdviz.metrics` on the probe set stored at each step: KL(p_t‖p_s) and the student's
cross-entropy with the labels (nats, T = 1), top-1 agreement, accuracy, ECE of both models, debiased CKA along the
layer map, and the loss components the trainer recorded (means over the epoch before the snapshot).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdviz.errors import MissingDataError
from kdviz.metrics import logits as lm
from kdviz.metrics.calibration import ece
from kdviz.run_cka import cka_along_steps
from kdviz.store import Run


@dataclass
class TrainingData:
    """``steps`` [S] and, per series name, values [S] (NaN where a series is undefined, e.g. CE without labels)."""

    run: Run
    steps: np.ndarray
    series: dict[str, np.ndarray] = field(default_factory=dict)
    losses: dict[str, np.ndarray] = field(default_factory=dict)
    cka: dict[str, np.ndarray] = field(default_factory=dict)
    epochs: np.ndarray | None = None

    @classmethod
    def from_run(cls, run: Run | str) -> TrainingData:
        run = run if isinstance(run, Run) else Run.open(run)
        steps = run.steps
        if not steps:
            raise MissingDataError(f"run {run.name!r} has no training history; record one with "
                                   "kdviz.distill(..., record=path) or kdviz.integrations.hf.KdvizCallback")
        data = cls(run, np.asarray(steps))
        infos = [run.step_info(s) for s in steps]
        data.epochs = np.asarray([info.get("epoch", np.nan) for info in infos], dtype=float)
        names = sorted({name for info in infos for name in info.get("losses", {})})
        data.losses = {name: np.asarray([info.get("losses", {}).get(name, np.nan) for info in infos]) for name in names}
        rows = [_step_series(run.at_step(s)) for s in steps]
        data.series = {key: np.asarray([row.get(key, np.nan) for row in rows], dtype=float) for key in rows[0]}
        data.cka = cka_along_steps(run)  # stored by kdviz.distill; computed (not stored) for other runs
        return data


def _step_series(run: Run) -> dict[str, float]:
    """The probe-set numbers of one step (classification from logits; language models from per-token statistics)."""
    if run.task == "classification":
        z_t, z_s = run.teacher.logits[:], run.student.logits[:]
        out = {"kl": lm.dataset_mean(lm.kl(z_t, z_s, 1.0)),
               "agreement": float(np.mean(lm.topk_agreement(z_t, z_s, 1)["top1"]))}
        if run.has_labels:
            y = run.labels[:]
            out.update(ce=float(np.mean(lm.cross_entropy(z_s, y))), accuracy=lm.accuracy(z_s, y),
                       teacher_accuracy=lm.accuracy(z_t, y), ece=ece(z_s, y)["ece"], teacher_ece=ece(z_t, y)["ece"])
        return out
    mask = run.attention_mask[:].astype(bool) if run.attention_mask is not None else None
    kl = run.pair_token_stat("kl")[:]
    out = {"kl": lm.dataset_mean(np.where(mask, kl, np.nan) if mask is not None else kl)}
    top_t, top_s = run.teacher.token("topk_ids")[:, :, 0], run.student.token("topk_ids")[:, :, 0]
    out["agreement"] = float(np.mean((top_t == top_s)[mask] if mask is not None else top_t == top_s))
    if "true_prob" in run.student.token_stats:
        true_prob = run.student.token("true_prob")[:]
        valid = np.isfinite(true_prob) & (true_prob > 0)
        out["ce"] = float(-np.log(true_prob[valid]).mean()) if valid.any() else float("nan")
    return out
