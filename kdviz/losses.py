"""Distillation losses for `kdviz.distill`: small modules, each with its formula and its paper.

A loss is called with the `StepOutputs` of one batch and returns named components {name: scalar tensor}; the
trainer minimises ``weight`` × their sum and records each component. A loss names the internals it needs
(`Needs`: hooked modules per model, attention maps). Formulas shared with the views live in `kdviz.metrics`
(`log_probs`, `kl_rows`, `dkd_terms`, `spatial_attention`, `attention_kl`), so a loss and the view that shows it
can never disagree.

Logits may be [B, C] or, for sequence models, [B, T, V] with a [B, T] mask; token positions are then averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from kdviz.errors import InputError
from kdviz.metrics.attention import attention_kl, spatial_attention
from kdviz.metrics.logits import dkd_terms, kl_rows, log_probs
from kdviz.metrics.sorted_distance import uld_distance


@dataclass
class StepOutputs:
    """What one batch gave: logits [B, C] or [B, T, V] (teacher without grad), labels [B] or [B, T] (−100 = none),
    hooked features by module name, attention maps [B, H, T, T] per layer, and the padding mask [B, T]."""

    z_t: torch.Tensor
    z_s: torch.Tensor
    labels: torch.Tensor | None = None
    features_t: dict[str, torch.Tensor] = field(default_factory=dict)
    features_s: dict[str, torch.Tensor] = field(default_factory=dict)
    attentions_t: list[torch.Tensor] = field(default_factory=list)
    attentions_s: list[torch.Tensor] = field(default_factory=list)
    mask: torch.Tensor | None = None


@dataclass
class Needs:
    """Internals a loss reads: module paths to hook in each model, and whether attention maps are needed."""

    teacher: list[str] = field(default_factory=list)
    student: list[str] = field(default_factory=list)
    attentions: bool = False

    def merge(self, other: Needs) -> Needs:
        return Needs(list(dict.fromkeys(self.teacher + other.teacher)), list(dict.fromkeys(self.student + other.student)),
                     self.attentions or other.attentions)


class DistillLoss(nn.Module):
    """Base class: ``weight`` scales the loss in the trainer's sum; `setup` builds lazy parts from a first batch."""

    name = "loss"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def needs(self) -> Needs:
        return Needs()

    def setup(self, outputs: StepOutputs) -> None:
        """Called once with a first batch (no grad) before the optimizer is built; create learnable parts here."""

    def forward(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


def _rows(z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Logits as rows [M, C]: [B, C] unchanged, [B, T, V] flattened to the real token positions."""
    if z.ndim == 2:
        return z
    flat = z.reshape(-1, z.shape[-1])
    return flat if mask is None else flat[mask.reshape(-1).bool()]


def _targets(labels: torch.Tensor | None, z: torch.Tensor, mask: torch.Tensor | None, what: str) -> torch.Tensor:
    if labels is None:
        raise InputError(f"{what} needs labels; give (inputs, labels) batches, or set its label weight to 0")
    return labels if z.ndim == 2 else _rows(labels.unsqueeze(-1), mask).reshape(-1)


class CE(DistillLoss):
    """Cross-entropy of the student with the labels, −log p_s(y) at T = 1 (positions labelled −100 are skipped)."""

    name = "ce"

    def forward(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:
        z = _rows(outputs.z_s, outputs.mask)
        return {"ce": F.cross_entropy(z, _targets(outputs.labels, outputs.z_s, outputs.mask, "CE"), ignore_index=-100)}


class KD(DistillLoss):
    """Hinton et al. (2015): α·CE(y, p_s) + (1 − α)·T²·KL(p_t‖p_s), p = softmax(z/T), from log-softmax.

    KL is the divergence itself (not the soft cross-entropy), averaged over samples (batchmean, never over classes);
    T² keeps the gradient's size roughly independent of T. Components: ``ce`` = α·CE and ``kd`` = (1 − α)·T²·KL.
    """

    name = "kd"

    def __init__(self, T: float = 4.0, alpha: float = 0.5, weight: float = 1.0) -> None:
        super().__init__(weight)
        if T <= 0 or not 0.0 <= alpha <= 1.0:
            raise InputError(f"KD needs T > 0 and α in [0, 1], got T={T}, alpha={alpha}")
        self.T, self.alpha = float(T), float(alpha)

    def forward(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:
        z_t, z_s = _rows(outputs.z_t, outputs.mask), _rows(outputs.z_s, outputs.mask)
        kl = kl_rows(log_probs(z_t.detach(), self.T), log_probs(z_s, self.T)).mean()
        parts = {"kd": (1 - self.alpha) * self.T**2 * kl}
        if self.alpha > 0:
            targets = _targets(outputs.labels, outputs.z_s, outputs.mask, "KD with α > 0")
            parts["ce"] = self.alpha * F.cross_entropy(z_s, targets, ignore_index=-100)
        return parts


class DKD(DistillLoss):
    """Decoupled KD (Zhao et al. 2022): (α·TCKD + β·NCKD)·T², with TCKD = KL(b_t‖b_s) over [p_y, 1 − p_y] and
    NCKD = KL(p̂_t‖p̂_s) over the non-target classes (`kdviz.metrics.logits.dkd_terms`, shared with the views).

    Classic KD's KL is TCKD + (1 − p_t,y)·NCKD, so KD couples NCKD to the teacher's confidence; DKD frees it.
    Add `CE` for the label term, as in the paper. Components: ``tckd`` = α·T²·TCKD, ``nckd`` = β·T²·NCKD.
    """

    name = "dkd"

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0, weight: float = 1.0) -> None:
        super().__init__(weight)
        if T <= 0:
            raise InputError(f"DKD needs T > 0, got T={T}")
        self.alpha, self.beta, self.T = float(alpha), float(beta), float(T)

    def forward(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:
        z_t, z_s = _rows(outputs.z_t, outputs.mask), _rows(outputs.z_s, outputs.mask)
        y = _targets(outputs.labels, outputs.z_s, outputs.mask, "DKD")
        keep = y >= 0
        terms = dkd_terms(log_probs(z_t[keep].detach(), self.T), log_probs(z_s[keep], self.T), y[keep])
        scale = self.T**2
        return {"tckd": self.alpha * scale * terms["tckd"].mean(), "nckd": self.beta * scale * terms["nckd"].mean()}


class ULD(DistillLoss):
    """Universal Logit Distillation (Boizard et al. 2024), for a teacher and a student with different tokenizers:
    λ · mean over aligned positions of Σ_i |p_t↓(i) − p_s↓(i)|, the L1 distance between the two next-token
    distributions sorted in decreasing order, the shorter zero-padded (`kdviz.metrics.sorted_distance`). No entry of
    one vocabulary is matched to the other, so the vocabularies may differ in size and content.

    Rows must be aligned: [M, V_t] and [M, V_s] logits of the same M positions (for two tokenizations of one text,
    the shared boundaries of `kdviz.metrics.token_alignment.align`: rows ``alignment.teacher_piece`` and
    ``alignment.student_piece``), or [B, T, V_t] and [B, T, V_s] with a [B, T] mask, position by position as in the
    paper. Add `CE` for the label term. Component: ``uld``."""

    name = "uld"

    def __init__(self, T: float = 1.0, weight: float = 1.0) -> None:
        super().__init__(weight)
        if T <= 0:
            raise InputError(f"ULD needs T > 0, got T={T}")
        self.T = float(T)

    def forward(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:
        z_t, z_s = _rows(outputs.z_t, outputs.mask), _rows(outputs.z_s, outputs.mask)
        if z_t.shape[0] != z_s.shape[0]:
            raise InputError(f"ULD compares aligned positions, but the teacher gives {z_t.shape[0]} and the student "
                             f"{z_s.shape[0]}; gather the rows of the shared boundaries (token_alignment.align) first")
        return {"uld": uld_distance(z_t.detach(), z_s, self.T).mean()}


class AttentionTransfer(DistillLoss):
    """Attention transfer (Zagoruyko & Komodakis 2017) between CNN feature maps: Q = mean_c |A_c|^p, L2-normalised
    (`kdviz.metrics.attention.spatial_attention`, the views' formula); loss = β/2 · mean over samples and positions
    of (Q_s − Q_t)², summed over ``pairs`` of (teacher module, student module), as in the authors' code. A smaller
    map is resampled to the larger (bilinear) before normalising. Component: ``at``."""

    name = "at"

    def __init__(self, pairs: Sequence[tuple[str, str]], p: float = 2.0, beta: float = 1000.0, weight: float = 1.0) -> None:
        super().__init__(weight)
        if not pairs:
            raise InputError("AttentionTransfer needs (teacher module, student module) pairs of conv layers")
        self.pairs, self.p, self.beta = [tuple(pair) for pair in pairs], float(p), float(beta)

    def needs(self) -> Needs:
        return Needs([t for t, _ in self.pairs], [s for _, s in self.pairs])

    def forward(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:
        total = outputs.z_s.new_zeros(())
        for t_name, s_name in self.pairs:
            f_t, f_s = outputs.features_t[t_name].detach(), outputs.features_s[s_name]
            size = (max(f_t.shape[-2], f_s.shape[-2]), max(f_t.shape[-1], f_s.shape[-1]))
            q_t, q_s = spatial_attention(f_t, self.p, size=size), spatial_attention(f_s, self.p, size=size)
            total = total + (q_s - q_t).pow(2).mean()
        return {"at": self.beta / 2 * total}


class Hint(DistillLoss):
    """FitNets hints (Romero et al. 2015): a learnable regressor maps each student feature to its teacher feature's
    shape (a 1×1 conv for conv maps, a linear layer otherwise), and the loss is their mean squared error, summed
    over ``pairs`` of (teacher module, student module). Student maps of another spatial size are average-pooled
    or upsampled to the teacher's. The regressors are trained with the student. Component: ``hint``."""

    name = "hint"

    def __init__(self, pairs: Sequence[tuple[str, str]], weight: float = 1.0) -> None:
        super().__init__(weight)
        if not pairs:
            raise InputError("Hint needs (teacher module, student module) pairs")
        self.pairs = [tuple(pair) for pair in pairs]
        self.regressors = nn.ModuleList()

    def needs(self) -> Needs:
        return Needs([t for t, _ in self.pairs], [s for _, s in self.pairs])

    def setup(self, outputs: StepOutputs) -> None:
        self.regressors = nn.ModuleList()
        for t_name, s_name in self.pairs:
            f_t, f_s = outputs.features_t[t_name], outputs.features_s[s_name]
            if f_t.ndim != f_s.ndim:
                raise InputError(f"Hint pairs features of one kind; {t_name!r} is {f_t.ndim}-D and {s_name!r} is {f_s.ndim}-D")
            channels_t, channels_s = (f_t.shape[1], f_s.shape[1]) if f_t.ndim == 4 else (f_t.shape[-1], f_s.shape[-1])
            layer = nn.Conv2d(channels_s, channels_t, 1) if f_t.ndim == 4 else nn.Linear(channels_s, channels_t)
            self.regressors.append(layer.to(device=f_s.device, dtype=f_s.dtype))

    def forward(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:
        total = outputs.z_s.new_zeros(())
        for (t_name, s_name), regressor in zip(self.pairs, self.regressors, strict=True):
            f_t, f_s = outputs.features_t[t_name].detach(), regressor(outputs.features_s[s_name])
            if f_t.ndim == 4 and f_t.shape[-2:] != f_s.shape[-2:]:
                f_s = F.interpolate(f_s, size=f_t.shape[-2:], mode="bilinear", align_corners=False)
            total = total + F.mse_loss(f_s, f_t)
        return {"hint": total}


class AttentionKL(DistillLoss):
    """MiniLM (Wang et al. 2020): KL(teacher ‖ student) between attention distributions, query row by query row,
    averaged over heads and real tokens (`kdviz.metrics.attention.attention_kl`), summed over ``pairs`` of
    (teacher layer, student layer) indices. Head counts must match within a pair. Component: ``attention_kl``."""

    name = "attention_kl"

    def __init__(self, pairs: Sequence[tuple[int, int]], weight: float = 1.0) -> None:
        super().__init__(weight)
        if not pairs:
            raise InputError("AttentionKL needs (teacher layer, student layer) index pairs")
        self.pairs = [(int(t), int(s)) for t, s in pairs]

    def needs(self) -> Needs:
        return Needs(attentions=True)

    def forward(self, outputs: StepOutputs) -> dict[str, torch.Tensor]:
        if not outputs.attentions_t or not outputs.attentions_s:
            raise InputError("AttentionKL needs attention maps from both models (Hugging Face or timm-style attention)")
        total = outputs.z_s.new_zeros(())
        for t_layer, s_layer in self.pairs:
            total = total + attention_kl(outputs.attentions_t[t_layer].detach(), outputs.attentions_s[s_layer], outputs.mask)
        return {"attention_kl": total}
