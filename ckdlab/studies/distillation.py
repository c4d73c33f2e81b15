"""Task-specific distillation runs and grids (notebook 03's GLUE table; also used by 02 and 05).

:func:`distill` is one run: the profile's (or a given) fine-tuned teacher, a student built from
it, a :class:`~ckdlab.engine.distill.Distiller` with the profile's training settings, a run
folder holding exactly this run (:mod:`ckdlab.workspace.runs`), and one record. A finished
identical run is not trained again. :func:`distill_grid` runs every task x seed x student x
method, sharing the teacher's outputs between the runs of one training set.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import PreTrainedModel

from ckdlab.data import TaskSpec, get_task, load_task, tokenize_dataset
from ckdlab.engine import Callback, DistillConfig, Distiller, TrainConfig
from ckdlab.errors import UserError
from ckdlab.io import atomic_write_json
from ckdlab.models import build_student, load_backbone, size_summary
from ckdlab.models.bilstm import BILSTM_INITS
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.objectives.registry import check_options, default_weights, parse_objective, term_needs
from ckdlab.objectives.ckd_weights import official_to_ours
from ckdlab.profiles import load_profile, paper_configs, profile_config
from ckdlab.studies.fidelity import fidelity_batch, fidelity_summary, relation_fidelity_table
from ckdlab.workspace import (
    POOL,
    RunIdentity,
    data_identity,
    load_teacher,
    model_reference,
    open_run,
    record_run,
    results_dir,
    runs_dir,
    training_identity,
)
from ckdlab.workspace.cache_pool import cache_key
from ckdlab.workspace.records import read_record, record_path
from ckdlab.engine.trainer import STATE_FILE
from ckdlab.workspace.runs import SUMMARY_FILE

GRID_COLUMNS = ("task", "student", "method", "seed", "score", "params", "latency_ms", "wall_time_s", "out_dir", "run_id")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def distill_settings(profile: str | dict, **explicit: Any) -> DistillConfig:
    """The profile's ``distill`` section (temperature, student_init, ...) over :class:`DistillConfig`'s
    defaults, with ``explicit`` values (not None) on top."""
    section = load_profile(profile).get("distill", {})
    fields = DistillConfig().to_dict()
    from_profile = {k: section[k] for k in fields if k in section}
    return DistillConfig().replace(**from_profile).replace(**explicit)


OFFICIAL = "official"


def official_weights(task: str, tokenizer: Any, config: TrainConfig, n_layer_pairs: int, objective_options: dict[str, Any],
                     data_dir: str | Path | None) -> dict[str, float]:
    """The CKD paper's weights for ``task`` (``configs/paper/<task>.yaml``), converted to this
    implementation's normalisation for this training set and layer map
    (:func:`ckdlab.studies.paper.official_to_ours`; the triplet window is this run's)."""
    spec = get_task(task)
    train = load_task(spec.name, "train", data_dir=data_dir, limit=config.train_limit, seed=config.seed)
    lengths = [len(ids) for ids in tokenize_dataset(train, tokenizer, spec, max_length=config.max_length)["input_ids"]]
    official = paper_configs([spec.name])[spec.name]["official_weights"]
    return official_to_ours(official, lengths, n_layer_pairs, objective_options.get("window"))


def make_student(teacher: PreTrainedModel, student: str, task: TaskSpec, init: str, seed: int) -> PreTrainedModel:
    """``student`` is a builder spec applied to the teacher, or a folder holding a saved student.
    ``init`` applies to ``config:`` students (bert | slice) and to BiLSTMs (pca | random); a BiLSTM
    built for a pair task encodes the two sentences separately."""
    if Path(student).exists():
        return load_backbone(student, num_labels=task.num_labels)[0]
    if "/" in student or student.startswith("."):
        raise UserError(f"--student {student} looks like a folder but does not exist; pass a saved student folder or a "
                        "spec such as layers:0,2,4 or config:L4-H256-A4-I1024")
    if student.strip().lower().startswith("bilstm"):
        return build_student(teacher, student, num_labels=task.num_labels, init=init if init in BILSTM_INITS else None,
                             seed=seed, sentence_pair=task.is_pair)
    return build_student(teacher, student, num_labels=task.num_labels, init=init, seed=seed)


def make_distiller(
    task: str,
    student: str = "layers:0,2,4",
    objective: str | None = None,
    weights: dict[str, float] | None = None,
    teacher: str | Path | None = None,
    profile: str = "quick",
    temperature: float | None = None,
    layer_map: str | list[tuple[int, int]] | None = None,
    student_init: str | None = None,
    objective_options: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    callbacks: Iterable[Callback] = (),
    cache_teacher: bool = True,
    balance: str | None = None,
    balance_fraction: float | None = None,
    **overrides: Any,
) -> Distiller:
    """A ready :class:`~ckdlab.engine.distill.Distiller` (not trained, no run identity): for driving
    a run by hand, e.g. the live-distillation widget. :func:`distill` is the recorded way."""
    spec = get_task(task)
    settings = distill_settings(profile, objective=objective, weights=weights, temperature=temperature, layer_map=layer_map,
                                student_init=student_init, objective_options=objective_options, balance=balance,
                                balance_fraction=balance_fraction)
    _, teacher_model, tokenizer = load_teacher(spec.name, teacher, profile, data_dir)
    student_model = make_student(teacher_model, student, spec, settings.student_init, seed)
    config = profile_config(profile, "distill", spec.name, seed=seed, **overrides)
    return Distiller(
        teacher_model, student_model, tokenizer, spec, objective=settings.objective, weights=settings.weights,
        temperature=settings.temperature, layer_map=settings.layer_map, objective_options=settings.objective_options,
        config=config, out_dir=out_dir, data_dir=data_dir, callbacks=callbacks, teacher_tokenizer=tokenizer,
        cache_teacher=cache_teacher, balance=settings.balance, balance_fraction=settings.balance_fraction,
    )


@dataclass
class PreparedRun:
    """A distillation run ready to train: its distiller, identity and folder, and what it was asked."""

    distiller: Distiller
    identity: RunIdentity
    out_dir: Path
    state: str
    teacher_path: Path
    labels: dict[str, Any]


def prepare_distillation(task: str, student: str, objective: str | None, weights: dict[str, float] | None,
                         teacher: str | Path | None, profile: str, method: str, student_name: str,
                         out_dir: str | Path | None, seed: int, resume: bool, data_dir: str | Path | None = None,
                         temperature: float | None = None, layer_map: Any = None, student_init: str | None = None,
                         objective_options: dict[str, Any] | None = None, callbacks: Iterable[Callback] = (),
                         cache_teacher: bool = True, balance: str | None = None, balance_fraction: float | None = None,
                         **overrides: Any) -> PreparedRun:
    """Resolve every setting, build teacher and student, and open the run folder (no training)."""
    spec = get_task(task)
    prof = load_profile(profile)
    settings = distill_settings(prof, objective=objective, weights=weights, temperature=temperature, layer_map=layer_map,
                                student_init=student_init, objective_options=objective_options, balance=balance,
                                balance_fraction=balance_fraction)
    config = profile_config(prof, "distill", spec.name, seed=seed, **overrides)
    names = parse_objective(settings.objective)
    teacher_path, teacher_model, tokenizer = load_teacher(spec.name, teacher, prof["name"], data_dir)
    student_model = make_student(teacher_model, student, spec, settings.student_init, seed)
    pairs = resolve_layer_map(settings.layer_map, teacher_model.config.num_hidden_layers, student_model.config.num_hidden_layers)
    if settings.weights == OFFICIAL:
        settings = settings.replace(weights=official_weights(spec.name, tokenizer, config, len(pairs), settings.objective_options, data_dir))
    if isinstance(settings.weights, str):
        raise UserError(f"--weights {settings.weights!r}: give term=number pairs (e.g. wr_pair=1,kd=1) or '{OFFICIAL}' "
                        "(the CKD paper's weights for the task, converted to this implementation)")
    resolved_weights = {**default_weights(names), **(settings.weights or {})}
    unknown = sorted(set(settings.weights or {}) - set(default_weights(names)))
    if unknown:
        raise UserError(f"--weights names term(s) {unknown} that objective {settings.objective!r} does not have; its terms: "
                        f"{', '.join(default_weights(names))}")
    check_options(names, settings.objective_options)
    identity = RunIdentity("distill", config.seed, {
        "task": spec.name, "teacher": model_reference(teacher_path),
        "student": model_reference(student) if Path(student).exists() else student,
        "student_init": settings.student_init, "objective": "+".join(names), "weights": resolved_weights,
        "layer_map": [list(p) for p in pairs], "temperature": settings.temperature,
        "objective_options": settings.objective_options, "balance": [settings.balance, settings.balance_fraction],
        "train": training_identity(config), "data": data_identity(spec.name, ("train", "dev"), data_dir),
    })
    out = Path(out_dir) if out_dir else (runs_dir() / prof["name"] / "students" / spec.name / _safe(student_name)
                                         / _safe(method) / f"seed{seed}-{identity.short}")
    state = open_run(out, identity, resume)
    key = cache_key(model_reference(teacher_path), spec.name, config.to_dict(), identity.config["data"])
    distiller = Distiller(
        teacher_model, student_model, tokenizer, spec, objective=settings.objective, weights=settings.weights,
        temperature=settings.temperature, layer_map=pairs, objective_options=settings.objective_options, config=config,
        out_dir=out, data_dir=data_dir, callbacks=callbacks, teacher_tokenizer=tokenizer, cache_all_layers=True,
        cache_teacher=cache_teacher, balance=settings.balance, balance_fraction=settings.balance_fraction,
        teacher_cache=POOL.get(key, sorted({t for t, _ in pairs}) if "hidden_states" in term_needs(resolved_weights, names) else [])
        if cache_teacher else None,
    )
    labels = {"profile": prof["name"], "student": student_name, "student_spec": student, "method": method, "cache_key": key,
              "settings": settings, "config": config}
    return PreparedRun(distiller, identity, out, state, teacher_path, labels)


def student_fidelity(run: PreparedRun, task: TaskSpec, data_dir: str | Path | None) -> dict[str, float]:
    """Relation fidelity of the run's best student to its teacher (:mod:`ckdlab.studies.fidelity`), when
    both are BERT-style encoders on one vocabulary (a BiLSTM has no token states to compare)."""
    teacher, student = run.distiller.teacher, run.distiller.unwrapped_model()
    if not (hasattr(student.base_model, "encoder") and student.config.vocab_size == teacher.config.vocab_size):
        return {}
    best = run.out_dir / "best"
    if (best / "config.json").exists():
        student = load_backbone(best, num_labels=task.num_labels)[0]
    batch = fidelity_batch(task.name, run.distiller.tokenizer, data_dir, max_length=run.labels["config"].max_length)
    return fidelity_summary(relation_fidelity_table(teacher, student, batch, run.distiller.layer_map))


def distill(
    task: str,
    student: str = "layers:0,2,4",
    objective: str | None = None,
    weights: dict[str, float] | None = None,
    teacher: str | Path | None = None,
    profile: str = "quick",
    method: str | None = None,
    student_name: str | None = None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    resume: bool = True,
    record: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """Distil the profile's (or the given) teacher into ``student``, record the run, return its record.

    ``method`` and ``student_name`` label the run in tables (default: the objective and spec);
    the profile's ``distill.student_overrides[student_name]`` (training options such as ``lr``)
    apply unless given here. Other keyword arguments: ``temperature``, ``layer_map``, ``data_dir``,
    ``objective_options``, ``student_init``, ``callbacks``, and training options (``epochs``,
    ``lr``, ...). A finished identical run is returned without training; see
    :func:`ckdlab.workspace.open_run` for what an existing ``out_dir`` means.
    """
    spec = get_task(task)
    objective = objective or distill_settings(profile).objective
    method = method or objective
    student_name = student_name or student
    student_overrides = load_profile(profile).get("distill", {}).get("student_overrides", {}) or {}
    kwargs = {**student_overrides.get(student_name, {}), **kwargs}
    start = time.perf_counter()
    run = prepare_distillation(spec.name, student, objective, weights, teacher, profile, method, student_name, out_dir,
                               seed, resume, **kwargs)
    existing = record_path(results_dir(), run.identity.run_id)
    if run.state == "finished":
        previous = read_record(existing) if existing.exists() else None
        if previous is not None:
            return previous
        summary = json.loads((run.out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        size = json.loads((run.out_dir / "size.json").read_text(encoding="utf-8"))
        weights_used = json.loads((run.out_dir / "checkpoint" / STATE_FILE).read_text(encoding="utf-8"))["weights"]
        balance_report = None
    else:
        summary = run.distiller.train(resume=run.state == "resume")
        weights_used, balance_report = dict(run.distiller.weights), run.distiller.balance_report
        POOL.put(run.labels["cache_key"], run.distiller.teacher_cache)
        size = size_summary(run.distiller.unwrapped_model())
        if run.distiller.accelerator.is_main_process:
            atomic_write_json(run.out_dir / "size.json", size)
            summary["best_metrics"] = {**(summary.get("best_metrics") or {}), **student_fidelity(run, spec, kwargs.get("data_dir"))}
    settings: DistillConfig = run.labels["settings"]
    config: TrainConfig = run.labels["config"]
    row = {
        "run_id": run.identity.run_id, "config_id": run.identity.config_id, "kind": "distill", "profile": run.labels["profile"],
        "task": spec.name, "teacher": str(run.teacher_path), "student": student_name, "student_spec": student,
        "method": method, "objective": settings.objective, "weights": weights_used,
        "balance": {"scheme": settings.balance, "fraction": settings.balance_fraction, "report": balance_report},
        "temperature": settings.temperature, "layer_map": run.identity.config["layer_map"],
        "objective_options": settings.objective_options, "seed": seed, "config": config.to_dict(),
        "train_examples": summary["train_examples"],
        "metrics": {k: v for k, v in (summary.get("best_metrics") or {}).items() if k != "step"},
        "score": summary["best_score"], "out_dir": str(run.out_dir),
        "wall_time_s": summary.get("wall_time_s", time.perf_counter() - start), **size,
    }
    if record and summary.get("finished", True):
        record_run(row, results_dir())
    return row


def distill_grid(
    tasks: Iterable[str],
    students: dict[str, str],
    methods: dict[str, dict[str, Any]],
    profile: str = "quick",
    seeds: Iterable[int] = (0,),
    **kwargs: Any,
) -> pd.DataFrame:
    """Every task x seed x student x method; ``methods`` maps a label to :func:`distill` keyword arguments
    (e.g. ``{"CKD + KD": {"objective": "ckd+kd"}}``; a ``tasks`` list limits a method to those tasks).
    Returns a tidy frame, one row per run."""
    rows = []
    for task in tasks:
        for seed in seeds:
            for student_name, student_spec in students.items():
                for method, options in methods.items():
                    options = dict(options)
                    if task not in options.pop("tasks", [task]):
                        continue
                    row = distill(task, student=student_spec, student_name=student_name, method=method, profile=profile,
                                  seed=seed, **{**kwargs, **options})
                    rows.append({k: row[k] for k in GRID_COLUMNS})
    return pd.DataFrame(rows)
