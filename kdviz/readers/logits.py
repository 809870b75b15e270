"""What the logit views need from a run, read once: logits, labels, names, and for language models the per-token
statistics. Thumbnails stay lazy (one is read per drill-down)."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdviz.errors import InputError, MissingDataError
from kdviz.metrics import calibration, classwise
from kdviz.metrics import logits as lm
from kdviz.metrics.classwise import correctness_masks
from kdviz.metrics.summary import logit_summary
from kdviz.readers.memo import Memo
from kdviz.store import LazyArray, Run

SORTS = ("most divergent first", "least divergent first", "sample index")
CLASS_VIEWS = {"agreement": "teacher × student answers", "correctness": "right / wrong", "divergence": "divergence by class",
               "logits": "class-mean logits", "calibration": "calibration"}
"""The class-level views of a classification run (`LogitData.by_class`), with their labels."""
MEMO_SIZE = 32  # (measure, T) results kept per run: a dashboard's temperature stops, both directions of KL, …


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
    token_stats: dict[str, Any] = field(default_factory=dict)  # [N, T] divergences in memory; per-model stats lazy
    # results of summary, per_sample and by_class, shared by every dashboard session of this run
    memo: Memo = field(default_factory=lambda: Memo(MEMO_SIZE), init=False, repr=False, compare=False)

    def _remember(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        return self.memo.get(key, compute)

    @classmethod
    def from_run(cls, run: Run) -> LogitData:
        labels = run.labels[:] if run.has_labels else None
        thumbnails = run.thumbnails
        if run.task == "classification":
            return cls(run, run.task, run.teacher.logits[:], run.student.logits[:], labels, run.class_names, thumbnails)
        stats: dict[str, Any] = {name: run.pair_token_stat(name)[:] for name in ("kl", "reverse_kl")}
        for side in (run.teacher, run.student):  # read by sample when a sample is shown: top-k of 10k × 512 is 0.4 GB
            for stat in side.token_stats:
                stats[f"{side.role}_{stat}"] = side.token(stat)
        stats["mask"] = run.attention_mask[:].astype(bool) if run.attention_mask is not None else None
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
        language models (statistics stored at T = 1) the mean per-token KL with both models' accuracy and perplexity.
        Remembered per T (treat the dict as read-only)."""
        return dict(self._remember(("summary", float(T)), lambda: self._summary(T)))

    def _summary(self, T: float) -> dict[str, Any]:
        if self.task == "classification":
            z_t, z_s = self.require_logits()
            return logit_summary(z_t, z_s, self.labels, T)
        teacher, student = self.run.teacher.description, self.run.student.description
        out = {"n": self.run.n_samples, "T": 1.0, "kl_T1": lm.dataset_mean(self.token_stats["kl"]),
               "teacher_accuracy": teacher.get("accuracy"), "student_accuracy": student.get("accuracy"),
               "teacher_perplexity": teacher.get("perplexity"), "student_perplexity": student.get("perplexity")}
        for role in ("teacher", "student"):  # output layers padded past the tokenizer: their mass on the padding ids
            if f"{role}_padding_mass" in self.token_stats:
                mass = np.asarray(self.token_stats[f"{role}_padding_mass"][:], dtype=np.float64)
                mask = self.token_stats.get("mask")
                out[f"{role}_padding_mass"] = float(mass[mask].mean() if mask is not None else mass.mean())
        return out

    def vocab(self, role: str = "teacher") -> list[str] | None:
        """Id -> token string of ``role``'s top-k ids, stored at capture when a tokenizer or vocabulary was given (a
        two-tokenizer run keeps one per model)."""
        own = (self.run.meta.get(role) or {}).get("vocab")
        return own if own is not None else self.run.meta.get("vocab")

    def token_unit(self) -> str:
        """What a language-model run's tokens are: "span" (two tokenizations, `kdviz.capture_text`) or "token"."""
        return "span" if self.run.tokenizations == 2 else "token"

    def measures(self) -> list[str]:
        """The divergence measures this run supports: all of `metrics.logits.MEASURES`, or the two stored per token."""
        return ["kl", "reverse_kl"] if self.task == "tokens" else list(lm.MEASURES)

    def per_sample(self, measure: str = "kl", T: float = 1.0, *, alpha: float = 0.5) -> np.ndarray:
        """[N] divergence of each sample at T (``alpha``: the order of Rényi D_α); for language models the mean over
        its real tokens (stored at T=1). Remembered per (measure, T, α); the array is read-only."""
        if measure not in self.measures():
            raise MissingDataError(f"{lm.MEASURES.get(measure, measure)!r} needs full logits; this {self.task} run offers "
                                   f"{self.measures()}")
        key = ("per_sample", measure, 1.0 if self.task == "tokens" else float(T), float(alpha) if measure == "renyi" else None)
        return self._remember(key, lambda: self._per_sample(measure, T, alpha))

    def _per_sample(self, measure: str, T: float, alpha: float) -> np.ndarray:
        if self.task == "tokens":
            per_token = self.token_stats[measure]
            mask = self.token_stats.get("mask")
            return np.nanmean(np.where(mask, per_token, np.nan) if mask is not None else per_token, axis=1)
        z_t, z_s = self.require_logits()
        return lm.divergences(z_t, z_s, T, measures=[measure], alpha=alpha)[measure]

    def by_class(self, kind: str, T: float = 1.0) -> Any:
        """What a class-level view of a classification run draws (remembered per kind and T): ``"agreement"`` the
        teacher × student argmax counts [C, C]; ``"correctness"`` the four right/wrong counts; ``"divergence"`` the
        per-class mean of each measure at T; ``"logits"`` the class-mean teacher − student logits [C, C];
        ``"calibration"`` both models' ECE results at T."""
        if kind not in CLASS_VIEWS:
            raise InputError(f"unknown class view {kind!r}; choose from {list(CLASS_VIEWS)}")
        z_t, z_s = self.require_logits()
        if kind != "agreement" and self.labels is None:
            raise MissingDataError(f"the {CLASS_VIEWS[kind]} view needs labels; capture with (inputs, labels) pairs")
        key = ("by_class", kind, float(T) if kind in ("divergence", "calibration") else None)
        return self._remember(key, lambda: self._by_class(kind, float(T), z_t, z_s))

    def _by_class(self, kind: str, T: float, z_t: np.ndarray, z_s: np.ndarray) -> Any:
        if kind == "agreement":
            return classwise.agreement_matrix(z_t, z_s)
        if kind == "correctness":
            return classwise.correctness_quadrants(z_t, z_s, self.labels)
        if kind == "logits":
            return classwise.class_mean_logit_difference(z_t, z_s, self.labels)
        if kind == "calibration":
            return {"teacher": calibration.ece(z_t, self.labels, T), "student": calibration.ece(z_s, self.labels, T)}
        values = lm.divergences(z_t, z_s, T, measures=["kl", "reverse_kl", "js", "tv"])
        return {name: classwise.per_class_mean(v, self.labels, z_t.shape[1]) for name, v in values.items()}

    def visible(self, values: np.ndarray, *, class_index: int = -1, quadrant: str = "all", order: str = SORTS[0],
                among: np.ndarray | None = None) -> np.ndarray:
        """Sample indices whose label is ``class_index`` (-1: any) and in correctness ``quadrant`` ("all": any), out of
        ``among`` (default: every sample), in ``order`` (one of `SORTS`) of ``values`` [N]."""
        keep = np.zeros(self.n_samples, dtype=bool)
        keep[np.arange(self.n_samples) if among is None else np.asarray(among, dtype=int)] = True
        if self.task != "tokens" and class_index >= 0 and self.labels is not None:
            keep &= self.labels == class_index
        if self.task != "tokens" and quadrant != "all" and self.labels is not None:
            keep &= correctness_masks(self.z_t, self.z_s, self.labels)[quadrant]
        index = np.flatnonzero(keep)
        if order == SORTS[0]:
            index = index[np.argsort(-values[index], kind="stable")]
        elif order == SORTS[1]:
            index = index[np.argsort(values[index], kind="stable")]
        return index

    def row_label(self, i: int, measure: str, values: np.ndarray, *, compact: bool = False) -> str:
        """One line of a sample list: index, value, and for classification the label and both answers; ``compact``
        (presentation mode, 18 px in the sidebar) gives them as label/teacher/student, which `row_legend` explains."""
        text = f"#{i} {measure} {values[i]:.4f}" if compact else f"#{i:<5} {measure} {values[i]:.4f}"
        if self.task == "tokens":
            return text
        names = self.class_names or [str(c) for c in range(self.z_t.shape[1])]
        label = names[self.labels[i]] if self.labels is not None else None
        teacher, student = names[self.z_t[i].argmax()], names[self.z_s[i].argmax()]
        if compact:
            return text + " · " + "/".join(([label] if label is not None else []) + [teacher, student])
        return text + f"   {f'label {label}, ' if label is not None else ''}teacher {teacher}, student {student}"

    def row_legend(self, measure: str) -> str:
        """What a compact row of `row_label` holds, for the list's tooltip."""
        if self.task == "tokens":
            return f"each row: sample, {measure}"
        return f"each row: sample, {measure} · {'label/' if self.labels is not None else ''}teacher/student answer"

    def token_points(self, measure: str = "kl") -> dict[str, np.ndarray]:
        """Every real token of a language-model run, for the token map: ``entropy`` [M] (the teacher's), ``divergence``
        [M] (``measure``), ``shared_mass`` [M] (the teacher's mass on the ids in both top-k lists), and its
        ``sample`` and ``position`` [M]. Remembered per measure (read-only)."""
        if self.task != "tokens":
            raise MissingDataError("the token map needs a language-model run (per-token statistics)")
        if measure not in self.measures():
            raise MissingDataError(f"this run stores {self.measures()} per token, not {measure!r}")
        return self._remember(("token_points", measure), lambda: self._token_points(measure))

    def _token_points(self, measure: str) -> dict[str, np.ndarray]:
        divergence = np.asarray(self.token_stats[measure], dtype=np.float64)
        entropy = np.asarray(self.token_stats["teacher_entropy"][:], dtype=np.float64)
        keep = np.isfinite(divergence) & np.isfinite(entropy)
        if self.token_stats.get("mask") is not None:
            keep &= self.token_stats["mask"]
        sample, position = np.nonzero(keep)
        shared = self.token_stats.get("teacher_shared_topk_mass")
        points = {"entropy": entropy[keep], "divergence": divergence[keep], "sample": sample, "position": position,
                  "shared_mass": np.asarray(shared[:], dtype=np.float64)[keep] if shared is not None else None}
        for value in points.values():
            if value is not None:
                value.setflags(write=False)
        return points
