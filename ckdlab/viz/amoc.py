"""AMoC figures: what an ATE is, ATE against target score, the regression's fit, the main table.

Every function takes plain arrays or the study's tables (no model, no study import) and returns
the matplotlib figure; ``save_to`` also writes it.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

METHOD_ORDER = ("amoc", "top", "evenly_spaced", "random", "in_domain", "oracle")
METHOD_LABELS = {"amoc": "AMoC", "top": "top layers", "evenly_spaced": "evenly spaced", "random": "random (mean)",
                 "in_domain": "best on source dev", "oracle": "oracle (upper bound)", "full": "full model"}
LEVEL_MARKERS = ("o", "s", "^", "D", "v", "P")


def _save(fig: Figure, save_to: str | Path | None) -> Figure:
    fig.tight_layout()
    if save_to is not None:
        fig.savefig(save_to, dpi=120, bbox_inches="tight")  # legends placed outside the panels stay in
    return fig


def _check_frame(frame: pd.DataFrame, columns: tuple[str, ...], argument: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{argument} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{argument} lacks column(s) {missing}")


def plot_ate_illustration(full: np.ndarray, removed: Mapping[str, np.ndarray], effects: Mapping[str, np.ndarray],
                          value_label: str = "P(positive)", effect_label: str = "total variation ½Σ|p_full − p_removed|",
                          n_examples: int = 40, seed: int = 0, save_to: str | Path | None = None) -> Figure:
    """Left: for ``n_examples`` target texts (a seeded sample, sorted by the full model's value), the full
    model's prediction (black) and each candidate's, joined by a segment -- how far removing layers
    moves each prediction. Right: the distribution over all texts of each candidate's per-example
    effect, its mean (the ATE) dashed. ``full`` and every ``removed[name]`` / ``effects[name]`` are ``[N]``."""
    full = np.asarray(full, dtype=float)
    if full.ndim != 1 or not len(full):
        raise ValueError(f"full must be a non-empty [N] array, got shape {full.shape}")
    if not removed or set(removed) != set(effects):
        raise ValueError("removed and effects must name the same candidates (at least one)")
    for name in removed:
        if np.shape(removed[name]) != full.shape or np.shape(effects[name]) != full.shape:
            raise ValueError(f"candidate {name!r}: removed and effects must be [N] like full ({full.shape})")
    rng = np.random.default_rng(seed)
    shown = np.sort(rng.permutation(len(full))[: min(n_examples, len(full))])
    shown = shown[np.argsort(full[shown], kind="stable")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1.6, 1]})
    x = np.arange(len(shown))
    colours = plt.cm.tab10(np.arange(len(removed)) % 10)
    offsets = np.linspace(-0.25, 0.25, len(removed)) if len(removed) > 1 else [0.0]
    for (name, values), colour, offset in zip(removed.items(), colours, offsets):
        values = np.asarray(values, dtype=float)
        left.vlines(x + offset, full[shown], values[shown], color=colour, alpha=0.6, linewidth=1.2)
        left.scatter(x + offset, values[shown], color=colour, s=16, label=name, zorder=3)
        effect = np.asarray(effects[name], dtype=float)
        right.hist(effect, bins=30, histtype="step", color=colour, linewidth=1.5, label=f"{name}: ATE = {effect.mean():.3f}")
        right.axvline(effect.mean(), color=colour, linestyle="--", linewidth=1.2)
    left.scatter(x, full[shown], color="black", s=22, marker="_", linewidths=2, label="full model", zorder=4)
    left.set_xlabel("target texts (unlabelled), sorted by the full model's prediction")
    left.set_ylabel(value_label)
    left.set_xticks([])
    left.legend(fontsize=8, loc="best")
    left.set_title("removing layers moves each prediction")
    right.set_xlabel(f"per-text effect: {effect_label}")
    right.set_ylabel("texts")
    right.set_title("ATE = the mean effect over the texts")
    right.legend(fontsize=8)
    return _save(fig, save_to)


def _panels(n: int, width: float = 5.5, height: float = 4.2) -> tuple[Figure, list[Any]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def plot_ate_vs_target(frame: pd.DataFrame, ate: str = "ate_target", scale: float = 100.0,
                       save_to: str | Path | None = None) -> Figure:
    """One panel per family: each candidate's ATE (x) against its target test score (y), one colour per
    domain pair, one marker per number of removed layers; the full model (ATE 0) as a star."""
    _check_frame(frame, ("family", "pair", "n_removed", ate, "target_score"), "frame")
    families = list(dict.fromkeys(frame["family"]))
    fig, axes = _panels(len(families))
    levels = sorted(int(v) for v in frame.loc[frame["n_removed"] >= 1, "n_removed"].unique())
    for ax, family in zip(axes, families):
        part = frame[frame["family"] == family]
        for index, (pair, rows) in enumerate(part.groupby("pair", sort=False)):
            colour = plt.cm.tab10(index % 10)
            for level_index, level in enumerate(levels):
                points = rows[rows["n_removed"] == level]
                ax.scatter(points[ate], scale * points["target_score"], color=colour, alpha=0.8, s=28,
                           marker=LEVEL_MARKERS[level_index % len(LEVEL_MARKERS)])
            full = rows[rows["n_removed"] == 0]
            ax.scatter(full[ate], scale * full["target_score"], color=colour, marker="*", s=160, edgecolor="black",
                       label=pair, zorder=4)
        ax.set_xlabel(f"{ate.replace('_', ' ')} (ATE of the removal)")
        ax.set_ylabel("target test score (× 100)")
        ax.set_title(family)
        ax.grid(alpha=0.3)
        handles = [Line2D([], [], color="grey", marker=LEVEL_MARKERS[i % len(LEVEL_MARKERS)], linestyle="", label=f"{lv} removed")
                   for i, lv in enumerate(levels)]
        ax.add_artist(ax.legend(handles=handles, fontsize=7, loc="upper right", title="layers", title_fontsize=7))
        # The pairs below the panel (inside, the legend hid points, a full model's star among them); as the
        # axes' own legend it counts in the saved figure's bounding box.
        ax.legend(fontsize=7, title="pair (★ full model)", title_fontsize=7, loc="upper center",
                  bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)
    return _save(fig, save_to)


def plot_regression_fit(predictions: pd.DataFrame, summary: Mapping[str, Mapping[str, Any]], scale: float = 100.0,
                        save_to: str | Path | None = None) -> Figure:
    """One panel per family: each candidate's held-out predicted target score (fitted on the other
    pairs) against its true score, one colour per pair, the identity line dashed; the text gives the
    selected features, the in-sample R² and the held-out error next to a constant prediction's."""
    _check_frame(predictions, ("family", "pair", "target_score", "predicted"), "predictions")
    families = list(dict.fromkeys(predictions["family"]))
    fig, axes = _panels(len(families))
    for ax, family in zip(axes, families):
        part = predictions[predictions["family"] == family]
        for index, (pair, rows) in enumerate(part.groupby("pair", sort=False)):
            ax.scatter(scale * rows["predicted"], scale * rows["target_score"], color=plt.cm.tab10(index % 10), s=24,
                       alpha=0.85, label=pair)
        values = scale * np.concatenate([part["predicted"].to_numpy(), part["target_score"].to_numpy()])
        low, high = float(values.min()), float(values.max())
        ax.plot([low, high], [low, high], linestyle="--", color="grey", linewidth=1, label="predicted = true")
        fit = summary.get(family, {})
        if fit:
            ax.text(0.02, 0.98, f"selected (fit on all pairs): {', '.join(fit['selected']) or '(intercept only)'}\nin-sample R² = {fit['r2']:.2f}\n"
                    f"held-out MAE = {scale * fit['lopo_mae']:.1f} (constant {scale * fit['constant_mae']:.1f})",
                    transform=ax.transAxes, va="top", fontsize=7, bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
        ax.set_xlabel("predicted target score, pair held out (× 100)")
        ax.set_ylabel("true target score (× 100)")
        ax.set_title(family)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, save_to)


