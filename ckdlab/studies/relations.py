"""Notebook 02: the models whose relations the notebook and the explorer show, and their gaps.

The teacher is notebook 01's fine-tuned model; the untrained student is built from it with the
profile's student spec (what distillation starts from); distilled students are notebook 03's
recorded runs, or a brief CKD + KD run made here when notebook 03 has not run. Finding or training
these models is this study's job; the widgets only take models.
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
from ckdlab.viz.relations import relation_gap, teacher_student_views
from ckdlab.viz.tokens import encode
from ckdlab.workspace import load_runs, load_teacher, results_dir, runs_dir

RELATIONS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")


def profile_student(profile: str, student_name: str | None = None) -> tuple[str, str]:
    """``(name, spec)`` of one of the profile's distillation students (default: the first)."""
    students = load_profile(profile).get("distill", {}).get("students") or {"subset": "layers:0"}
    name = student_name or next(iter(students))
    if name not in students:
        raise ValueError(f"student_name={name!r} is not one of the profile's students {list(students)}")
    return name, students[name]


def recorded_student(task: str, student: str, method: str, profile: str, seed: int = 0) -> Path | None:
    """The ``best/`` folder of the latest recorded run of ``student`` x ``method`` (notebook 03's), or None."""
    runs = load_runs(results_dir(), kind="distill", profile=load_profile(profile)["name"], task=get_task(task).name,
                     student=student, method=method, seed=seed)
    for out_dir in reversed(list(runs.get("out_dir", []))):
        best = Path(out_dir) / "best"
        if (best / "config.json").exists():
            return best
    return None


@dataclass
class RelationModels:
    """The models notebook 02 compares, their shared tokenizer, and the teacher-student layer map."""

    models: dict[str, PreTrainedModel]
    tokenizer: PreTrainedTokenizerBase
    pairs: list[tuple[int, int]]
    student_spec: str
    distilled_from: str


def relation_models(task: str, profile: str = "quick", student_name: str | None = None, brief_steps: int | None = 60,
                    seed: int = 0) -> RelationModels:
    """Teacher, untrained student (same init as the distilled one) and CKD student of ``task``.

    The CKD student is notebook 03's ``CKD + KD`` run when it is recorded; otherwise a brief run
    (``brief_steps`` optimisation steps; None = the profile's schedule) is made and kept here.
    """
    spec = get_task(task)
    name, student_spec = profile_student(profile, student_name)
    _, teacher, tokenizer = load_teacher(spec.name, None, profile)
    init = distill_settings(profile).student_init
    untrained = build_student(teacher, student_spec, num_labels=spec.num_labels, init=init, seed=seed)
    best = recorded_student(spec.name, name, "CKD + KD", profile, seed)
    origin = "notebook 03"
    if best is None:
        overrides = {} if brief_steps is None else {"max_steps": brief_steps}
        row = distill(spec.name, student=student_spec, student_name=name, method="CKD + KD (brief)", objective="ckd+kd",
                      profile=profile, seed=seed, record=False, **overrides)
        best, origin = Path(row["out_dir"]) / "best", "a brief run made here"
    distilled, _ = load_backbone(best, num_labels=spec.num_labels)
    models = {"teacher": teacher, "student (untrained)": untrained, "student (CKD)": distilled}
    pairs = resolve_layer_map("uniform", teacher.config.num_hidden_layers, untrained.config.num_hidden_layers)
    return RelationModels(models, tokenizer, pairs, student_spec, f"{best} ({origin})")


def relation_gaps(models: dict[str, PreTrainedModel], tokenizer: PreTrainedTokenizerBase, sentences: list[str],
                  pairs: list[tuple[int, int]], students: tuple[str, ...] = ("student (untrained)", "student (CKD)"),
                  anchor: int = 1, token: int = 1) -> pd.DataFrame:
    """Mean absolute difference between each student's relation matrices and the teacher's (rows =
    students, columns = the four relations), averaged over ``sentences``, layers aligned by ``pairs``."""
    encoded = {(name, text): encode(models[name], tokenizer, text) for name in ("teacher", *students) for text in sentences}
    rows = []
    for name in students:
        row: dict[str, Any] = {"student": name}
        for kind in RELATIONS:
            total = 0.0
            for text in sentences:
                t_hidden, tokens, mask = encoded["teacher", text]
                views = teacher_student_views(kind, t_hidden, encoded[name, text][0], tokens, mask, pairs, anchor=anchor, token=token)
                total += relation_gap(*views)
            row[kind] = total / len(sentences)
        rows.append(row)
    return pd.DataFrame(rows).set_index("student")


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
