"""What the logit views need from a run, read once: logits, labels, names, and for language models the per-token
statistics. Thumbnails stay lazy (one is read per drill-down)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdviz.errors import MissingDataError
from kdviz.metrics import logits as lm
from kdviz.metrics.summary import logit_summary
from kdviz.store import LazyArray, Run


@dataclass
class LogitData:
    """Arrays of one run for the logit views. Classification: ``z_t``, ``z_s`` [N, C]; tokens: per-token arrays [N, T]."""

    run: Run
    task: str
    z_t: np.ndarray | None
    z_s: np.ndarray | None
    labels: np.ndarray | None
    class_names: list[str] | None
    thumbnails: LazyArray | None
    tokens: list[list[str]] | None = None
    token_stats: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_run(cls, run: Run) -> LogitData:
        labels = run.labels[:] if run.has("inputs/labels") else None
        thumbnails = run.array("inputs/thumbnails") if run.has("inputs/thumbnails") else None
        if run.task == "classification":
            return cls(run, run.task, run.teacher.logits[:], run.student.logits[:], labels, run.class_names, thumbnails)
        stats: dict[str, np.ndarray] = {name: run.array(f"pair/tokens/{name}")[:] for name in ("kl", "reverse_kl")}
        for side in (run.teacher, run.student):
            for stat in side.token_stats:
                stats[f"{side.role}_{stat}"] = side.token(stat)[:]
        stats["mask"] = run.array("inputs/attention_mask")[:].astype(bool) if run.has("inputs/attention_mask") else None
        return cls(run, run.task, None, None, labels, None, thumbnails, run.tokens, stats)

    @property
    def n_samples(self) -> int:
        return self.run.n_samples

    def thumbnail(self, index: int) -> np.ndarray | None:
        return self.thumbnails[index] if self.thumbnails is not None else None

    def require_logits(self) -> tuple[np.ndarray, np.ndarray]:
        if self.z_t is None or self.z_s is None:
            raise MissingDataError("this view needs full logits; language-model runs keep them only for keep_full_logits samples")
        return self.z_t, self.z_s

    def summary(self, T: float = 1.0) -> dict[str, Any]:
        """The numbers of `views.logits.summary_card`: `metrics.summary.logit_summary` at T for classification; for
        language models (statistics stored at T = 1) the mean per-token KL with both models' accuracy and perplexity."""
        if self.task == "classification":
            z_t, z_s = self.require_logits()
            return logit_summary(z_t, z_s, self.labels, T)
        teacher, student = self.run.teacher.description, self.run.student.description
        return {"n": self.run.n_samples, "T": 1.0, "kl_T1": lm.dataset_mean(self.token_stats["kl"]),
                "teacher_accuracy": teacher.get("accuracy"), "student_accuracy": student.get("accuracy"),
                "teacher_perplexity": teacher.get("perplexity"), "student_perplexity": student.get("perplexity")}

    def vocab(self) -> list[str] | None:
        """Id -> token string, stored at capture when a tokenizer or vocabulary was given."""
        return self.run.meta.get("vocab")


def pooled_features(run: Run, role: str, name: str, rows: slice | np.ndarray, *, conv: str = "flatten",
                    tokens: str = "mean") -> np.ndarray:
    """[m, d] float64 CKA samples of one stored layer for the given rows, pooled as `metrics.features.pool_features`."""
    from kdviz.metrics.features import pool_features

    side = run.teacher if role == "teacher" else run.student
    if isinstance(rows, slice):
        data = side.features(name)[rows]
        mask = run.array("inputs/attention_mask")[rows] if run.has("inputs/attention_mask") else None
    else:
        index = np.sort(np.asarray(rows))
        data = side.features(name)[index]
        mask = run.array("inputs/attention_mask")[index] if run.has("inputs/attention_mask") else None
    return pool_features(data, conv=conv, tokens=tokens, mask=mask).double().numpy()
