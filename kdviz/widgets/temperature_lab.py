"""`TemperatureLab`: a lecture-ready lab on temperature, the KD loss, forward vs reverse KL and DKD. Needs no run.

Every number comes from `kdviz.metrics.logits` (softmax at T, KL, DKD parts); the gradients are taken by autograd
through those same functions, so what the lab shows is what the library computes.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.subplots import make_subplots

from kdviz.errors import InputError
from kdviz.metrics import logits as lm
from kdviz.views import theme
from kdviz.widgets._display import figure_output, show

DEFAULT_TEACHER = "6, 3.5, 2, 1, 0, -1, -2"
DEFAULT_STUDENT = "4, 4, 0.5, 0.5, 0, 0, -1"
T_GRID = np.geomspace(0.5, 20, 60)
T_TICKS = [0.5, 1, 2, 5, 10, 20]


def parse_logits(text: str) -> np.ndarray:
    """'6, 3.5, -1' -> array([6., 3.5, -1.]); raises `InputError` with the fix for anything else."""
    try:
        values = np.array([float(part) for part in text.replace(";", ",").split(",") if part.strip()], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"logits must be numbers separated by commas, like '{DEFAULT_TEACHER}'") from exc
    if len(values) < 2 or not np.isfinite(values).all():
        raise InputError("give at least two finite logits, separated by commas")
    return values


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


class TemperatureLab(widgets.Tab):
    """Four tabs for teaching KD live: (1) softmax at temperature T and the dark knowledge it reveals; (2) the KD loss
    α·CE + (1−α)·T²·KL and why T² is there; (3) forward vs reverse KL fitting a bimodal teacher; (4) the DKD split.
    All controls can be set from code (``lab.temperature.value = 8``), which is how lectures script a demo."""

    def __init__(self) -> None:
        self.teacher_text = widgets.Text(value=DEFAULT_TEACHER, description="teacher z", layout=widgets.Layout(width="380px"),
                                         continuous_update=False)
        self.student_text = widgets.Text(value=DEFAULT_STUDENT, description="student z", layout=widgets.Layout(width="380px"),
                                         continuous_update=False)
        self.target = widgets.BoundedIntText(value=0, min=0, max=6, description="target class")
        self.temperature = widgets.FloatLogSlider(value=1.0, base=10, min=-0.3, max=1.3, step=0.01, description="T",
                                                  readout_format=".2f", continuous_update=False)
        self.alpha = widgets.FloatSlider(value=0.5, min=0, max=1, step=0.05, description="α (CE weight)", continuous_update=False)
        self.separation = widgets.FloatSlider(value=4.0, min=0.5, max=7, step=0.5, description="mode gap", continuous_update=False)
        self.message = widgets.HTML()
        self.outputs = {name: figure_output() for name in ("softmax", "loss", "modes", "dkd")}
        self.figures: dict[str, go.Figure] = {}
        self.loss_text = widgets.HTML()
        logits_row = widgets.VBox([widgets.HBox([self.teacher_text, self.target]), self.student_text])
        children = [
            widgets.VBox([widgets.HBox([self.teacher_text, self.target, self.temperature]), self.message, self.outputs["softmax"]]),
            widgets.VBox([logits_row, widgets.HBox([self.temperature, self.alpha]), self.loss_text, self.outputs["loss"]]),
            widgets.VBox([self.separation, self.outputs["modes"]]),
            widgets.VBox([logits_row, self.temperature, self.outputs["dkd"]]),
        ]
        super().__init__(children=children)
        for i, title in enumerate(("1 · softmax at T", "2 · KD loss and T²", "3 · forward vs reverse KL", "4 · DKD split")):
            self.set_title(i, title)
        for control in (self.teacher_text, self.student_text, self.target, self.temperature, self.alpha):
            control.observe(lambda _change: self.refresh(), names="value")
        self.separation.observe(lambda _change: self.refresh_modes(), names="value")
        self.refresh()
        self.refresh_modes()

    # ---- inputs ----
    def _logits(self) -> tuple[np.ndarray, np.ndarray] | None:
        try:
            z_t, z_s = parse_logits(self.teacher_text.value), parse_logits(self.student_text.value)
        except InputError as exc:
            self.message.value = f"<span style='color:#b42318'>{exc}</span>"
            return None
        if len(z_t) != len(z_s):
            self.message.value = "<span style='color:#b42318'>teacher and student need the same number of logits</span>"
            return None
        self.message.value = ""
        self.target.max = len(z_t) - 1
        return z_t, z_s

    def refresh(self) -> None:
        logits = self._logits()
        if logits is None:
            return
        z_t, z_s = logits
        T, y = self.temperature.value, min(self.target.value, len(z_t) - 1)
        self.figures["softmax"] = self.softmax_figure(z_t, T, y)
        self.figures["loss"] = self.loss_figure(z_t, z_s, T, y)
        self.figures["dkd"] = self.dkd_figure(z_t, z_s, T, y)
        for name in ("softmax", "loss", "dkd"):
            show(self.outputs[name], self.figures[name])

    # ---- 1: softmax at T ----
    @staticmethod
    def softmax_figure(z_t: np.ndarray, T: float, target: int) -> go.Figure:
        probs = softmax_at(z_t, T)
        dark = np.array([1 - softmax_at(z_t, t)[target] for t in T_GRID])
        fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.12,
                            subplot_titles=(f"softmax(z / T) at T = {T:.2f}", "non-target mass ('dark knowledge') vs T"))
        colours = [theme.HIGHLIGHT if i == target else theme.TEACHER for i in range(len(probs))]
        fig.add_trace(go.Bar(x=[f"class {i}" for i in range(len(probs))], y=probs, marker={"color": colours},
                             text=[f"{p:.1%}" for p in probs], textposition="outside", showlegend=False), row=1, col=1)
        fig.add_trace(go.Scatter(x=T_GRID, y=dark, mode="lines", line={"color": theme.TEACHER, "width": 2.5}, showlegend=False),
                      row=1, col=2)
        fig.add_trace(go.Scatter(x=[T], y=[1 - probs[target]], mode="markers", marker={"size": 12, "color": theme.HIGHLIGHT},
                                 showlegend=False, hovertemplate="T=%{x:.2f}: %{y:.1%} off the target<extra></extra>"), row=1, col=2)
        fig.update_yaxes(range=[0, 1.1], title="probability", row=1, col=1)
        fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=2)
        fig.update_xaxes(type="log", title="temperature T", tickvals=T_TICKS, row=1, col=2)
        return theme.style(fig, "Raising T spreads probability onto the other classes: that is the teacher's dark knowledge",
                           height=400, legend=False)

    # ---- 2: KD loss anatomy ----
    def loss_figure(self, z_t: np.ndarray, z_s: np.ndarray, T: float, target: int) -> go.Figure:
        alpha = self.alpha.value
        zs = torch.tensor(z_s[None])
        ce = float(F.cross_entropy(zs, torch.tensor([target])))
        kl_value = float(lm.kl(z_t[None], z_s[None], T)[0])
        total = alpha * ce + (1 - alpha) * T * T * kl_value
        self.loss_text.value = (
            f"<b>L = α·CE + (1−α)·T²·KL(p_t‖p_s)</b> = {alpha:.2f} × {ce:.3f} + {1 - alpha:.2f} × {T * T:.2f} × {kl_value:.4f} "
            f"= <b>{total:.4f}</b><br>The soft term's gradient with respect to the student logits is T·(p_s − p_t) with the "
            "T² factor and (p_s − p_t)/T without it: T² keeps the soft term's pull comparable to CE's as T changes."
        )
        norms = kd_gradient_norms(z_t, z_s, T_GRID)
        fig = go.Figure()
        for key, dash in (("with T²", "solid"), ("without T²", "dash")):
            fig.add_trace(go.Scatter(x=T_GRID, y=norms[key], mode="lines", name=f"‖∂/∂z_s‖ of KL term, {key}",
                                     line={"color": theme.STUDENT, "dash": dash, "width": 2.5}))
        fig.add_trace(go.Scatter(x=[T, T], y=[float(min(norms["without T²"].min(), norms["with T²"].min())),
                                              float(max(norms["without T²"].max(), norms["with T²"].max()))],
                                 mode="lines", line={"color": theme.HIGHLIGHT, "width": 1}, name=f"current T = {T:.2f}"))
        fig.update_xaxes(type="log", title="temperature T", tickvals=T_TICKS)
        fig.update_yaxes(type="log", title="gradient norm", dtick=1)
        return theme.style(fig, "Why the KD loss multiplies KL by T²: gradient size against temperature", height=380)

    # ---- 3: forward vs reverse KL ----
    def refresh_modes(self) -> None:
        self.figures["modes"] = self.modes_figure(self.separation.value)
        show(self.outputs["modes"], self.figures["modes"])

    @staticmethod
    def modes_figure(separation: float) -> go.Figure:
        grid = torch.linspace(-7, 7, 141, dtype=torch.float64)
        left = torch.exp(-0.5 * ((grid + separation / 2) / 0.7) ** 2)
        right = torch.exp(-0.5 * ((grid - separation / 2) / 0.7) ** 2)
        teacher_logits = (left + 0.6 * right).log()
        teacher = softmax_at(teacher_logits.numpy(), 1.0)
        start = separation / 2 - 0.5  # both fits start as a narrow bump near the right-hand mode
        forward = fit_unimodal(teacher_logits, grid, "forward", start)
        reverse = fit_unimodal(teacher_logits, grid, "reverse", start)
        x = grid.numpy()
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=x, y=teacher, fill="tozeroy", name="teacher (two modes)", line={"color": theme.TEACHER},
                                 fillcolor="rgba(37,99,168,0.15)"))
        forward_kl = float(lm.kl(teacher_logits[None], torch.tensor(np.log(forward))[None])[0])
        reverse_kl = float(lm.reverse_kl(teacher_logits[None], torch.tensor(np.log(reverse))[None])[0])
        fig.add_trace(go.Scatter(x=x, y=forward, name=f"student by forward KL: covers both modes (KL(p_t‖p_s) = {forward_kl:.3f})",
                                 line={"color": theme.STUDENT, "width": 3}))
        fig.add_trace(go.Scatter(x=x, y=reverse, name=f"student by reverse KL: seeks one mode (KL(p_s‖p_t) = {reverse_kl:.3f})",
                                 line={"color": theme.STUDENT, "width": 3, "dash": "dash"}))
        fig.update_xaxes(title="outcome")
        fig.update_yaxes(title="probability")
        title = "A one-bump student fitted to a two-bump teacher: forward KL is mode-covering, reverse KL mode-seeking"
        theme.style(fig, title, height=440)
        return fig.update_layout(legend={"orientation": "v", "x": 0.01, "xanchor": "left", "y": 0.99, "yanchor": "top",
                                         "bgcolor": "rgba(255,255,255,0.8)"})

    # ---- 4: DKD ----
    @staticmethod
    def dkd_figure(z_t: np.ndarray, z_s: np.ndarray, T: float, target: int) -> go.Figure:
        parts: dict[str, Any] = lm.dkd_parts(z_t[None], z_s[None], [target], T)
        tckd, nckd, weight, total = (float(parts[k][0]) for k in ("tckd", "nckd", "nckd_weight", "kl"))
        names = ["TCKD<br>target vs rest", f"(1 − p_t,y)·NCKD<br>= {weight:.3f} × {nckd:.4f}", "KL(p_t‖p_s)"]
        fig = go.Figure(go.Waterfall(
            x=names, y=[tckd, weight * nckd, total], measure=["relative", "relative", "total"],
            text=[f"{tckd:.4f}", f"{weight * nckd:.4f}", f"{total:.4f}"], textposition="outside",
            increasing={"marker": {"color": theme.STUDENT}}, totals={"marker": {"color": theme.TEACHER}},
            connector={"line": {"color": theme.MUTED}},
        ))
        fig.update_yaxes(title=f"nats at T = {T:.2f}")
        note = " (two classes: no non-target mass to spread, NCKD = 0)" if parts["binary"] else ""
        return theme.style(fig, f"Decoupled KD: KL = TCKD + (1 − p_t,y)·NCKD{note}. The teacher's confidence p_t,y "
                                f"= {float(parts['p_t_target'][0]):.3f} shrinks the non-target term", height=420, legend=False)
