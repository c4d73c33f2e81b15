"""Notebook 01: fine-tune one teacher per task, and the table of how good they are (beside the
score a constant prediction gets, :func:`majority_baseline`: a teacher must clearly beat it)."""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ckdlab.data import compute_metrics, get_task, load_task
from ckdlab.workspace import finetune_teacher, teacher_dir
from ckdlab.workspace.teachers import checked_profile
from ckdlab.workspace.runs import SUMMARY_FILE, read_identity


def majority_baseline(task: str, data_dir: str | Path | None = None, labels: Iterable[float] | None = None) -> dict[str, float]:
    """The task's metrics for a constant prediction on the dev set (``labels``: the dev labels, read
    when not given). Classification: the most frequent dev label (ties: the lower id) predicted
    everywhere, so MRPC's is all-positive (its F1 is far from 0) and CoLA's MCC is 0. Regression
    (STS-B): the mean label everywhere; a correlation with a constant is undefined (NaN) and is
    reported as 0, what a predictor with no information about the pairs earns."""
    spec = get_task(task)
    values = np.asarray(list(load_task(spec.name, "dev", data_dir=data_dir)["label"] if labels is None else labels))
    if spec.is_regression:
        constant = np.full(len(values), float(values.mean()))
    else:
        counts = np.bincount(values.astype(int), minlength=spec.num_labels)
        constant = np.full(len(values), int(np.argmax(counts)))
    metrics = compute_metrics(spec, constant, values)
    return {name: 0.0 if math.isnan(value) else round(value, 4) for name, value in metrics.items()}


def teacher_summary(task: str, profile: str = "quick", folder: str | Path | None = None,
                    data_dir: str | Path | None = None) -> dict[str, Any]:
    """One row of the teachers table, read from the teacher's run folder: its best dev metrics, the
    majority baseline's headline metric (``majority``) and the intermediate task it started from."""
    directory = Path(folder) if folder else teacher_dir(task, profile)
    summary = json.loads((directory / SUMMARY_FILE).read_text(encoding="utf-8"))
    best = summary.get("best_metrics", {})
    row = {"task": task, "train_examples": summary["train_examples"], "steps": summary["steps"], "best_step": summary["best_step"]}
    row.update({k: round(v, 4) for k, v in best.items() if k not in ("step", "score") and isinstance(v, float)})
    row["headline"] = summary["headline_metric"]
    row["score"] = round(summary["best_score"], 4)
    row["majority"] = majority_baseline(task, data_dir)[summary["headline_metric"]]
    identity = read_identity(directory) or {}
    row["intermediate"] = (identity.get("config", {}).get("intermediate") or {}).get("task")
    row["wall_time_s"] = round(summary["wall_time_s"], 1)
    if (directory / "size.json").exists():
        size = json.loads((directory / "size.json").read_text(encoding="utf-8"))
        row.update({"params": size["params"], "latency_ms": size["latency_ms"]})
    row["run_dir"] = str(directory)
    return row


def finetune_teachers(tasks: Iterable[str] | None = None, profile: str = "quick", data_dir: str | Path | None = None,
                      reuse: bool = True) -> pd.DataFrame:
    """Fine-tune (or, with ``reuse``, find) one teacher per task; a tidy table of their best dev scores."""
    prof = checked_profile(profile)
    rows = []
    for task in tasks or prof["tasks"]:
        name = get_task(task).name
        summary = finetune_teacher(name, profile=profile, data_dir=data_dir, resume=reuse)
        rows.append(teacher_summary(name, profile, summary["out_dir"], data_dir))
    return pd.DataFrame(rows)
