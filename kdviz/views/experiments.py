"""Figures of the classic experiments (`kdviz.demo.experiments`): each draws the numbers an experiment measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kdviz.views import theme

METHOD_COLOURS = dict(zip(("KD", "DKD", "AT β=1000", "AT β=100", "Hint"), theme.CATEGORICAL, strict=False))  # methods, not models



def omitted_class_figure(results: Sequence[Mapping[str, Any]], digit: int, epochs: int) -> go.Figure:
    """Per student: accuracy on the unseen digit, raw and after the label-free bias correction (grouped bars); the
    AUROC of its score for that digit is written under each student."""
    labels = [f"{r['student']}<br><span style='font-size:11px'>AUROC {r['auroc']:.3f}</span>" for r in results]
    fig = go.Figure([
        go.Bar(x=labels, y=[r["raw_accuracy"] for r in results], name=f"accuracy on the unseen «{digit}», raw",
               marker={"color": theme.MUTED}, text=[f"{r['raw_accuracy']:.0%}" for r in results], textposition="outside",
               hovertemplate="%{x}<br>raw: %{y:.1%}<extra></extra>"),
        go.Bar(x=labels, y=[r["corrected_accuracy"] for r in results], name="… after the bias correction",
               marker={"color": [theme.NEUTRAL if r["T"] is None else theme.STUDENT for r in results]},
               text=[f"{r['corrected_accuracy']:.0%}" for r in results], textposition="outside",
               customdata=[r["other_accuracy"] for r in results],
               hovertemplate="%{x}<br>corrected: %{y:.1%}<br>other digits: %{customdata:.1%}<extra></extra>"),
    ])
    fig.update_yaxes(title=f"accuracy on held-out «{digit}»", range=[0, 1.12], tickformat=".0%")
    fig.update_layout(barmode="group", legend={"orientation": "h", "y": -0.22, "x": 0, "xanchor": "left", "yanchor": "top"})
    n = results[0]["n_omitted"]
    title = (f"A student that never saw a «{digit}» learns it from soft labels"
             + theme.subtitle(f"every «{digit}» removed from training; {n} held-out «{digit}» images; {epochs} epochs; soft labels = "
                         "the teacher's distribution at T (KD, α = 0); AUROC: how well the «{digit}» score ranks «{digit}»s first")
             + theme.subtitle(f"bias correction: one shift of the «{digit}» logit so the student predicts it as often as the teacher "
                         "on the unlabeled held-out images (no labels used)"))
    fig = theme.style(fig, title.replace("{digit}", str(digit)), height=520)
    return fig.update_layout(margin={"t": 120, "b": 110}, legend={"orientation": "h", "y": -0.22, "x": 0, "xanchor": "left",
                                                                   "yanchor": "top"})


def sweep_figure(results: Mapping[str, Any]) -> go.Figure:
    """Student accuracy and agreement with the teacher as heatmaps over temperature × α."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("student accuracy", "top-1 agreement with the teacher"),
                        horizontal_spacing=0.14)
    x = [f"α={a:g}" for a in results["alphas"]]
    y = [f"T={t:g}" for t in results["temperatures"]]
    for col, key in ((1, "accuracy"), (2, "agreement")):
        z = np.asarray(results[key])
        fig.add_trace(go.Heatmap(z=z, x=x, y=y, colorscale=theme.SEQUENTIAL_SCALE, zmin=float(z.min()), zmax=float(z.max()),
                                 text=np.round(z * 100, 1), texttemplate="%{text}%", showscale=False,
                                 hovertemplate=f"%{{y}}, %{{x}}<br>{key} %{{z:.1%}}<extra></extra>"), row=1, col=col)
    fig.update_xaxes(title="α (weight of the label term)")
    fig.update_yaxes(title="temperature", row=1, col=1)
    title = ("Temperature × α: where soft labels help" + theme.subtitle(
        f"3.8k-parameter student, {results['n_train']} training digits, {results['epochs']} epochs; loss α·CE + (1 − α)·T²·KL; "
        "α = 1 ignores the teacher"))
    return theme.style(fig, title, height=440, legend=False).update_layout(margin={"t": 110})


