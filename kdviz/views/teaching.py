"""The figures of the temperature lab (`kdviz.explore.TemperatureLab`), one per lesson: softmax at T and the dark
knowledge it reveals, why the KD loss multiplies KL by T², forward vs reverse KL on a two-bump teacher, and the DKD
split. Every number comes from `metrics.logits` and `metrics.teaching`."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from kdviz.metrics import logits as lm
from kdviz.metrics.teaching import fit_unimodal, kd_gradient_norms, softmax_at
from kdviz.views import theme

T_GRID = np.geomspace(0.5, 20, 60)
T_TICKS = [0.5, 1, 2, 5, 10, 20]


def softmax_figure(z_t: np.ndarray, T: float, target: int) -> go.Figure:
    probs = softmax_at(z_t, T)
    dark = np.array([1 - softmax_at(z_t, t)[target] for t in T_GRID])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.12,
                        subplot_titles=(f"softmax(z / T) at T = {T:.2f}", "non-target mass vs T"))
    colours = [theme.HIGHLIGHT if i == target else theme.TEACHER for i in range(len(probs))]
    fig.add_trace(go.Bar(x=[str(i) for i in range(len(probs))], y=probs, marker={"color": colours},
                         text=[f"{p:.1%}" for p in probs], textposition="outside", showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=T_GRID, y=dark, mode="lines", line={"color": theme.TEACHER, "width": 2.5}, showlegend=False),
                  row=1, col=2)
    fig.add_trace(go.Scatter(x=[T], y=[1 - probs[target]], mode="markers", marker={"size": 12, "color": theme.HIGHLIGHT},
                             showlegend=False, hovertemplate="T=%{x:.2f}: %{y:.1%} off the target<extra></extra>"), row=1, col=2)
    fig.update_yaxes(range=[0, 1.1], title="probability", row=1, col=1)
    fig.update_xaxes(title="class", type="category", row=1, col=1)
    fig.update_yaxes(range=[0, 1.08], tickvals=[0, 0.2, 0.4, 0.6, 0.8, 1], tickformat=".0%", row=1, col=2)  # 100% under its title
    fig.update_xaxes(type="log", title="temperature T", tickvals=T_TICKS, row=1, col=2)
    return theme.style(fig, "Raising T spreads probability onto the other classes"
                       + theme.subtitle("the mass off the target is the teacher's dark knowledge"), height=420, legend=False)


def kd_loss_parts(z_t: np.ndarray, z_s: np.ndarray, T: float, target: int, alpha: float) -> dict[str, float]:
    """The terms of L = α·CE + (1−α)·T²·KL(p_t‖p_s) for one sample (logits [C] each)."""
    ce = float(lm.cross_entropy(z_s[None], np.array([target]))[0])
    kl_value = float(lm.kl(z_t[None], z_s[None], T)[0])
    return {"ce": ce, "kl": kl_value, "total": alpha * ce + (1 - alpha) * T * T * kl_value}


def loss_formula(z_t: np.ndarray, z_s: np.ndarray, T: float, target: int, alpha: float) -> str:
    """The KD loss written out with this sample's numbers, as HTML."""
    parts = kd_loss_parts(z_t, z_s, T, target, alpha)
    return (
        f"<b>L = α·CE + (1−α)·T²·KL(p_t‖p_s)</b> = {alpha:.2f} × {parts['ce']:.3f} + {1 - alpha:.2f} × {T * T:.2f} × "
        f"{parts['kl']:.4f} = <b>{parts['total']:.4f}</b><br>The soft term's gradient with respect to the student logits "
        "is T·(p_s − p_t) with the T² factor and (p_s − p_t)/T without it: T² keeps the soft term's pull comparable to "
        "CE's as T changes."
    )


def loss_figure(z_t: np.ndarray, z_s: np.ndarray, T: float) -> go.Figure:
    """The gradient norm of the soft term against T, with and without T²."""
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
    return theme.style(fig, "Why the KD loss multiplies KL by T²" + theme.subtitle("gradient size against temperature"),
                       height=400)


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
                             fillcolor=theme.rgba(theme.TEACHER, 0.15)))
    forward_kl = float(lm.kl(teacher_logits[None], torch.tensor(np.log(forward))[None])[0])
    reverse_kl = float(lm.reverse_kl(teacher_logits[None], torch.tensor(np.log(reverse))[None])[0])
    fig.add_trace(go.Scatter(x=x, y=forward, name=f"student by forward KL: covers both modes (KL(p_t‖p_s) = {forward_kl:.3f})",
                             line={"color": theme.STUDENT, "width": 3}))
    fig.add_trace(go.Scatter(x=x, y=reverse, name=f"student by reverse KL: seeks one mode (KL(p_s‖p_t) = {reverse_kl:.3f})",
                             line={"color": theme.STUDENT, "width": 3, "dash": "dash"}))
    fig.update_xaxes(title="outcome")
    fig.update_yaxes(title="probability")
    title = ("A one-bump student fitted to a two-bump teacher"
             + theme.subtitle("forward KL is mode-covering, reverse KL mode-seeking"))
    theme.style(fig, title, height=460)
    return fig.update_layout(legend={"orientation": "v", "x": 0.01, "xanchor": "left", "y": 0.99, "yanchor": "top",
                                     "bgcolor": theme.rgba(theme.CARD, 0.8)})


def dkd_figure(z_t: np.ndarray, z_s: np.ndarray, T: float, target: int) -> go.Figure:
    parts: dict[str, Any] = lm.dkd_parts(z_t[None], z_s[None], [target], T)
    tckd, nckd, weight, total = (float(parts[k][0]) for k in ("tckd", "nckd", "nckd_weight", "kl"))
    names = ["TCKD<br>target vs rest", f"(1 − p_t,y)·NCKD<br>= {weight:.3f} × {nckd:.4f}", "KL(p_t‖p_s)"]
    fig = go.Figure(go.Waterfall(
        x=names, y=[tckd, weight * nckd, total], measure=["relative", "relative", "total"],
        text=[f"{tckd:.4f}", f"{weight * nckd:.4f}", f"{total:.4f}"], textposition="outside",
        increasing={"marker": {"color": theme.PAIR_FILL}}, totals={"marker": {"color": theme.PAIR_INK}},  # the pair's loss
        connector={"line": {"color": theme.MUTED}},
    ))
    fig.update_yaxes(title=f"nats at T = {T:.2f}")
    note = "<br>two classes: no non-target mass to spread, NCKD = 0" if parts["binary"] else ""
    return theme.style(fig, "Decoupled KD: KL = TCKD + (1 − p_t,y)·NCKD" + theme.subtitle(
        f"the teacher's confidence p_t,y = {float(parts['p_t_target'][0]):.3f} shrinks the non-target term{note}"),
        height=440, legend=False)