def plot_main_table(tables: Mapping[str, pd.DataFrame], scale: float = 100.0, save_to: str | Path | None = None) -> Figure:
    """One panel per table (``main_table`` of the study: rows = layers removed, columns = (method, stat)):
    per compression level, each method's mean target score over pairs (a point; AMoC larger, the oracle
    hollow) with the standard deviation over pairs as an error bar; the full model dashed. Points, not
    bars: the scores do not start at zero."""
    if not tables:
        raise ValueError("tables is empty; pass {name: main_table(...)}")
    fig, axes = _panels(len(tables), width=5.5)
    for ax, (name, table) in zip(axes, tables.items()):
        methods = [m for m in METHOD_ORDER if (m, "mean") in table.columns]
        levels = list(table.index)
        spread = 0.7 / max(1, len(methods) - 1)
        for index, method in enumerate(methods):
            colour = plt.cm.tab10(index % 10)
            x = np.arange(len(levels)) + (index - (len(methods) - 1) / 2) * spread
            ax.errorbar(x, scale * table[(method, "mean")], yerr=scale * table[(method, "std")].fillna(0.0), fmt="o",
                        color=colour, capsize=3, markersize=9 if method == "amoc" else 6,
                        markerfacecolor="white" if method == "oracle" else colour, label=METHOD_LABELS.get(method, method))
        if ("full", "mean") in table.columns:
            ax.axhline(scale * float(table[("full", "mean")].iloc[0]), color="black", linestyle="--", linewidth=1,
                       label=METHOD_LABELS["full"])
        ax.set_xticks(np.arange(len(levels)), [f"{lv} removed" for lv in levels])
        ax.set_ylabel("target test score (× 100)")
        ax.set_title(f"{name} ({int(table[('amoc', 'n')].iloc[0])} pairs; ± std over pairs)")
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))  # the shared legend sits below the panels
    if save_to is not None:
        fig.savefig(save_to, dpi=120, bbox_inches="tight")  # legends placed outside the panels stay in
    return fig