def assistant_figure(results: Mapping[str, Any]) -> go.Figure:
    """Accuracy of teacher, assistant and both students (bars), and each link's KL from its own teacher."""
    names = list(results["accuracy"])
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.12,
                        subplot_titles=("accuracy on held-out digits", "each link: KL(its teacher ‖ student), nats"))
    colours = [theme.TEACHER, theme.ASSISTANT, theme.STUDENT, theme.STUDENT_LIGHT]
    fig.add_trace(go.Bar(x=[f"{n}<br>{results['parameters'][n] / 1000:.1f}k params" for n in names],
                         y=[results["accuracy"][n] for n in names], marker={"color": colours},
                         text=[f"{results['accuracy'][n]:.1%}" for n in names], textposition="outside",
                         hovertemplate="%{x}<br>%{y:.2%}<extra></extra>"), row=1, col=1)
    links = results["links"]
    fig.add_trace(go.Bar(x=[f"{link['from']} →<br>{link['to']}" for link in links], y=[link["kl"] for link in links],
                         marker={"color": theme.NEUTRAL}, text=[f"{link['kl']:.3f}" for link in links], textposition="outside",
                         customdata=[link["agreement"] for link in links],
                         hovertemplate="%{x}<br>KL %{y:.4f} nats<br>agreement %{customdata:.1%}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(range=[0, 1.12], tickformat=".0%", row=1, col=1)
    fig.update_yaxes(range=[0, max(link["kl"] for link in links) * 1.25 + 1e-9], row=1, col=2)
    size = {name: f"{count / 1000:.1f}k" for name, count in results["parameters"].items()}
    title = ("Capacity gap: distilling through a teacher assistant" + theme.subtitle(
        f"KD (T = 4, α = 0.5), {results['epochs']} epochs per link; the {size['student (direct)']} student learns from the "
        f"{size['teacher']} teacher directly or from the {size['assistant']} assistant"))
    return theme.style(fig, title, height=470, legend=False).update_layout(margin={"t": 110})


def loss_comparison_figure(results: Mapping[str, Any]) -> go.Figure:
    """Final accuracy, agreement and CKA per loss (grouped bars) and the KL-to-teacher curves over training."""
    methods = list(results["methods"])
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("at the end of training", "KL(teacher ‖ student) on held-out digits, nats"))
    for key, label, colour in (("accuracy", "accuracy", theme.PAIR_INK), ("agreement", "top-1 agreement", theme.PAIR_FILL),
                               ("cka_layer3", "CKA layer3 (debiased)", theme.MUTED)):  # measures of each student
        values = [results["methods"][m][key] for m in methods]
        fig.add_trace(go.Bar(x=methods, y=values, name=label, marker={"color": colour},
                             hovertemplate=f"%{{x}}<br>{label} %{{y:.4f}}<extra></extra>"), row=1, col=1)
    for method in methods:
        curve = results["curves"][method]
        fig.add_trace(go.Scatter(x=curve["steps"], y=curve["kl"], name=f"{method}", mode="lines+markers",
                                 line={"color": METHOD_COLOURS.get(method, theme.NEUTRAL), "width": 2}, marker={"size": 5},
                                 hovertemplate=f"{method}<br>step %{{x}}: KL %{{y:.4f}}<extra></extra>"), row=1, col=2)
    fig.update_yaxes(range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(type="log", dtick="D2", row=1, col=2)
    fig.update_xaxes(title="step", row=1, col=2)
    title = ("KD vs DKD vs attention transfer vs hints, same student" + theme.subtitle(
        f"{results['epochs']} epochs each; KD: T = 4, α = 0.5 · DKD: α = 1, β = 8, T = 4, + CE · AT: layer2, layer3 + CE "
        "(β = 1000 as published, and 100) · Hint: layer2 + CE"))
    fig = theme.style(fig, title, height=520)
    return fig.update_layout(barmode="group", margin={"t": 110, "b": 110},
                             legend={"orientation": "h", "y": -0.18, "x": 0, "xanchor": "left", "yanchor": "top"})
