"""Attribution maps of one model on one batch, through captum: which input positions drive its logit for a class.

A thin layer over captum. A model comes in as ``forward(main, *extra) -> logits [B, C]`` with the attributed
input ``main`` and the other inputs ``extra``; `kdviz.attribute` builds these from real models and batches.

Maps come back on the input's own positions, so a teacher's and a student's compare position by position:
- images [B, C, H, W] -> [B, H, W]; other float inputs [B, T, D] -> [B, T]; [B, D] -> [B, D];
- token ids [B, T] -> [B, T], attributed at the output of the embedding layer (ids are not differentiable).
Signed methods (integrated gradients, input × gradient) sum over the channel / embedding axis, so integrated
gradients keep completeness: Σ map = y(x) − y(baseline). Saliency is the L2 norm of the gradient over that axis.
The explained value y is the logit of the target class (before softmax), as captum's ``target`` selects it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdviz.errors import InputError, OptionalDependencyError

Forward = Callable[..., torch.Tensor]

METHODS: dict[str, str] = {
    "saliency": "Saliency: ‖∂y/∂x‖ over channels (Simonyan et al. 2014)",
    "integrated_gradients": "Integrated Gradients: (x − x′)·∫₀¹ ∂y/∂x(x′ + α(x − x′)) dα (Sundararajan et al. 2017)",
    "input_x_gradient": "Input × Gradient: x·∂y/∂x (Shrikumar et al. 2016)",
    "grad_cam": "Grad-CAM: ReLU(Σ_c mean(∂y/∂A_c)·A_c) on a conv layer, upsampled (Selvaraju et al. 2017)",
    "attention_x_gradient": "Attention × gradient: relevance R ← R + E_h[(∇A ⊙ A)⁺]·R over layers (Chefer et al. 2021)",
}
SIGNED = frozenset({"integrated_gradients", "input_x_gradient"})
INPUT_METHODS = ("saliency", "integrated_gradients", "input_x_gradient")


def captum_attr() -> Any:
    """``captum.attr``, or an error that names the install."""
    try:
        import captum.attr
    except ImportError as exc:  # pragma: no cover - captum is a dependency of kdviz
        raise OptionalDependencyError("attributions need captum: pip install 'captum>=0.8'") from exc
    return captum.attr


def check_method(method: str) -> None:
    if method not in METHODS:
        raise InputError(f"unknown attribution method {method!r}; choose from {list(METHODS)}")


def reduce_channels(raw: torch.Tensor, method: str) -> torch.Tensor:
    """Per-position map from per-element attributions: [B, C, H, W] -> [B, H, W], [B, T, D] -> [B, T], [B, D] kept.

    Saliency takes the L2 norm over the channel / embedding axis; signed methods sum over it (completeness).
    """
    if raw.ndim == 2:
        return raw.abs() if method == "saliency" else raw
    if raw.ndim not in (3, 4):
        raise InputError(f"cannot reduce attributions of shape {tuple(raw.shape)} to a map; "
                         "inputs must be [B, C, H, W], [B, T, D] or [B, D]")
    axis = 1 if raw.ndim == 4 else 2
    return raw.norm(dim=axis) if method == "saliency" else raw.sum(dim=axis)


def input_attribution(
    method: str,
    forward: Forward,
    inputs: torch.Tensor,
    target: torch.Tensor,
    *,
    extra: Sequence[Any] = (),
    baseline: float | torch.Tensor | None = None,
    n_steps: int = 32,
    internal_batch_size: int | None = None,
    return_delta: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """Saliency, integrated gradients or input × gradient of float ``inputs`` [B, ...] for ``target`` [B]; a map per sample.

    ``baseline`` (integrated gradients): a number, or a tensor shaped like one input or like the batch (default 0).
    ``internal_batch_size`` bounds how many of the B × ``n_steps`` path points go through the model at once.
    ``return_delta``: also return integrated gradients' convergence delta [B] = Σ map − (y(x) − y(baseline)), the
    error of the path integral's ``n_steps``-point approximation (None for the other methods).
    """
    if method not in INPUT_METHODS:
        raise InputError(f"{method!r} is not an input attribution; choose from {list(INPUT_METHODS)}")
    if not inputs.is_floating_point():
        raise InputError(
            f"{method} differentiates with respect to the input, but it holds {inputs.dtype} values (token ids?); "
            "token inputs are attributed at the embedding layer (embedding_attribution)"
        )
    attr = captum_attr()
    x = inputs.detach().clone().requires_grad_(True)  # captum would set it, with a warning
    args = tuple(extra) or None
    delta = None
    if method == "saliency":
        raw = attr.Saliency(forward).attribute(x, target=target, abs=True, additional_forward_args=args)
    elif method == "input_x_gradient":
        raw = attr.InputXGradient(forward).attribute(x, target=target, additional_forward_args=args)
    else:
        raw, delta = attr.IntegratedGradients(forward).attribute(
            x, baselines=_baseline(baseline, x), target=target, additional_forward_args=args, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )
    maps = reduce_channels(raw.detach(), method)
    return (maps, _detached(delta)) if return_delta else maps


def _detached(delta: torch.Tensor | None) -> torch.Tensor | None:
    return None if delta is None else delta.detach().reshape(-1)


def _baseline(baseline: float | torch.Tensor | None, x: torch.Tensor) -> float | torch.Tensor:
    if baseline is None:
        return 0.0
    if isinstance(baseline, int | float):
        return float(baseline)
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    if base.shape == x.shape[1:]:
        return base.unsqueeze(0).expand_as(x)
    if base.shape != x.shape:
        raise InputError(f"baseline has shape {tuple(base.shape)}; give a number, one input {tuple(x.shape[1:])} "
                         f"or a batch {tuple(x.shape)}")
    return base


def embedding_attribution(
    method: str,
    forward: Forward,
    ids: torch.Tensor,
    target: torch.Tensor,
    embedding: nn.Module,
    *,
    extra: Sequence[Any] = (),
    baseline_ids: torch.Tensor | None = None,
    n_steps: int = 32,
    internal_batch_size: int | None = None,
    return_delta: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """[B, T] attributions of token ids [B, T] taken at the output of ``embedding`` (captum's layer methods).

    Integrated gradients (``LayerIntegratedGradients``) run along the path from the embeddings of ``baseline_ids``
    (default: id 0 everywhere) to those of ``ids``; saliency and input × gradient use ``LayerGradientXActivation``.
    ``return_delta`` as in `input_attribution`.
    """
    if method not in INPUT_METHODS:
        raise InputError(f"{method!r} is not an input attribution; choose from {list(INPUT_METHODS)}")
    attr = captum_attr()
    args = tuple(extra) or None
    delta = None
    if method == "integrated_gradients":
        baselines = torch.zeros_like(ids) if baseline_ids is None else baseline_ids
        raw, delta = attr.LayerIntegratedGradients(forward, embedding).attribute(
            ids, baselines=baselines, target=target, additional_forward_args=args, n_steps=n_steps,
            internal_batch_size=internal_batch_size, return_convergence_delta=True,
        )
    else:
        method_obj = attr.LayerGradientXActivation(forward, embedding, multiply_by_inputs=method == "input_x_gradient")
        raw = method_obj.attribute(ids, target=target, additional_forward_args=args)
    if raw.ndim != 3:
        raise InputError(f"the embedding layer's output has shape {tuple(raw.shape)}; token attributions need [B, T, D]")
    maps = reduce_channels(raw.detach(), method)
    return (maps, _detached(delta)) if return_delta else maps


def grad_cam(forward: Forward, inputs: torch.Tensor, target: torch.Tensor, layer: nn.Module, *, extra: Sequence[Any] = (),
             layer_name: str = "layer") -> torch.Tensor:
    """[B, H, W] Grad-CAM of a conv ``layer`` (ReLU applied, as in the paper), bilinearly upsampled to the input [B, C, H, W]."""
    if inputs.ndim != 4:
        raise InputError(f"grad_cam explains images [B, C, H, W]; the input has shape {tuple(inputs.shape)}")
    attr = captum_attr()
    cam = attr.LayerGradCam(forward, layer).attribute(inputs.detach(), target=target, additional_forward_args=tuple(extra) or None,
                                                       relu_attributions=True)
    if cam.ndim != 4:
        raise InputError(
            f"grad_cam needs a layer with a [B, C, h, w] output, but {layer_name!r} gives {tuple(cam.shape)}; "
            "choose a conv layer (for vision transformers use attention_x_gradient)"
        )
    return F.interpolate(cam.detach(), size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


def attention_gradient(score: torch.Tensor, attentions: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient-weighted attention relevance of the explained scores [B] through attention maps [B, H, T, T] per layer.

    Returns (R [B, T, T], heads [B, L, H_max]):
    - R: Chefer et al. (2021): R = I, then for each layer in forward order R ← R + Ā·R, Ā = mean_h (∇A ⊙ A)⁺.
      Row q of R says how much each token feeds the representation of token q that the prediction reads.
    - heads: Σ_ij A ⊙ ∂y/∂A per head, the first-order effect of a gate on the head (Michel et al. 2019); NaN-padded
      where layers have fewer heads.
    The maps must be the ones the model used (in its autograd graph), and the samples of the batch independent.
    """
    if not attentions:
        raise InputError("attention × gradient needs the attention maps of at least one layer")
    if any(not a.requires_grad for a in attentions):
        raise InputError("the attention maps are not part of the autograd graph; capture them with gradients enabled")
    grads = torch.autograd.grad(score.sum(), list(attentions), allow_unused=True)
    batch, tokens = attentions[0].shape[0], attentions[0].shape[-1]
    relevance = torch.eye(tokens, dtype=torch.float64, device=score.device).expand(batch, tokens, tokens).clone()
    max_heads = max(a.shape[1] for a in attentions)
    heads = torch.full((batch, len(attentions), max_heads), float("nan"), dtype=torch.float64, device=score.device)
    for layer, (a, g) in enumerate(zip(attentions, grads, strict=True)):
        weighted = torch.zeros_like(a, dtype=torch.float64) if g is None else a.detach().double() * g.double()
        heads[:, layer, : a.shape[1]] = weighted.sum(dim=(-2, -1))
        relevance = relevance + weighted.clamp_min(0).mean(dim=1) @ relevance
    return relevance, heads


def relevance_row(relevance: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
    """[B, T] row of R for each sample's query token (default 0, the CLS token), with the identity start removed;
    ``query`` [B] picks a row per sample (the explained position of a causal model), or -1 for the mean of all rows."""
    batch, tokens, _ = relevance.shape
    eye = torch.eye(tokens, dtype=relevance.dtype, device=relevance.device)
    from_attention = relevance - eye
    if query is None:
        return from_attention[:, 0]
    query = torch.as_tensor(query, device=relevance.device).long()
    rows = from_attention[torch.arange(batch, device=relevance.device), query.clamp_min(0)]
    return torch.where((query < 0)[:, None], from_attention.mean(dim=1), rows)


def tokens_to_image(values: torch.Tensor, prefix: int, grid: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """[B, H, W] image map from per-token values [B, T] of a ViT: prefix tokens dropped, patches laid on their grid
    and each patch's value spread over its pixels (nearest), so maps of different patch grids compare pixel by pixel."""
    rows, cols = int(grid[0]), int(grid[1])
    if values.shape[1] != prefix + rows * cols:
        raise InputError(f"{values.shape[1]} tokens do not fit {prefix} prefix tokens and a {rows}×{cols} patch grid")
    patches = values[:, prefix:].reshape(values.shape[0], 1, rows, cols)
    return F.interpolate(patches, size=tuple(int(s) for s in size), mode="nearest")[:, 0]
