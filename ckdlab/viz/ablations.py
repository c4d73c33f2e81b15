"""Ablation figures (seaborn): grouped bars with error bars, the λ sweep heat map, Pareto plots,
and DynaBERT's score over width x depth. Inputs are the tidy frames and matrices of
:mod:`ckdlab.studies.ablations` and :mod:`ckdlab.studies.dynabert`."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ckdlab.results import pareto_front, size_frame
from ckdlab.viz.frames import need_columns



def _save(fig: Figure, save_to: str | Path | None) -> Figure:
    fig.tight_layout()
    if save_to is not None:
        fig.savefig(save_to, dpi=120)
    return fig


def plot_ablation_bars(frame: pd.DataFrame, groups: list[str] | None = None, scale: float = 100.0,
                       save_to: str | Path | None = None) -> Figure:
    """One panel per ablation group: bars of mean score per task and variant, error bars = std over
    seeds (none with a single seed). Default groups: all but the λ sweep (rows with ``lambda_wr``)."""
    need_columns(frame, ("group", "variant", "task", "seed", "score"), "plot_ablation_bars")
    sweep = frame["lambda_wr"].notna() if "lambda_wr" in frame.columns else pd.Series(False, index=frame.index)
    groups = groups or list(dict.fromkeys(frame.loc[~sweep, "group"]))
    if not groups:
        raise ValueError("plot_ablation_bars: no ablation groups besides the λ sweep in this frame")
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.3 * rows), squeeze=False)
    for ax, group in zip(axes.flat, groups):
        part = frame[frame["group"] == group].assign(score=lambda f: f["score"] * scale)
        sns.barplot(data=part, x="task", y="score", hue="variant", errorbar="sd", capsize=0.1, ax=ax)
        low, high = part["score"].min(), part["score"].max()
        bottom = max(0.0, low - 0.15 * (high - low + 1))
        # Headroom above the tallest bar for the legend, so that it never covers a bar.
        ax.set_ylim(bottom, high + 0.5 * (high - bottom + 1))
        ax.set_title(group)
        ax.set_ylabel(f"dev score ×{scale:g}")
        ax.legend(fontsize=7, title=None, ncol=2, loc="upper center")
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    return _save(fig, save_to)


def plot_sweep_heatmap(matrix: pd.DataFrame, task: str | None = None, scale: float = 100.0,
                       save_to: str | Path | None = None) -> Figure:
    """A λ(LTR) x λ(WR) matrix of mean scores (:func:`ckdlab.studies.ablations.sweep_matrix`) as a heat map."""
    if matrix.empty:
        raise ValueError("plot_sweep_heatmap: the matrix is empty")
    matrix = matrix * scale
    fig, ax = plt.subplots(figsize=(1.3 * matrix.shape[1] + 2.2, 1.0 * matrix.shape[0] + 1.4))
    sns.heatmap(matrix, annot=True, fmt=".1f", cmap="viridis", ax=ax, cbar_kws={"label": f"dev score ×{scale:g}"})
    ax.set_xlabel("λ(WR)")
    ax.set_ylabel("λ(LTR)")
    ax.set_title(f"λ sweep{'' if task is None else f' · {task}'}")
    return _save(fig, save_to)


def plot_pareto(frame: pd.DataFrame, by: tuple[str, ...] = ("method", "student"), hue: str = "method",
                scale: float = 100.0, save_to: str | Path | None = None) -> Figure:
    """Score against parameters and against measured CPU latency; the Pareto front is drawn as a
    step line, error bars are std over seeds."""
    need_columns(frame, (*by, "score", "params", "latency_ms"), "plot_pareto")
    points = size_frame(frame, by)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, cost, label in ((axes[0], "params", "parameters (M)"), (axes[1], "latency_ms", "CPU latency (ms, batch 1, 1 thread)")):
        x = points[cost] / (1e6 if cost == "params" else 1.0)
        ax.errorbar(x, points["score"] * scale, yerr=points["score_std"].fillna(0) * scale, fmt="none", ecolor="grey", alpha=0.6)
        sns.scatterplot(x=x, y=points["score"] * scale, hue=points[hue], ax=ax, s=50)
        front = pareto_front(points, cost=cost)
        ax.step(front[cost] / (1e6 if cost == "params" else 1.0), front["score"] * scale, where="post", color="black", lw=1, alpha=0.7)
        ax.set_xlabel(label)
        ax.set_ylabel(f"dev score ×{scale:g}")
        ax.legend(fontsize=7)
    return _save(fig, save_to)


def plot_dynabert(frame: pd.DataFrame, scale: float = 100.0, save_to: str | Path | None = None) -> Figure:
    """Score against width multiplier, one line per depth multiplier, one panel per loss (and task);
    error bars = std over seeds."""
    need_columns(frame, ("method", "task", "width", "depth", "seed", "score"), "plot_dynabert")
    panels = list(dict.fromkeys(zip(frame["task"], frame["method"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, (task, method) in zip(axes.flat, panels):
        part = frame[(frame["task"] == task) & (frame["method"] == method)].assign(score=lambda f: f["score"] * scale)
        sns.lineplot(data=part, x="width", y="score", hue="depth", marker="o", errorbar="sd", palette="crest", ax=ax)
        ax.set_title(f"{task} · {method}")
        ax.set_xticks(sorted(part["width"].unique()))
        ax.set_xlabel("width multiplier")
        ax.set_ylabel(f"dev score ×{scale:g}")
    return _save(fig, save_to)
