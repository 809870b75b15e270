"""The logit lens (nostalgebraist 2020) of a causal LM: each layer's hidden state read out through the model's own
final norm and unembedding, p_l = softmax(W_U · norm(h_l)), and compared with the model's final distribution and
with the teacher's. The commit depth of a token is the first layer from which the lens's top-1 stays the final one."""

from __future__ import annotations

import numpy as np
import torch

from kdviz.metrics.logits import kl_rows


def lens_rows(layer_logits: torch.Tensor, own_final: torch.Tensor, teacher_final: torch.Tensor | None,
              vocab: int) -> dict[str, torch.Tensor]:
    """One layer's lens logits [M, V] against the model's final logits [M, V] and the teacher's [M, V'] (None: not
    compared), over the first ``vocab`` ids: KL(p_final‖p_l) ``kl_own``, KL(p_teacher‖p_l) ``kl_teacher`` and the
    lens's top-1 id ``top1``, each [M]. Computed in float32 at least (float64 stays float64)."""
    def log_p(z: torch.Tensor) -> torch.Tensor:
        z = z[..., :vocab]
        return torch.log_softmax(z if z.dtype == torch.float64 else z.float(), dim=-1)
    lens = log_p(layer_logits)
    out = {"kl_own": kl_rows(log_p(own_final), lens), "top1": lens.argmax(-1)}
    if teacher_final is not None:
        out["kl_teacher"] = kl_rows(log_p(teacher_final).to(lens.dtype), lens)
    return out


def commit_layers(top1: np.ndarray) -> np.ndarray:
    """For each token, the first layer l from which the lens's top-1 equals the final one at every layer ≥ l.
    ``top1``: [L + 1, M] ids, row 0 the embeddings, row L the final layer; returns int [M] in 0 … L."""
    top1 = np.asarray(top1)
    agree = top1 == top1[-1]
    # the length of the trailing run of agreement, read from the last layer backwards
    trailing = np.cumprod(agree[::-1], axis=0).sum(axis=0)
    return (top1.shape[0] - trailing).astype(np.int64)
