"""Where things live on disk: runs, results (records, tables, the report) and figures.

Folders (override with env vars): runs ``$CKDLAB_RUNS`` (default ``<project>/runs``), results
``$CKDLAB_RESULTS`` (``<project>/results``), figures ``$CKDLAB_FIGURES`` (``<project>/figures``),
where ``<project>`` is the checkout when ckdlab runs from one, else the working directory.
Figures of the ``quick`` profile go to ``figures/`` itself (the README shows them); other
profiles write to ``figures/<profile>/`` so the tests never overwrite them.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ckdlab.io import atomic_write_frame

README_PROFILE = "quick"


def project_root() -> Path:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def _folder(env: str, name: str) -> Path:
    return Path(os.environ[env]) if os.environ.get(env) else project_root() / name


def runs_dir() -> Path:
    return _folder("CKDLAB_RUNS", "runs")


def results_dir() -> Path:
    return _folder("CKDLAB_RESULTS", "results")


def figures_dir() -> Path:
    return _folder("CKDLAB_FIGURES", "figures")


def figure_path(name: str, profile: str = README_PROFILE) -> Path:
    """Where a notebook saves a figure (see the module docstring); the folder is created."""
    folder = figures_dir() if profile == README_PROFILE else figures_dir() / profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def save_figure(figure: Figure, name: str, profile: str = README_PROFILE, dpi: int = 120) -> Path:
    """Save a matplotlib figure as ``name`` under :func:`figure_path` (tight layout); returns the path."""
    path = figure_path(name, profile)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    return path


def save_table(frame: pd.DataFrame, name: str, profile: str = README_PROFILE) -> Path:
    """A tidy result table as CSV under ``results/<profile>/`` (atomically)."""
    return atomic_write_frame(results_dir() / profile / f"{name}.csv", frame)
