"""Notebook 06's figures: the method, stage 1's loss, how close the student's sentence vectors get
to the teacher's (cosines and a 2-D picture), and score against CPU latency.

Inputs are the frames and tensors of :mod:`ckdlab.studies.bilstm_stage1` and
:mod:`ckdlab.studies.bilstm`; every function returns the figure and saves it when given a path.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ckdlab.results import pareto_front
from ckdlab.viz.frames import need_columns

KIND_COLOURS = {"teacher": "#444444", "transformer student": "#4c72b0", "BiLSTM": "#dd8452"}


def _save(fig: Figure, save_to: str | Path | None) -> Figure:
    fig.tight_layout()
    if save_to is not None:
        fig.savefig(save_to, dpi=120)
    return fig



def _box(ax, xy: tuple[float, float], text: str, colour: str, width: float = 2.6, height: float = 0.9) -> None:
    x, y = xy
    ax.add_patch(FancyBboxPatch((x - width / 2, y - height / 2), width, height, boxstyle="round,pad=0.08",
                                facecolor=colour, edgecolor="black", linewidth=0.8, alpha=0.9))
    ax.text(x, y, text, ha="center", va="center", fontsize=8.5)


def _arrow(ax, start: tuple[float, float], end: tuple[float, float], text: str = "", style: str = "-|>") -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, linewidth=1.0, color="black"))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.18, text, ha="center", va="bottom", fontsize=7.5)


def plot_method_diagram(teacher: str = "teacher", student: str = "BiLSTM", teacher_width: int = 384,
                        student_width: int = 600, save_to: str | Path | None = None) -> Figure:
    """Stage 1 (top): the same unlabeled sentence goes through the frozen teacher (sentence vector
    t, cached) and the BiLSTM (sentence vector u, mapped by W u + c); the loss pulls the map onto
    t. Stage 2 (bottom): the encoder gets a classifier and is fine-tuned per task (CE or logit KD)."""
    fig, ax = plt.subplots(figsize=(10, 4.2))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 6)
    ax.axis("off")
    ax.text(0.1, 5.7, "stage 1 · task-agnostic, unlabeled sentences", fontsize=9.5, weight="bold")
    _box(ax, (1.4, 3.9), '"the film is a\nquiet triumph"', "#f2f2f2", width=2.2, height=1.0)
    _box(ax, (4.6, 4.8), f"{teacher}\n(frozen, run once;\nvectors cached on disk)", "#c8d6ea", height=1.1)
    _box(ax, (4.6, 3.0), f"{student}\nmax + mean pooling", "#f6d2b8", height=1.0)
    _box(ax, (7.7, 4.8), f"t ∈ R^{teacher_width}\nmasked mean of the last layer", "#c8d6ea", width=2.8)
    _box(ax, (7.7, 3.0), f"W u + c ∈ R^{teacher_width}\n(u ∈ R^{student_width})", "#f6d2b8", width=2.8)
    _box(ax, (10.6, 3.9), "MSE(W u + c, t)\nor 1 − cos", "#e3e3e3", width=2.2)
    _arrow(ax, (2.5, 4.1), (3.3, 4.7))
    _arrow(ax, (2.5, 3.7), (3.3, 3.1))
    _arrow(ax, (5.9, 4.8), (6.3, 4.8))
    _arrow(ax, (5.9, 3.0), (6.3, 3.0))
    _arrow(ax, (9.1, 4.7), (9.5, 4.1))
    _arrow(ax, (9.1, 3.1), (9.5, 3.7))
    ax.text(0.1, 1.75, "stage 2 · per task", fontsize=9.5, weight="bold")
    _box(ax, (2.0, 0.8), f"stage-1 {student}\n(pairs: u, v separately)", "#f6d2b8", width=3.0)
    _box(ax, (5.6, 0.8), "classifier on u\nor [u; v; |u − v|; u ⊙ v]", "#f6d2b8", width=3.0)
    _box(ax, (9.3, 0.8), "CE on labels, or logit KD\nfrom the task's fine-tuned teacher", "#e3e3e3", width=3.4)
    _arrow(ax, (3.5, 0.8), (4.1, 0.8))
    _arrow(ax, (7.1, 0.8), (7.6, 0.8))
    return _save(fig, save_to)


def plot_stage1_loss(log: pd.DataFrame, term: str = "sentence", window: int = 20, save_to: str | Path | None = None) -> Figure:
    """Stage 1's loss per step (thin) and its running mean over ``window`` steps (thick), with the
    learning rate on a second axis."""
    need_columns(log, ("step", term), "plot_stage1_loss")
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    values = log.set_index("step")[term]
    ax.plot(values.index, values.values, color="#dd8452", alpha=0.35, linewidth=0.8, label="per step")
    ax.plot(values.index, values.rolling(window, min_periods=1).mean().values, color="#c44e52", linewidth=2,
            label=f"running mean ({window} steps)")
    ax.set(xlabel="step", ylabel=f"{term} loss", title="stage 1: sentence-representation approximation")
    ax.legend(fontsize=8, loc="upper right")
    if "lr" in log.columns:
        twin = ax.twinx()
        twin.plot(log["step"], log["lr"], color="grey", linestyle=":", linewidth=1)
        twin.set_ylabel("learning rate", color="grey")
    return _save(fig, save_to)


def plot_cosines(cosines: pd.DataFrame, save_to: str | Path | None = None) -> Figure:
    """Distribution of the cosine between estimated and true teacher sentence vectors on held-out
    sentences, one curve per model (:class:`~ckdlab.studies.bilstm_stage1.Approximation`)."""
    need_columns(cosines, ("model", "cosine"), "plot_cosines")
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    low = max(-1.0, float(cosines["cosine"].quantile(0.005)) - 0.02)
    bins = np.linspace(low, 1.0, 60)
    for model, part in cosines.groupby("model", sort=False):
        ax.hist(part["cosine"], bins=bins, histtype="step", linewidth=1.6, density=True,
                label=f"{model} (mean {part['cosine'].mean():.3f})")
    ax.set(xlabel="cosine(estimate, teacher sentence vector)", ylabel="density", title="held-out sentences")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, save_to)


def plot_sentence_space(teacher: torch.Tensor, student: torch.Tensor, links: int = 40, seed: int = 0,
                        save_to: str | Path | None = None) -> Figure:
    """Teacher vectors and the student's estimates of them in the plane of the teacher vectors' two
    principal axes (fitted on the teacher's alone); ``links`` random sentences are joined to their
    estimate, so the length of a line is the error in this plane."""
    if teacher.shape != student.shape or teacher.dim() != 2 or len(teacher) < 3:
        raise ValueError(f"teacher and student must be the same [M >= 3, d] shape, got {tuple(teacher.shape)} and {tuple(student.shape)}")
    t = teacher.double().numpy()
    s = student.double().numpy()
    centre = t.mean(axis=0)
    _, _, vh = np.linalg.svd(t - centre, full_matrices=False)
    axes = vh[:2].T
    tp, sp = (t - centre) @ axes, (s - centre) @ axes
    explained = np.linalg.norm((t - centre) @ axes) ** 2 / np.linalg.norm(t - centre) ** 2
    fig, ax = plt.subplots(figsize=(6.2, 5))
    ax.scatter(tp[:, 0], tp[:, 1], s=8, alpha=0.45, color=KIND_COLOURS["teacher"], label="teacher")
    ax.scatter(sp[:, 0], sp[:, 1], s=8, alpha=0.45, color=KIND_COLOURS["BiLSTM"], label="BiLSTM (W u + c)")
    chosen = np.random.default_rng(seed).choice(len(tp), size=min(links, len(tp)), replace=False)
    for i in chosen:
        ax.plot([tp[i, 0], sp[i, 0]], [tp[i, 1], sp[i, 1]], color="black", linewidth=0.6, alpha=0.6)
    ax.set(xlabel="teacher PC 1", ylabel="teacher PC 2",
           title=f"held-out sentences ({100 * explained:.0f}% of the teacher's variance in this plane)")
    ax.legend(fontsize=8)
    return _save(fig, save_to)


def plot_score_latency(points: pd.DataFrame, scale: float = 100.0, save_to: str | Path | None = None) -> Figure:
    """Average dev score against CPU latency (batch 1, log scale) for every table row; the Pareto
    front (nothing both faster and better) is a step line; error bars are std over seeds."""
    need_columns(points, ("student", "method", "score", "latency_ms", "kind"), "plot_score_latency")
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    for kind, part in points.groupby("kind", sort=False):
        ax.errorbar(part["latency_ms"], part["score"] * scale, yerr=part.get("score_std", pd.Series(0, index=part.index)).fillna(0) * scale,
                    fmt="o", color=KIND_COLOURS.get(kind), label=kind, capsize=3, markersize=6)
    for _, row in points.iterrows():
        ax.annotate(f"{row['student']} · {row['method']}", (row["latency_ms"], row["score"] * scale), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    front = pareto_front(points, cost="latency_ms", value="score")
    ax.step(front["latency_ms"], front["score"] * scale, where="post", color="grey", linestyle="--", linewidth=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set(xlabel="CPU latency, ms (batch 1, 64 tokens, 1 thread; log scale)", ylabel=f"average dev score ×{scale:g}")
    ax.legend(fontsize=8, loc="lower right")
    sns.despine(fig)
    return _save(fig, save_to)
