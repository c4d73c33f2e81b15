"""Notebook 01: fine-tune one teacher per task, and the table of how good they are."""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from ckdlab.data import get_task
from ckdlab.workspace import finetune_teacher, teacher_dir
from ckdlab.workspace.teachers import checked_profile
from ckdlab.workspace.runs import SUMMARY_FILE


def teacher_summary(task: str, profile: str = "quick", folder: str | Path | None = None) -> dict[str, Any]:
    """One row of the teachers table, read from the teacher's run folder."""
    directory = Path(folder) if folder else teacher_dir(task, profile)
    summary = json.loads((directory / SUMMARY_FILE).read_text(encoding="utf-8"))
    best = summary.get("best_metrics", {})
    row = {"task": task, "train_examples": summary["train_examples"], "steps": summary["steps"], "best_step": summary["best_step"]}
    row.update({k: round(v, 4) for k, v in best.items() if k not in ("step", "score") and isinstance(v, float)})
    row["headline"] = summary["headline_metric"]
    row["score"] = round(summary["best_score"], 4)
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
        rows.append(teacher_summary(name, profile, summary["out_dir"]))
    return pd.DataFrame(rows)
