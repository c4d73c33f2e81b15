"""Zero-shot transfer figures: accuracy per language per setting, and retention of the teacher."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

AVERAGE = "avg (non-en)"


def _save(fig: Figure, save_to: str | Path | None) -> Figure:
    fig.tight_layout()
    if save_to is not None:
        fig.savefig(save_to, dpi=120)
    return fig


def plot_per_language(table: pd.DataFrame, average: str = AVERAGE, teacher: str = "teacher",
                      save_to: str | Path | None = None) -> Figure:
    """One line per setting (row) over the languages (columns, the average left out); the teacher thicker."""
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for row, values in table.drop(columns=[average], errors="ignore").iterrows():
        ax.plot(values.index, values.values, marker="o", label=row, linewidth=2.2 if row == teacher else 1.2)
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("language (trained on en only)")
    ax.legend(fontsize=8, ncols=3)
    ax.grid(alpha=0.3)
    return _save(fig, save_to)


def plot_retention(retention: pd.DataFrame, save_to: str | Path | None = None) -> Figure:
    """Student / teacher accuracy per setting and language as a heat map (1.0 = matches the teacher)."""
    fig, ax = plt.subplots(figsize=(10, 2.6))
    values = retention.values
    image = ax.imshow(values, aspect="auto", cmap="RdYlGn", vmin=min(0.7, values.min()), vmax=max(1.0, values.max()))
    ax.set_xticks(range(len(retention.columns)), retention.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(retention.index)), retention.index)
    fig.colorbar(image, ax=ax, label="student / teacher")
    return _save(fig, save_to)
