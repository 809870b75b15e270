"""What one batch writes into a run, one builder per task: `ClassificationRecords` (class logits, labels, accuracy)
and `TokenRecords` (per-token statistics of language models, next-token targets, the kept full logits, accuracy
and perplexity). `CaptureSession` chooses the builder from the first batch and adds the inputs and the internals.

A builder's counts are small and combine across the ranks of a distributed capture (`state` and `absorb`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from kdviz import layout
from kdviz.adapters.probe import ProbeOutput
from kdviz.batching import Batch
from kdviz.errors import InputError
from kdviz.metrics import logits as logit_metrics
from kdviz.metrics.vocabulary import PAIR_STATS, ROLE_STATS

ROLES = ("teacher", "student")
IGNORE_INDEX = -100  # PyTorch's and Hugging Face's "no label here"


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor on the CPU as numpy; bfloat16, which numpy lacks, becomes float32 (it converts exactly)."""
    tensor = tensor.detach()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).cpu().numpy()


def check_labels(labels: torch.Tensor, n_classes: int, offset: int, kind: str, *, ignore_index: int | None) -> None:
    """Refuse labels that cannot be stored truthfully: non-integers, and values outside [0, ``n_classes``) other than
    ``ignore_index``; the message names the first bad sample (``offset`` is the batch's first sample)."""
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"{kind} labels must be integer ids, got {labels.dtype} (the batch starting at sample {offset}); "
                         "convert class indices with labels.long(), after checking they are whole numbers")
    bad = (labels < 0) | (labels >= n_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        position = tuple(int(i) for i in torch.nonzero(bad)[0])
        value = int(labels[position])
        allowed = f"0..{n_classes - 1}" + (f" or {ignore_index} (ignored)" if ignore_index is not None else "")
        where = f"sample {offset + position[0]}" + (f", position {position[1]}" if len(position) > 1 else "")
        raise InputError(f"{kind} label {value} at {where} is outside {allowed}: the models have {n_classes} outputs; "
                         "fix the labels, or check that the data and the models belong together")


class TaskRecords:
    """The records of one task's batches, and what they add up to: each model's correct / total predictions and, for
    language models, the summed negative log-likelihood of the true tokens."""

    task: ClassVar[str] = ""

    def __init__(self) -> None:
        self.counts = {role: {"correct": 0, "total": 0, "nll": 0.0, "nll_count": 0} for role in ROLES}
        self.has_labels = False

    def records(self, batch: Batch, outputs: tuple[ProbeOutput, ProbeOutput], offset: int) -> dict[str, np.ndarray]:
        raise NotImplementedError  # pragma: no cover - each task defines it

    def quality(self, role: str) -> dict[str, float | None]:
        """``accuracy`` (top-1 against the labels) and ``perplexity`` (exp of the mean NLL of the true tokens) of one
        model over every batch so far; None where there were no labels."""
        counts = self.counts[role]
        return {"accuracy": counts["correct"] / counts["total"] if counts["total"] else None,
                "perplexity": math.exp(counts["nll"] / counts["nll_count"]) if counts["nll_count"] else None}

    def settings(self) -> dict[str, Any]:
        """What this task adds to the run's capture settings."""
        return {"topk": None, "full_logits_index": None}

    def state(self) -> dict[str, Any]:
        return {"counts": self.counts, "has_labels": self.has_labels}

    def absorb(self, states: Sequence[dict[str, Any]]) -> None:
        """The totals of several ranks' builders (``states`` from their `state`)."""
        self.counts = {role: {stat: sum(state["counts"][role][stat] for state in states) for stat in self.counts[role]}
                       for role in ROLES}
        self.has_labels = any(state["has_labels"] for state in states)

    def _count(self, role: str, logits: torch.Tensor, labels: torch.Tensor) -> None:
        correct, total = logit_metrics.correct_count(logits, labels)
        self.counts[role]["correct"] += correct
        self.counts[role]["total"] += total


class ClassificationRecords(TaskRecords):
    """Both models' class logits [B, C], and the labels [B] when given."""

    task = "classification"

    def records(self, batch: Batch, outputs: tuple[ProbeOutput, ProbeOutput], offset: int) -> dict[str, np.ndarray]:
        records: dict[str, np.ndarray] = {}
        labels = batch.labels
        if labels is not None:
            if labels.ndim != 1 or len(labels) != batch.size:
                raise InputError(f"classification labels must have shape [{batch.size}], got {tuple(labels.shape)}")
            records[layout.LABELS] = as_numpy(labels).astype(np.int64)
            self.has_labels = True
            check_labels(labels, outputs[0].logits.shape[-1], offset, "class", ignore_index=None)
        for role, out in zip(ROLES, outputs, strict=True):
            records[layout.logits(role)] = as_numpy(out.logits.float())
            if labels is not None:
                self._count(role, out.logits, labels)
        return records


class TokenRecords(TaskRecords):
    """Per-token statistics of two language models [B, T] (KL both ways, entropies, top-k, the true token's
    probability), the targets, and the full logits [K, T, V] of the samples ``keep`` names (the first K, or indices).
    Position t's target is token t + 1 when ``next_token`` (the default of the model's family), else the label."""

    task = "tokens"

    def __init__(self, *, topk: int, keep: int | Sequence[int], next_token: bool, vocab: int | None = None) -> None:
        super().__init__()
        self.topk, self.keep, self.next_token = topk, keep, next_token
        self.vocab = vocab  # compare over ids 0 … vocab − 1 of output layers padded past them (None: all, equal)
        self.kept_indices: list[int] = []

    def records(self, batch: Batch, outputs: tuple[ProbeOutput, ProbeOutput], offset: int) -> dict[str, np.ndarray]:
        records: dict[str, np.ndarray] = {}
        z_t, z_s = outputs[0].logits, outputs[1].logits
        vocab = self.vocab if self.vocab is not None else z_t.shape[-1]
        targets = self.targets(batch, z_t.shape[:2], z_t.device, vocab, offset)
        stats = logit_metrics.token_statistics(z_t, z_s, targets, self.topk, vocab=self.vocab)
        for role in ROLES:  # a NaN or ±inf logit anywhere in a row makes its entropy NaN: no second pass over [B, T, V]
            logit_metrics.check_finite(stats[f"{role}_entropy"], f"{role} logits", offset)
        for stat in PAIR_STATS:
            records[layout.pair_token_stat(stat)] = as_numpy(stats[stat]).astype(np.float32)
        for role in ROLES:
            for stat in ROLE_STATS:
                value = stats.get(f"{role}_{stat}")
                if value is not None:
                    records[layout.token_stat(role, stat)] = as_numpy(value).astype(np.int32 if stat == "topk_ids" else np.float32)
        if targets is not None:
            records[layout.LABELS] = as_numpy(targets).astype(np.int64)
            self.has_labels = True
            valid = targets >= 0
            n_valid = int(valid.sum())
            for role in ROLES:  # the top-1 id is the argmax, and the true token's log-probability gives the NLL
                counts = self.counts[role]
                counts["correct"] += int(((stats[f"{role}_topk_ids"][..., 0] == targets) & valid).sum())
                counts["total"] += n_valid
                counts["nll"] += float(-stats[f"{role}_true_logprob"][valid].sum())
                counts["nll_count"] += n_valid
        keep = self.kept_rows(offset, batch.size)
        if keep:
            self.kept_indices.extend(offset + i for i in keep)
            for role, z in zip(ROLES, (z_t, z_s), strict=True):
                records[layout.logits(role)] = as_numpy(z[keep][..., :vocab].float())
        return records

    def targets(self, batch: Batch, shape: torch.Size, device: torch.device, vocab_size: int,
                offset: int) -> torch.Tensor | None:
        """Per-position target token ids [B, T] (−100 where none), from labels or the next input token."""
        source = batch.labels
        if source is None and self.next_token:
            main = batch.main_tensor("input_ids")
            source = main if not main.is_floating_point() and main.ndim == 2 else None
        if source is None:
            return None
        if batch.labels is not None:
            check_labels(source, vocab_size, offset, "token", ignore_index=IGNORE_INDEX)
        source = source.to(device).long()
        if tuple(source.shape) != tuple(shape):
            raise InputError(f"token labels must have shape {tuple(shape)} like the logits, got {tuple(source.shape)}")
        targets = torch.full_like(source, IGNORE_INDEX)
        if self.next_token:
            targets[:, :-1] = source[:, 1:]
        else:
            targets.copy_(source)
        mask = batch.attention_mask
        if mask is not None:
            mask = mask.to(device).bool()
            valid = mask.clone()
            if self.next_token:
                valid[:, :-1] &= mask[:, 1:]
            targets = torch.where(valid, targets, torch.full_like(targets, IGNORE_INDEX))
        return targets

    def kept_rows(self, offset: int, size: int) -> list[int]:
        """Rows of this batch whose full logits are kept."""
        return kept_rows(self.keep, offset, size)

    def settings(self) -> dict[str, Any]:
        return {"topk": self.topk, "full_logits_index": self.kept_indices, "vocab_size": self.vocab}

    def state(self) -> dict[str, Any]:
        return {**super().state(), "kept_indices": self.kept_indices, "vocab": self.vocab}

    def absorb(self, states: Sequence[dict[str, Any]]) -> None:
        super().absorb(states)
        self.kept_indices = sorted(i for state in states for i in state["kept_indices"])
        self.vocab = next((state["vocab"] for state in states if state.get("vocab") is not None), self.vocab)


def kept_rows(keep: int | Sequence[int], offset: int, size: int) -> list[int]:
    """Rows of the batch of ``size`` samples starting at sample ``offset`` that ``keep`` names: the first ``keep``
    samples of the data (an int), or the listed sample indices."""
    if isinstance(keep, int):
        return list(range(max(0, min(size, keep - offset))))
    wanted = {int(i) for i in keep}
    return [i for i in range(size) if offset + i in wanted]


def pad_tokens(rows: np.ndarray, axes: tuple[int, ...], length: int | None, value: float = 0) -> np.ndarray:
    """``rows`` padded at the end of the token ``axes`` to ``length`` with ``value`` (unchanged when already that
    long, or when ``length`` is None): batches of different lengths stored at one."""
    if length is None or all(rows.shape[axis] >= length for axis in axes):
        return rows
    widths = [(0, 0)] * rows.ndim
    for axis in axes:
        widths[axis] = (0, length - rows.shape[axis])
    return np.pad(rows, widths, constant_values=value)
