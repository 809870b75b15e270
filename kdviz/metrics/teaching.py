"""The numbers of the temperature lab (`kdviz.explore.TemperatureLab`): softmax at T, the KD gradient with and
without T², and a one-bump student fitted to a teacher by forward or reverse KL. All through `metrics.logits`, and
the gradients by autograd through those same functions, so what the lab shows is what the library computes."""

from __future__ import annotations

import numpy as np
import torch

from kdviz.metrics import logits as lm


def softmax_at(z: np.ndarray, T: float) -> np.ndarray:
    """softmax(z / T) of one logit vector [C]."""
    return lm.probabilities(z[None], T)[0]


def kd_gradient_norms(z_t: np.ndarray, z_s: np.ndarray, temperatures: np.ndarray) -> dict[str, np.ndarray]:
    """‖∂/∂z_s of KL(p_t‖p_s) at T‖ with and without the T² factor, for each T (autograd through `metrics.logits.kl`)."""
    norms: dict[str, list[float]] = {"with T²": [], "without T²": []}
    teacher = torch.tensor(z_t[None])
    for T in temperatures:
        for key, scaled in (("with T²", True), ("without T²", False)):
            student = torch.tensor(z_s[None], requires_grad=True)
            lm.kl(teacher, student, float(T), t2_scale=scaled).sum().backward()
            norms[key].append(float(student.grad.norm()))
    return {key: np.array(values) for key, values in norms.items()}


def fit_unimodal(teacher_logits: torch.Tensor, grid: torch.Tensor, divergence: str, start: float = 0.0, steps: int = 400) -> np.ndarray:
    """Fit a Gaussian student (mean, log-std) on ``grid`` to a teacher distribution by gradient descent on a divergence.

    ``divergence`` is ``"forward"`` (KL(p_t‖p_s), mode-covering) or ``"reverse"`` (KL(p_s‖p_t), mode-seeking). The fit
    starts as a narrow bump at ``start``; reverse KL keeps it on the mode it starts near, forward KL spreads it out.
    """
    mean = torch.tensor(float(start), dtype=torch.float64, requires_grad=True)
    log_std = torch.tensor(np.log(0.5), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.Adam([mean, log_std], lr=0.05)
    loss_fn = lm.kl if divergence == "forward" else lm.reverse_kl
    for _ in range(steps):
        optimiser.zero_grad()
        student_logits = -0.5 * ((grid - mean) / log_std.exp()) ** 2
        loss_fn(teacher_logits[None], student_logits[None]).sum().backward()
        optimiser.step()
    with torch.no_grad():
        return softmax_at((-0.5 * ((grid - mean) / log_std.exp()) ** 2).numpy(), 1.0)
