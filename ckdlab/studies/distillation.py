"""Task-specific distillation runs and grids (notebook 03's GLUE table; also used by 02 and 05).

:func:`distill` is one run: the profile's (or a given) fine-tuned teacher, a student built from
it, a :class:`~ckdlab.engine.distill.Distiller` with the profile's training settings, a run
folder holding exactly this run (:mod:`ckdlab.workspace.runs`), and one record. A finished
identical run is not trained again. :func:`distill_grid` runs every task x seed x student x
method, sharing the teacher's outputs between the runs of one training set.

A run is refused before anything trains (not even the profile's teacher) and before its folder
is opened when any of its settings is wrong: the options (:class:`~ckdlab.engine.config.TrainConfig`,
:class:`~ckdlab.engine.config.DistillConfig`), the objective, its term weights and options, the
student spec against the teacher's architecture, the layer map, the teacher's labels against the
task, the data (every split read), and the writability of ``--out`` and of the results folder.
"""
from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from accelerate import PartialState
from tqdm.auto import tqdm
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import TaskSpec, get_task, tokenize_dataset
from ckdlab.engine import Callback, DistillConfig, Distiller, TrainConfig
from ckdlab.engine.checkpoints import final_state
from ckdlab.engine.trainer import task_splits
from ckdlab.errors import UserError, user_input
from ckdlab.io import atomic_write_json
from ckdlab.models import build_student, load_backbone, size_summary
from ckdlab.models.backbones import check_head, check_model_source
from ckdlab.models.bilstm import BILSTM_INITS, parse_bilstm_spec
from ckdlab.models.precision import resolve_teacher_precision
from ckdlab.models.students import parse_config_spec, select_layers
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.objectives.ckd_weights import official_to_ours
from ckdlab.objectives.registry import (REGISTRY, BuildContext, build_objectives, check_options, default_weights,
                                       parse_objective, term_needs)
from ckdlab.profiles import paper_configs, profile_config
from ckdlab.studies.fidelity import fidelity_batch, fidelity_summary, relation_fidelity_table
from ckdlab.workspace import (
    POOL,
    RunIdentity,
    data_identity,
    load_teacher,
    model_reference,
    open_run,
    results_dir,
    runs_dir,
    training_identity,
)
from ckdlab.workspace.cache_pool import cache_key
from ckdlab.workspace.records import read_record, record_path, save_record
from ckdlab.workspace.runs import (
    SUMMARY_FILE,
    check_results_writable,
    check_writable,
    existing_ancestor,
    guard_new_run,
    plan_run,
)
from ckdlab.workspace.teachers import checked_profile, data_sources, teacher_config

STUDENT_KINDS = ("layers", "first", "every-other", "skip", "config", "bilstm")

GRID_COLUMNS = ("task", "student", "method", "seed", "score", "params", "latency_ms", "wall_time_s", "out_dir", "run_id")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def distill_settings(profile: str | dict, **explicit: Any) -> DistillConfig:
    """The profile's ``distill`` section (temperature, student_init, ...) over :class:`DistillConfig`'s
    defaults, with ``explicit`` values (not None) on top."""
    section = checked_profile(profile).get("distill", {})
    fields = DistillConfig().to_dict()
    from_profile = {k: section[k] for k in fields if k in section}
    return DistillConfig().replace(**from_profile).replace(**explicit)


OFFICIAL = "official"


def official_weights(task: str, tokenizer: Any, train: Any, config: TrainConfig, n_layer_pairs: int,
                     objective_options: dict[str, Any]) -> dict[str, float]:
    """The CKD paper's weights for ``task`` (``configs/paper/<task>.yaml``), converted to this
    implementation's normalisation for this training set and layer map
    (:func:`ckdlab.objectives.ckd_weights.official_to_ours`; the triplet window is this run's)."""
    spec = get_task(task)
    lengths = [len(ids) for ids in tokenize_dataset(train, tokenizer, spec, max_length=config.max_length)["input_ids"]]
    official = paper_configs([spec.name])[spec.name]["official_weights"]
    return official_to_ours(official, lengths, n_layer_pairs, objective_options.get("window"))


