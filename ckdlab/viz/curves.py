"""Training curves: loss terms and dev metrics against steps, one panel per run."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure


def plot_learning_curves(
    curves: pd.DataFrame, loss_names: tuple[str, ...] = ("loss",), metric: str | None = None, save_to: str | Path | None = None
) -> Figure:
    """Training loss (left axis) and a dev metric (right axis) per run.

    ``curves`` is the tidy frame of :func:`ckdlab.api.learning_curves` (run, step, kind, name, value).
    ``metric`` picks the dev metric (default: the first dev series of each run).
    """
    runs = list(dict.fromkeys(curves["run"]))
    if not runs:
        raise ValueError("no curves to plot: the frame is empty")
    cols = min(3, len(runs))
    rows = math.ceil(len(runs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, run in zip(axes.flat, runs):
        frame = curves[curves["run"] == run]
        for name in loss_names:
            series = frame[(frame["kind"] == "train") & (frame["name"] == name)]
            ax.plot(series["step"], series["value"], label=f"train {name}", lw=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(run)
        dev = frame[frame["kind"] == "dev"]
        if not dev.empty:
            name = metric if metric and any(dev["name"].str.endswith(metric)) else dev["name"].iloc[0]
            series = dev[dev["name"].str.endswith(name) if metric else dev["name"] == name]
            twin = ax.twinx()
            twin.plot(series["step"], series["value"], "o-", color="tab:red", label=f"dev {name}", ms=3)
            twin.set_ylabel(name, color="tab:red")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(runs):]:
        ax.set_visible(False)
    fig.tight_layout()
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120, bbox_inches="tight")
    return fig
