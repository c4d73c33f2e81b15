"""Notebook 02: the models whose relations the notebook and the explorer show, and how faithful they are.

The teacher is notebook 01's fine-tuned model; the untrained student is built from it with the
profile's student spec and initialisation (exactly what distillation starts from); the trained
students are one run per method of the profile, the same recorded runs as notebook 03's. Finding or
training these models is this study's job; the widgets only take models.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import get_task
from ckdlab.models import build_student, load_backbone
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.profiles import load_profile
from ckdlab.studies.distillation import distill, distill_settings
from ckdlab.studies.fidelity import fidelity_batch, fidelity_summary, relation_fidelity_table
from ckdlab.workspace import load_teacher, runs_dir

RELATIONS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")


def profile_student(profile: str, student_name: str | None = None) -> tuple[str, str]:
    """``(name, spec)`` of one of the profile's distillation students (default: the first)."""
    students = load_profile(profile).get("distill", {}).get("students") or {"subset": "layers:0"}
    name = student_name or next(iter(students))
    if name not in students:
        raise ValueError(f"student_name={name!r} is not one of the profile's students {list(students)}")
    return name, students[name]


@dataclass
class RelationModels:
    """The models notebook 02 compares, their shared tokenizer, the teacher-student layer map, and
    where each student's weights came from."""

    models: dict[str, PreTrainedModel]
    tokenizer: PreTrainedTokenizerBase
    pairs: list[tuple[int, int]]
    student_spec: str
    runs: dict[str, str]


def relation_models(task: str, profile: str = "quick", student_name: str | None = None, seed: int = 0) -> RelationModels:
    """The teacher, the untrained student (the very initialisation the distilled ones start from) and
    one trained student per method of the profile (``distill.methods``: no KD, logit KD, CKD + KD...).

    The students are trained by :func:`ckdlab.studies.distillation.distill` with the profile's
    settings and recorded: they are the same runs as notebook 03's for this task, student and seed,
    so whichever notebook runs first trains them and the other reads them back.
    """
    spec = get_task(task)
    prof = load_profile(profile)
    name, student_spec = profile_student(profile, student_name)
    _, teacher, tokenizer = load_teacher(spec.name, None, profile)
    init = distill_settings(profile).student_init
    models = {"teacher": teacher, "untrained": build_student(teacher, student_spec, num_labels=spec.num_labels, init=init, seed=seed)}
    runs = {}
    for method, options in prof["distill"]["methods"].items():
        options = dict(options)
        if spec.name not in options.pop("tasks", [spec.name]):
            continue
        row = distill(spec.name, student=student_spec, student_name=name, method=method, profile=profile, seed=seed, **options)
        runs[method] = row["out_dir"]
        models[method] = load_backbone(Path(row["out_dir"]) / "best", num_labels=spec.num_labels)[0]
    pairs = resolve_layer_map("uniform", teacher.config.num_hidden_layers, models["untrained"].config.num_hidden_layers)
    return RelationModels(models, tokenizer, pairs, student_spec, runs)


def fidelity_by_model(models: dict[str, PreTrainedModel], tokenizer: PreTrainedTokenizerBase, task: str,
                      pairs: list[tuple[int, int]], data_dir: str | Path | None = None) -> pd.DataFrame:
    """Relation fidelity (:mod:`ckdlab.studies.fidelity`) of every model but the teacher, on the
    task's fixed fidelity sentences: one row per model, the means over layer pairs."""
    batch = fidelity_batch(task, tokenizer, data_dir)
    teacher = models["teacher"]
    rows = [{"model": name, **fidelity_summary(relation_fidelity_table(teacher, model, batch, pairs))}
            for name, model in models.items() if name != "teacher"]
    return pd.DataFrame(rows).set_index("model").rename(columns=lambda c: c.removeprefix("fidelity."))


def explorer_models(task: str = "sst2", profile: str = "quick", student: str | None = None,
                    checkpoints: bool = True) -> dict[str, Any]:
    """Models worth exploring for ``task`` under ``profile``: the fine-tuned teacher, a freshly built
    student (default: the profile's first) and, with ``checkpoints``, every saved student of the
    task (``<student>/<method>/<seed>`` -> its ``best/`` folder, loaded by the explorer on use)."""
    spec = get_task(task)
    _, teacher, tokenizer = load_teacher(spec.name, None, profile)
    _, student_spec = profile_student(profile) if student is None else (None, student)
    models: dict[str, Any] = {
        "teacher": (teacher, tokenizer),
        "student (untrained)": (build_student(teacher, student_spec, num_labels=spec.num_labels, seed=0), tokenizer),
    }
    if checkpoints:
        models.update(student_checkpoints(spec.name, profile))
    return models


def student_checkpoints(task: str, profile: str = "quick") -> dict[str, Path]:
    """Saved students of ``task`` (``runs/<profile>/students/<task>/<student>/<method>/<seed>/best``)."""
    root = runs_dir() / load_profile(profile)["name"] / "students" / get_task(task).name
    found = sorted(root.glob("*/*/*/best/config.json"))
    return {str(path.parent.parent.relative_to(root)): path.parent for path in found}