def _student_kind(student: str) -> str:
    """The builder a spec names; a UserError when ``student`` is neither a folder nor a spec."""
    kind = student.strip().lower().partition(":")[0]
    if kind in STUDENT_KINDS:
        return kind
    if "/" in student or student.startswith((".", "~")) or student.endswith(("/", "\\")):
        raise UserError(f"--student {student} looks like a folder but does not exist; pass a saved student folder or a "
                        "spec such as layers:0,2,4 or config:L4-H256-A4-I1024")
    raise UserError(f"--student {student} is neither an existing folder nor a student spec; use layers:0,2,4 | first:k | "
                    "every-other | skip:k | config:L4-H256-A4-I1024 | bilstm:L2-H300-E300, or a folder saved with "
                    "save_pretrained")


def check_student(student: str, teacher: PretrainedConfig | None, init: str, task: TaskSpec) -> PretrainedConfig | None:
    """Check ``student`` (a folder or a spec) against the teacher's architecture and the task's labels
    without building it, and return the student's config (None when it cannot be known without
    building it: a BiLSTM, or an unknown teacher)."""
    if Path(student).exists():
        check_model_source(student, "--student")
        check_head(student, task.num_labels)
        return AutoConfig.from_pretrained(student)
    kind = _student_kind(student)
    if kind == "bilstm":
        sizes = parse_bilstm_spec(student)
        width = getattr(teacher, "hidden_size", None)
        if init not in ("random",) and width is not None and sizes.get("embedding_size", 300) > width:
            raise UserError(f"--student {student}: init 'pca' needs an embedding width E <= the teacher's width {width}; "
                            "lower E or use --student-init random")
        return None
    if teacher is None:
        return None
    if kind == "config":
        config = parse_config_spec(student.split(":", 1)[1], teacher)
        if init == "slice":
            larger = [name for name in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size")
                      if getattr(config, name) > getattr(teacher, name)]
            if larger:
                raise UserError(f"--student {student} with --student-init slice must be no larger than the teacher in "
                                f"every dimension, but its {', '.join(larger)} exceed the teacher's; shrink them or use --student-init bert")
        return config
    config = copy.deepcopy(teacher)
    config.num_hidden_layers = len(select_layers(student, teacher.num_hidden_layers))
    return config


