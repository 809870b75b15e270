"""What the attribution views need from a run: the stored maps (read one sample or one block at a time), the explained
samples' logits, labels, thumbnails and tokens, and per-sample agreement, computed once per (target, method, metric)."""

from __future__ import annotations

import numpy as np

from kdviz.errors import InputError, MissingDataError
from kdviz.metrics import attribution_agreement as ag
from kdviz.readers.memo import Memo
from kdviz.store import Run, StoredAttribution

BLOCK = 512  # samples read at a time when computing agreement over a whole method

MEMO_SIZE = 64  # stored groups, agreements (method × target × metric) and both models' logits


class AttributionData:
    """Lazy access to a run's attributions. ``targets`` is ``{target: [methods]}``; samples are the run's own indices."""

    def __init__(self, run: Run | str) -> None:
        self.run = run if isinstance(run, Run) else Run.open(run)
        self.targets = self.run.attribution_targets()
        if not self.targets:
            raise MissingDataError(
                f"run {self.run.name!r} has no attributions; compute them with "
                "kdviz.attribute(teacher, student, data, run=run, methods=['saliency', 'integrated_gradients'])"
            )
        self.memo = Memo(MEMO_SIZE)  # stored groups, agreements and logits, shared by every session of this run

    @classmethod
    def from_run(cls, run: Run) -> AttributionData:
        return cls(run)

    # ---- what is stored ----
    def stored(self, method: str, target: str) -> StoredAttribution:
        return self.memo.get(("stored", method, target), lambda: self.run.attribution(method, target))

    def default_selection(self) -> tuple[str, str]:
        """(method, target) to show first: the teacher's prediction if stored, integrated gradients if computed."""
        target = "teacher_pred" if "teacher_pred" in self.targets else next(iter(self.targets))
        methods = self.targets[target]
        return ("integrated_gradients" if "integrated_gradients" in methods else methods[0]), target

    def row_of(self, method: str, target: str, sample: int) -> int:
        """Row of a run sample among the explained samples of (method, target)."""
        index = self.stored(method, target).index
        row = int(np.searchsorted(index, sample))
        if row >= len(index) or index[row] != sample:
            raise MissingDataError(f"sample {sample} was not attributed with {method} for {target}; "
                                   f"attributed samples: {index[:8].tolist()}{'…' if len(index) > 8 else ''}")
        return row

    def maps(self, method: str, target: str, sample: int) -> tuple[np.ndarray, np.ndarray]:
        """(teacher map, student map) of one run sample, float64."""
        stored, row = self.stored(method, target), self.row_of(method, target, sample)
        return tuple(stored.maps(role)[row].astype(np.float64) for role in ("teacher", "student"))  # type: ignore[return-value]

    def mask(self, method: str, target: str, rows: slice | np.ndarray | None = None) -> np.ndarray | None:
        """[M, T] real-token mask of the explained samples of a text run (None for images)."""
        stored = self.stored(method, target)
        if stored.attrs.get("map_kind") != "tokens" or self.run.attention_mask is None:
            return None
        index = stored.index if rows is None else stored.index[rows]
        return self.run.attention_mask[np.sort(index)].astype(bool)

    # ---- agreement ----
    def agreement(self, method: str, target: str, metric: str) -> np.ndarray:
        """[M] per-sample agreement between the teacher's and the student's maps (`metrics.attribution_agreement`)."""
        if metric not in ag.AGREEMENT_METRICS:
            raise InputError(f"unknown agreement metric {metric!r}; choose from {list(ag.AGREEMENT_METRICS)}")
        def compute() -> np.ndarray:
            stored = self.stored(method, target)
            parts = []
            for start in range(0, len(stored), BLOCK):
                block = slice(start, start + BLOCK)
                parts.append(ag.agreement(stored.maps("teacher")[block], stored.maps("student")[block],
                                          self.mask(method, target, block), metrics=[metric])[metric])
            return np.concatenate(parts)

        return self.memo.get(("agreement", method, target, metric), compute)

    # ---- the explained samples ----
    def logits(self, role: str) -> np.ndarray | None:
        """[N, C] logits of the run (classification), None for language-model runs."""
        side = self.run.teacher if role == "teacher" else self.run.student
        return self.memo.get(("logits", role), lambda: side.logits[:] if self.run.task == "classification" else None)

    def labels(self) -> np.ndarray | None:
        return self.run.labels[:] if self.run.has_labels and self.run.task == "classification" else None

    def fidelity(self, method: str, target: str, metric: str, threshold: float = ag.DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
        """`metrics.attribution_agreement.fidelity_table` of the explained samples (classification runs)."""
        z_t, z_s = self.logits("teacher"), self.logits("student")
        if z_t is None or z_s is None:
            raise MissingDataError("answer agreement needs the models' class logits; this is a language-model run")
        index = self.stored(method, target).index
        labels = self.labels()
        return ag.fidelity_table(z_t[index], z_s[index], self.agreement(method, target, metric),
                                 labels=None if labels is None else labels[index], threshold=threshold)

    def n_classes(self, method: str, target: str) -> int:
        classes = self.stored(method, target).classes
        return int(self.run.meta.get("n_classes") or (classes.max() + 1 if len(classes) else 1))

    def class_name(self, c: int) -> str:
        """Class name (classification) or token string (language models, from the stored vocabulary)."""
        names = self.run.class_names or self.run.meta.get("vocab")
        return str(names[c]) if names is not None and 0 <= c < len(names) else str(c)

    def image(self, sample: int) -> np.ndarray | None:
        return self.run.thumbnails[sample] if self.run.thumbnails is not None else None

    def tokens(self, sample: int) -> list[str] | None:
        tokens = self.run.tokens
        return list(tokens[sample]) if tokens is not None else None
