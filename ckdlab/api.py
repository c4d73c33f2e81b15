"""What notebooks and the CLI call: a thin face over the studies and the workspace.

Every name here is a study's or the workspace's own function (documented where it lives), so
``help(api.distill)`` shows the real signature. Folders: ``$CKDLAB_RUNS``, ``$CKDLAB_RESULTS``,
``$CKDLAB_FIGURES`` (default ``runs/``, ``results/``, ``figures/`` of the checkout). Imported inside
IPython or Jupyter, it shows a :class:`~ckdlab.errors.UserError` as one line instead of a traceback.

    api.finetune_teacher("sst2", profile="quick")          # runs/quick/teachers/sst2-<id>/best
    row = api.distill("sst2", student="layers:0,2,4", objective="ckd+kd")
    api.table(api.load_runs(kind="distill"))              # mean ± std over seeds
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ckdlab.engine.inference import evaluate_model as evaluate
from ckdlab.errors import show_user_errors_in_ipython
from ckdlab.logs import quiet_libraries
from ckdlab.results import ResultsTable, table
from ckdlab.studies.ablations import run_ablations as ablations
from ckdlab.studies.distillation import distill, distill_grid, make_distiller
from ckdlab.studies.dynabert import run_dynabert_grid as dynabert
from ckdlab.objectives.ckd_weights import official_to_ours
from ckdlab.profiles import paper_configs
from ckdlab.studies.paper import paper_runs
from ckdlab.studies.relations import explorer_models, fidelity_by_model, relation_models
from ckdlab.studies.teachers import finetune_teachers, teacher_summary
from ckdlab.studies.zero_shot import ZeroShotResult, run_zero_shot
from ckdlab.viz.curves import learning_curves
from ckdlab.workspace import (
    ensure_teacher,
    figure_path,
    figures_dir,
    finetune_teacher,
    results_dir,
    runs_dir,
    save_figure,
    save_table,
    teacher_dir,
    teacher_ready,
)
from ckdlab.workspace import load_runs as _load_runs

# In a notebook a UserError (bad option, missing file) shows as one line naming the fix, not a stack.
show_user_errors_in_ipython()
# Notebooks and the CLI import this module: one call sets how loud the libraries are (ckdlab/logs.py).
quiet_libraries()

__all__ = [
    "ResultsTable", "ablations", "distill", "distill_grid", "dynabert", "ensure_teacher", "evaluate", "explorer_models",
    "figure_path", "figures_dir", "finetune_teacher", "finetune_teachers", "info", "learning_curves", "load_runs",
    "make_distiller", "official_to_ours", "paper_configs", "paper_runs", "fidelity_by_model", "relation_models", "results_dir",
    "runs_dir", "save_figure", "save_table", "table", "teacher_dir", "teacher_ready", "teacher_summary", "zero_shot",
]


def load_runs(results: str | Path | None = None, **filters: Any) -> pd.DataFrame:
    """Run records under ``results`` (default: the results folder) as a frame; see :func:`ckdlab.workspace.load_runs`."""
    return _load_runs(results or results_dir(), **filters)


def zero_shot(profile: str | Path | dict[str, Any] = "quick", record: bool = True, **kwargs: Any) -> ZeroShotResult:
    """:func:`ckdlab.studies.zero_shot.run_zero_shot`, recording one run per row in the results folder."""
    return run_zero_shot(profile, results_dir=results_dir() if record else None, **kwargs)


def info() -> dict[str, Any]:
    """Embedded models, known tasks, profiles and the data roots that exist on this machine."""
    from ckdlab.data.paths import candidate_roots
    from ckdlab.data.tasks import TASKS
    from ckdlab.models import EMBEDDED_NAMES
    from ckdlab.profiles import PROFILES

    return {
        "models": list(EMBEDDED_NAMES),
        "tasks": sorted(TASKS),
        "profiles": list(PROFILES),
        "data_roots": [str(p) for p in candidate_roots() if p.exists()],
        "runs": str(runs_dir()),
        "results": str(results_dir()),
    }