def make_student(teacher: PreTrainedModel, student: str, task: TaskSpec, init: str,
                 seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """``(model, tokenizer)``: ``student`` is a builder spec applied to the teacher (tokenizer None:
    the teacher's), or a folder holding a saved student and its own tokenizer. ``init`` applies to
    ``config:`` students (bert | slice) and to BiLSTMs (pca | random); a BiLSTM built for a pair
    task encodes the two sentences separately."""
    if Path(student).exists():
        return load_backbone(student, num_labels=task.num_labels)
    if _student_kind(student) == "bilstm":
        return build_student(teacher, student, num_labels=task.num_labels, init=init if init in BILSTM_INITS else None,
                             seed=seed, sentence_pair=task.is_pair), None
    return build_student(teacher, student, num_labels=task.num_labels, init=init, seed=seed), None


def check_settings(spec: TaskSpec, settings: DistillConfig, names: list[str], teacher: PretrainedConfig | None,
                   student: PretrainedConfig | None, seed: int) -> None:
    """Term weights, objective options, the layer map and the objectives' own checks of their options,
    all before any model is trained or loaded (the last two need both architectures)."""
    if isinstance(settings.weights, str) and settings.weights != OFFICIAL:
        raise UserError(f"--weights {settings.weights!r}: give term=number pairs (e.g. wr_pair=1,kd=1) or '{OFFICIAL}' "
                        "(the CKD paper's weights for the task, converted to this implementation)")
    unknown = sorted(set(settings.weights or {}) - set(default_weights(names))) if not isinstance(settings.weights, str) else []
    if unknown:
        raise UserError(f"--weights names term(s) {unknown} that objective {settings.objective!r} does not have; its terms: "
                        f"{', '.join(default_weights(names))}")
    with user_input("--objective-options"):
        check_options(names, settings.objective_options)
    if teacher is None or student is None:
        return
    with user_input("--layer-map"):
        pairs = resolve_layer_map(settings.layer_map, teacher.num_hidden_layers, student.num_hidden_layers)
    ctx = BuildContext(teacher_config=teacher, student_config=student, layer_map=pairs, regression=spec.is_regression,
                       temperature=settings.temperature, options=dict(settings.objective_options), fixed_rows=True, seed=seed)
    # Objectives may draw random weights: a trial build must not move the run's random stream.
    with torch.random.fork_rng(devices=[]), user_input("--objective-options"):
        build_objectives(names, ctx)


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
    teacher_precision: str | None = None,
    **overrides: Any,
) -> Distiller:
    """A ready :class:`~ckdlab.engine.distill.Distiller` (not trained, no run identity): for driving
    a run by hand, e.g. the live-distillation widget. :func:`distill` is the recorded way."""
    spec = get_task(task)
    settings = distill_settings(profile, objective=objective, weights=weights, temperature=temperature, layer_map=layer_map,
                                student_init=student_init, objective_options=objective_options, balance=balance,
                                balance_fraction=balance_fraction, teacher_precision=teacher_precision)
    _, teacher_model, tokenizer = load_teacher(spec.name, teacher, profile, data_dir)
    student_model, student_tokenizer = make_student(teacher_model, student, spec, settings.student_init, seed)
    config = profile_config(profile, "distill", spec.name, seed=seed, **overrides)
    if settings.weights == OFFICIAL:
        pairs = resolve_layer_map(settings.layer_map, teacher_model.config.num_hidden_layers, student_model.config.num_hidden_layers)
        train, _ = task_splits(spec, config, data_dir)
        settings = settings.replace(weights=official_weights(spec.name, tokenizer, train, config, len(pairs), settings.objective_options))
    return Distiller(
        teacher_model, student_model, student_tokenizer or tokenizer, spec, objective=settings.objective, weights=settings.weights,
        temperature=settings.temperature, layer_map=settings.layer_map, objective_options=settings.objective_options,
        config=config, out_dir=out_dir, data_dir=data_dir, callbacks=callbacks, teacher_tokenizer=tokenizer,
        cache_teacher=cache_teacher, balance=settings.balance, balance_fraction=settings.balance_fraction,
        teacher_precision=settings.teacher_precision,
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
                         teacher_precision: str | None = None, **overrides: Any) -> PreparedRun:
    """Check every setting (see the module docstring), read the data, build teacher and student, and
    open the run folder (no training of the student; the profile's teacher is trained when absent)."""
    spec = get_task(task)
    prof = checked_profile(profile)
    settings = distill_settings(prof, objective=objective, weights=weights, temperature=temperature, layer_map=layer_map,
                                student_init=student_init, objective_options=objective_options, balance=balance,
                                balance_fraction=balance_fraction, teacher_precision=teacher_precision)
    with user_input("--teacher-precision"):
        # Resolved here ('auto' -> what this machine computes): the teacher's outputs decide the numbers.
        precision = resolve_teacher_precision(settings.teacher_precision, PartialState().device)
    with user_input("--profile"):
        config = profile_config(prof, "distill", spec.name, seed=seed, **overrides)
    with user_input("--objective"):
        names = parse_objective(settings.objective)
    if out_dir is not None:
        check_writable(out_dir, "--out", create=False)
    sources = data_sources(spec.name, ("train", "dev"), data_dir)
    architecture = teacher_config(spec, teacher, prof, data_dir)
    check_settings(spec, settings, names, architecture, check_student(student, architecture, settings.student_init, spec), seed)
    train, dev = task_splits(spec, config, data_dir)
    teacher_path, teacher_model, tokenizer = load_teacher(spec.name, teacher, prof["name"], data_dir)
    student_model, student_tokenizer = make_student(teacher_model, student, spec, settings.student_init, seed)
    with user_input("--layer-map"):
        pairs = resolve_layer_map(settings.layer_map, teacher_model.config.num_hidden_layers, student_model.config.num_hidden_layers)
    if settings.weights == OFFICIAL:
        settings = settings.replace(weights=official_weights(spec.name, tokenizer, train, config, len(pairs), settings.objective_options))
    resolved_weights = {**default_weights(names), **(settings.weights or {})}
    # The weighting scheme is part of a run only when the run has terms it sets (as the Distiller decides:
    # a balanced objective's terms not named in --weights, with a non-zero weight); a KD run is the same
    # run whatever --balance says.
    balanced = [t for n in names if REGISTRY[n].balanced for t in REGISTRY[n].terms
                if t not in (settings.weights or {}) and resolved_weights.get(t, 0.0) > 0]
    identity = RunIdentity("distill", config.seed, {
        "task": spec.name, "teacher": model_reference(teacher_path),
        "student": model_reference(student) if Path(student).exists() else student,
        "student_init": settings.student_init, "objective": "+".join(names), "weights": resolved_weights,
        "layer_map": [list(p) for p in pairs], "temperature": settings.temperature,
        "objective_options": settings.objective_options,
        **({"balance": [settings.balance, settings.balance_fraction]} if balanced else {}),
        "train": training_identity(config), "data": data_identity(spec.name, ("train", "dev"), data_dir),
        # Absent for a float32 teacher, so runs recorded before this option keep their identity.
        **({} if precision == "fp32" else {"teacher_precision": precision}),
    })
    out = Path(out_dir) if out_dir else (runs_dir() / prof["name"] / "students" / spec.name / _safe(student_name)
                                         / _safe(method) / f"seed{seed}-{identity.short}")
    plan_run(out, identity, resume)
    key = cache_key({**model_reference(teacher_path), "precision": precision}, spec.name, config.to_dict(),
                    identity.config["data"])
    # Built before the folder is opened (building writes nothing): its checks (tokenisation,
    # weights, objective options) refuse a run without leaving a folder behind.
    distiller = Distiller(
        teacher_model, student_model, student_tokenizer or tokenizer, spec, objective=settings.objective,
        weights=settings.weights, temperature=settings.temperature, layer_map=pairs, objective_options=settings.objective_options,
        config=config, out_dir=out, data_dir=data_dir, train_dataset=train, dev_datasets=dev, callbacks=callbacks,
        teacher_tokenizer=tokenizer, cache_all_layers=True, cache_teacher=cache_teacher, balance=settings.balance,
        balance_fraction=settings.balance_fraction, teacher_precision=precision,
        teacher_cache=POOL.get(key, sorted({t for t, _ in pairs}) if "hidden_states" in term_needs(resolved_weights, names) else [])
        if cache_teacher else None,
    )
    existed = existing_ancestor(out)
    state = open_run(out, identity, resume)
    labels = {"profile": prof["name"], "student": student_name, "student_spec": student, "method": method, "cache_key": key,
              "settings": settings, "config": config, "data": sources, "existed": existed}
    return PreparedRun(distiller, identity, out, state, teacher_path, labels)


def student_fidelity(run: PreparedRun, task: TaskSpec, data_dir: str | Path | None) -> dict[str, float]:
    """Relation fidelity of the run's best student to its teacher (:mod:`ckdlab.studies.fidelity`), when
    both are BERT-style encoders reading the same token ids (a BiLSTM has no token states to compare)."""
    teacher, student = run.distiller.teacher, run.distiller.unwrapped_model()
    if not (hasattr(student.base_model, "encoder") and run.distiller.teacher_tokenizer is None):
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
    student_overrides = checked_profile(profile).get("distill", {}).get("student_overrides", {}) or {}
    kwargs = {**student_overrides.get(student_name, {}), **kwargs}
    start = time.perf_counter()
    if record:
        check_results_writable(results_dir())
    run = prepare_distillation(spec.name, student, objective, weights, teacher, profile, method, student_name, out_dir,
                               seed, resume, **kwargs)
    existing = record_path(results_dir(), run.identity.run_id)
    if run.state == "finished":
        previous = read_record(existing) if existing.exists() else None
        if previous is not None:
            return previous
        summary = json.loads((run.out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
        size = json.loads((run.out_dir / "size.json").read_text(encoding="utf-8"))
        weights_used = final_state(run.out_dir)["weights"]
        balance_report = None
    else:
        with guard_new_run(run.out_dir, run.state, run.labels["existed"]):
            summary = run.distiller.train(resume=run.state == "resume")
        weights_used, balance_report = dict(run.distiller.weights), run.distiller.balance_report
        POOL.put(run.labels["cache_key"], run.distiller.teacher_cache)
        size = size_summary(run.distiller.unwrapped_model())
        if run.distiller.accelerator.is_main_process:
            atomic_write_json(run.out_dir / "size.json", size)
            summary["best_metrics"] = {**(summary.get("best_metrics") or {}),
                                       **student_fidelity(run, spec, kwargs.get("data_dir"))}
    settings: DistillConfig = run.labels["settings"]
    config: TrainConfig = run.labels["config"]
    row = {
        "run_id": run.identity.run_id, "config_id": run.identity.config_id, "kind": "distill", "profile": run.labels["profile"],
        "task": spec.name, "teacher": str(run.teacher_path),
        "teacher_precision": run.distiller.teacher_precision, "student": student_name, "student_spec": student,
        "method": method, "objective": settings.objective, "weights": weights_used,
        "balance": {"scheme": settings.balance, "fraction": settings.balance_fraction, "report": balance_report},
        "temperature": settings.temperature, "layer_map": run.identity.config["layer_map"],
        "objective_options": settings.objective_options, "seed": seed, "config": config.to_dict(),
        "data": run.labels["data"], "train_examples": summary["train_examples"],
        "metrics": {k: v for k, v in (summary.get("best_metrics") or {}).items() if k != "step"},
        "score": summary["best_score"], "out_dir": str(run.out_dir),
        "wall_time_s": summary.get("wall_time_s", time.perf_counter() - start), **size,
    }
    # Under several processes only the main one has the metrics (and writes files).
    if record and summary.get("finished", True) and run.distiller.accelerator.is_main_process:
        save_record(row, results_dir(), run.out_dir / "best")
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
    One progress bar counts the runs (``progress=True`` adds each run's own bars). Returns a tidy frame,
    one row per run."""
    seeds = list(seeds)
    jobs = [(task, seed, student_name, student_spec, method, {k: v for k, v in options.items() if k != "tasks"})
            for task in tasks for seed in seeds for student_name, student_spec in students.items()
            for method, options in methods.items() if task in options.get("tasks", [task])]
    rows = []
    for task, seed, student_name, student_spec, method, options in (bar := grid_bar(jobs)):
        bar.set_postfix_str(f"{task} · {student_name} · {method} · seed {seed}")
        row = distill(task, student=student_spec, student_name=student_name, method=method, profile=profile,
                      seed=seed, **{"progress": False, **kwargs, **options})
        rows.append({k: row[k] for k in GRID_COLUMNS})
    return pd.DataFrame(rows)


def grid_bar(jobs: list[Any], desc: str = "runs") -> tqdm:
    """One bar over a grid's runs. The runs' own bars stay off: in a notebook each would leave a dead
    widget behind, dozens per grid cell."""
    return tqdm(jobs, desc=desc, unit="run", leave=False)
