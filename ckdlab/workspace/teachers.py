"""The teacher lifecycle: find a profile's fine-tuned teacher for a task, or train it.

A teacher run lives in ``runs/<profile>/teachers/<task>-<id>/`` (``best/`` holds the model),
where ``<id>`` comes from the run's identity (the profile's ``finetune`` settings for the task,
the base model, the data files, the seed), so a changed setting trains a new teacher beside the
old one instead of silently reusing it. A task with an ``intermediate:`` stage in the profile
(:mod:`ckdlab.workspace.intermediate`, e.g. MNLI before RTE) first trains, or finds, the
intermediate run in ``runs/<profile>/intermediate/<task>-<id>/`` and starts from its model; the
intermediate run's identity is part of the teacher's.

Everything a run can be refused for is checked before its folder is opened: the options, the
model (:func:`~ckdlab.models.backbones.check_model_source`), the results folder, and the data
(every split is read and validated first). A teacher given for a task must have been fine-tuned
for that task's labels (:func:`check_teacher`).
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from transformers import AutoConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import TaskSpec, get_task, task_source
from ckdlab.engine import TrainConfig, Trainer
from ckdlab.engine.trainer import task_splits
from ckdlab.errors import UserError, user_input
from ckdlab.io import atomic_write_json
from ckdlab.models import EMBEDDED_NAMES, load_backbone, size_summary
from ckdlab.models.backbones import backbone_config, check_model_source, head_labels
from ckdlab.profiles import load_profile, profile_config, stage_intermediate
from ckdlab.workspace.intermediate import (
    check_intermediate,
    init_from_intermediate,
    intermediate_data_identity,
    intermediate_datasets,
)
from ckdlab.workspace.folders import results_dir, runs_dir
from ckdlab.workspace.records import record_path, save_record
from ckdlab.workspace.runs import (
    SUMMARY_FILE,
    RunIdentity,
    check_results_writable,
    check_writable,
    existing_ancestor,
    guard_new_run,
    is_finished,
    open_run,
    package_version,
    plan_run,
    read_identity,
)

# Training options that change logs and progress output, never the trained model.
COSMETIC_OPTIONS = ("progress", "log_every", "save_every", "keep_checkpoint")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def training_identity(config: TrainConfig) -> dict[str, Any]:
    """A TrainConfig as it enters a run's configuration: cosmetic options left out, and the seed too
    (:class:`RunIdentity` carries it apart, so that seeds of one configuration share a ``config_id``)."""
    return {k: v for k, v in config.to_dict().items() if k not in COSMETIC_OPTIONS and k != "seed"}


def checked_profile(profile: str | Path | dict) -> dict[str, Any]:
    """:func:`ckdlab.profiles.load_profile`, its errors named by ``--profile``."""
    with user_input("--profile", (ValueError, FileNotFoundError)):
        return load_profile(profile)


def _inside(path: str, folder: Path) -> bool:
    return folder == Path(path).resolve() or folder in Path(path).resolve().parents


def data_sources(task: str, splits: tuple[str, ...], data_dir: str | Path | None) -> dict[str, dict[str, Any]]:
    """Where each split is read from (:func:`ckdlab.data.task_source`: file and path, or hub split).
    With an explicit ``data_dir`` every split must be in it: a split found only in another data
    root (or on the hub) would silently mix two copies of the data, so that is a UserError."""
    sources = {split: task_source(task, split, data_dir) for split in splits}
    if data_dir is not None:
        root = Path(data_dir).expanduser().resolve()
        outside = {split: source for split, source in sources.items() if "path" not in source or not _inside(source["path"], root)}
        if outside:
            spec = get_task(task)
            where = "; ".join(f"{split} would come from {source.get('path') or source.get('hub')}" for split, source in outside.items())
            files = ", ".join(f"{spec.glue_dir}/{spec.splits[spec.resolve_split(split)].file}" for split in outside)
            raise UserError(f"--data-dir {data_dir} lacks {files} ({where}). Put the file(s) under {root}/glue_data/, or leave "
                            "--data-dir out to read every split from the default data roots.")
    return sources


def data_identity(task: str, splits: tuple[str, ...], data_dir: str | Path | None) -> dict[str, Any]:
    """Which data files (relative name and size, or hub split) a run reads; where they are is not
    part of the identity, so a moved data folder still finds its runs."""
    sources = data_sources(task, splits, data_dir)
    return {split: {k: v for k, v in source.items() if k != "path"} for split, source in sources.items()}


@lru_cache(maxsize=64)
def _weights_hash(path: str, size: int, mtime: float) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def model_reference(model: str | Path) -> dict[str, Any]:
    """What identifies a model in a run's config: an embedded name with its package version, a hub
    id, or a folder with its fingerprint (its own run id when ckdlab trained it, else a hash of its
    weights)."""
    name = str(model)
    if name in EMBEDDED_NAMES:
        return {"name": name, "ckdlab": package_version()}
    path = Path(name)
    if not path.exists():
        return {"hub": name}
    stored = read_identity(path.parent) if path.name == "best" else None
    if stored is not None:
        return {"path": str(path.resolve()), "run_id": stored["run_id"]}
    weights = next((path / f for f in WEIGHT_FILES if (path / f).exists()), None)
    if weights is None:
        raise UserError(f"model folder {path} has no {' or '.join(WEIGHT_FILES)}; pass a folder saved with save_pretrained")
    stat = weights.stat()
    return {"path": str(path.resolve()), "weights": _weights_hash(str(weights), stat.st_size, stat.st_mtime)}


def intermediate_identity(task: str, profile: str | dict = "quick", model: str | None = None, seed: int = 0,
                          data_dir: str | Path | None = None) -> tuple[RunIdentity, TrainConfig, TaskSpec, str] | None:
    """``(identity, config, intermediate task, head_init)`` of ``task``'s intermediate stage under
    ``profile`` (None when the profile gives the task none). Its training options start from the
    profile's ``finetune`` defaults; its seed is the teacher's."""
    spec = get_task(task)
    prof = checked_profile(profile)
    with user_input("--profile"):
        settings = stage_intermediate(prof, "finetune", spec.name)
        if settings is None:
            return None
        stage, head_init, options = check_intermediate(settings, spec)
        config = TrainConfig.from_dict({**options, "seed": seed})
    identity = RunIdentity("finetune", config.seed, {
        "task": stage.name, "model": model_reference(str(model or prof["teacher"])), "train": training_identity(config),
        "data": intermediate_data_identity(stage, data_dir),
    })
    return identity, config, stage, head_init


def teacher_identity(task: str, profile: str | dict = "quick", model: str | None = None, seed: int = 0,
                     data_dir: str | Path | None = None, **overrides: Any) -> tuple[RunIdentity, TrainConfig, str]:
    """The identity of fine-tuning ``model`` (default: the profile's teacher) on ``task`` (with the
    identity of its intermediate stage, when the profile gives it one)."""
    spec = get_task(task)
    prof = checked_profile(profile)
    model = str(model or prof["teacher"])
    with user_input("--profile"):
        config = profile_config(prof, "finetune", spec.name, seed=seed, **overrides)
    parts = {
        "task": spec.name, "model": model_reference(model), "train": training_identity(config),
        "data": data_identity(spec.name, ("train", "dev"), data_dir),
    }
    stage = intermediate_identity(spec.name, prof, model, config.seed, data_dir)
    if stage is not None:
        parts["intermediate"] = {"task": stage[2].name, "run_id": stage[0].run_id, "head_init": stage[3]}
    return RunIdentity("finetune", config.seed, parts), config, model


def intermediate_dir(task: str, profile: str | dict = "quick", model: str | None = None, seed: int = 0,
                     data_dir: str | Path | None = None) -> Path | None:
    """The run folder of ``task``'s intermediate stage under ``profile`` (None without one)."""
    stage = intermediate_identity(task, profile, model, seed, data_dir)
    if stage is None:
        return None
    identity, _, spec, _ = stage
    return runs_dir() / checked_profile(profile)["name"] / "intermediate" / f"{spec.name}-{identity.short}"


def train_intermediate(task: str, profile: str | dict = "quick", model: str | None = None, seed: int = 0,
                       data_dir: str | Path | None = None, resume: bool = True) -> dict[str, Any] | None:
    """Train (or find, by identity) ``task``'s intermediate stage; its summary with ``out_dir`` and
    ``head_init``, or None when the profile gives the task no intermediate stage."""
    stage = intermediate_identity(task, profile, model, seed, data_dir)
    if stage is None:
        return None
    identity, config, spec, head_init = stage
    model = str(model or checked_profile(profile)["teacher"])
    out = intermediate_dir(task, profile, model, seed, data_dir)
    if plan_run(out, identity, resume) != "finished":
        train, dev = intermediate_datasets(spec, config.train_limit, config.dev_limit, config.seed, data_dir)
        network, tokenizer = load_backbone(model, num_labels=spec.num_labels, seed=config.seed)
    existed = existing_ancestor(out)
    state = open_run(out, identity, resume)
    if state == "finished":
        summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    else:
        with guard_new_run(out, state, existed):
            # The subsets are taken above (the loaders' seeded subsets), so the trainer gets them whole.
            trainer = Trainer(network, tokenizer, spec, config.replace(train_limit=None, dev_limit=None), out_dir=out,
                              data_dir=data_dir, train_dataset=train, dev_datasets=dev)
            summary = {**trainer.train(resume=state == "resume"), "model": model}
    return {**summary, "task": spec.name, "run_id": identity.run_id, "head_init": head_init, "out_dir": str(out), "state": state}


def teacher_dir(task: str, profile: str = "quick", data_dir: str | Path | None = None, **overrides: Any) -> Path:
    """The run folder of ``task``'s teacher under ``profile`` (``.../best`` holds the model)."""
    identity, _, _ = teacher_identity(task, profile, data_dir=data_dir, **overrides)
    return runs_dir() / load_profile(profile)["name"] / "teachers" / f"{get_task(task).name}-{identity.short}"


def teacher_ready(task: str, profile: str = "quick", data_dir: str | Path | None = None) -> bool:
    folder = teacher_dir(task, profile, data_dir)
    return (folder / "best" / "config.json").exists() and is_finished(folder)


def finetune_teacher(
    task: str,
    profile: str = "quick",
    model: str | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    resume: bool = True,
    record: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Fine-tune the profile's teacher (or ``model``) on ``task`` and record the run.

    ``overrides`` change training options (``epochs=1``, ``lr=3e-5``, ``train_limit=500``...). A
    finished identical run is not trained again; an interrupted one resumes from its checkpoint;
    an ``out_dir`` holding another run is an error unless ``resume=False``.
    """
    spec = get_task(task)
    prof = checked_profile(profile)
    check_model_source(model or prof["teacher"], "--model")
    identity, config, model = teacher_identity(spec.name, prof, model, seed, data_dir, **overrides)
    out = Path(out_dir) if out_dir else runs_dir() / prof["name"] / "teachers" / f"{spec.name}-{identity.short}"
    check_writable(out, "--out", create=False)
    if record:
        check_results_writable(results_dir())
    start = time.perf_counter()
    stage = None
    if plan_run(out, identity, resume) != "finished":
        # Read the data and the model before the run folder is opened: a bad file fails here.
        train, dev = task_splits(spec, config, data_dir)
        stage = train_intermediate(spec.name, prof, model, config.seed, data_dir, resume)
        if stage is not None and not stage["finished"]:
            return {**stage, "intermediate": stage["out_dir"]}
        network, tokenizer = load_backbone(model, num_labels=spec.num_labels, seed=config.seed)
        if stage is not None:
            init_from_intermediate(network, Path(stage["out_dir"]) / "best", stage["head_init"])
    existed = existing_ancestor(out)
    state = open_run(out, identity, resume)
    if state == "finished":
        summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
        size = json.loads((out / "size.json").read_text(encoding="utf-8"))
    else:
        with guard_new_run(out, state, existed):
            trainer = Trainer(network, tokenizer, spec, config, out_dir=out, data_dir=data_dir, train_dataset=train, dev_datasets=dev)
            summary = {**trainer.train(resume=state == "resume"), "model": model}
        if not summary["finished"]:
            return {**summary, "out_dir": str(out)}
        size = size_summary(trainer.unwrapped_model())
        if trainer.accelerator.is_main_process:
            atomic_write_json(out / "size.json", size)
    if record and not record_path(results_dir(), identity.run_id).exists():
        best = summary.get("best_metrics", {})
        save_record({
            "run_id": identity.run_id, "config_id": identity.config_id, "kind": "finetune", "profile": prof["name"],
            "task": spec.name, "model": model, "teacher": model, "student": size["arch"], "method": "fine-tune",
            "seed": config.seed, "config": config.to_dict(), "data": {s: task_source(spec.name, s, data_dir) for s in ("train", "dev")},
            "train_examples": summary["train_examples"], "metrics": {k: v for k, v in best.items() if k != "step"},
            "score": summary["best_score"], "out_dir": str(out),
            "wall_time_s": summary.get("wall_time_s", time.perf_counter() - start), **size,
            **({"intermediate": {k: stage[k] for k in ("task", "run_id", "head_init", "out_dir", "best_score", "wall_time_s")}}
               if stage is not None else {}),
        }, results_dir(), out / "best")
    return {**summary, **size, "out_dir": str(out), "state": state}


def ensure_teacher(task: str, profile: str = "quick", data_dir: str | Path | None = None, **overrides: Any) -> Path:
    """The fine-tuned teacher's model folder (``.../best``), training it first when no finished run exists."""
    summary = finetune_teacher(task, profile=profile, data_dir=data_dir, **overrides)
    return Path(summary["out_dir"]) / "best"


def check_teacher(teacher: str | Path, task: str | TaskSpec) -> PretrainedConfig:
    """The config of the fine-tuned ``teacher`` folder, after checking that it exists and was
    fine-tuned for ``task``'s labels (an SST-2 teacher cannot teach STS-B or MRPC)."""
    spec = get_task(task)
    if not Path(teacher).exists():
        raise UserError(f"--teacher {teacher} does not exist; pass a fine-tuned model folder (a run's best/), or leave "
                        "--teacher out to use the profile's teacher")
    check_model_source(teacher, "--teacher")
    config = AutoConfig.from_pretrained(teacher)
    head = head_labels(config)
    wanted = "a regression head (1 output)" if spec.is_regression else f"{spec.num_labels} labels {list(spec.label_names)}"
    fix = (f"pass a teacher fine-tuned on {spec.name} (ckdlab finetune --task {spec.name} ...), or leave --teacher out "
           "to use the profile's teacher")
    if head is None:
        raise UserError(f"--teacher {teacher} has no classification head (it is not fine-tuned on a task), but {spec.name} "
                        f"needs {wanted}; {fix}")
    outputs, names = head
    generic = all(name == f"LABEL_{i}" for i, name in enumerate(names))
    if outputs != spec.num_labels or (not spec.is_regression and not generic and names != spec.label_names):
        has = "a regression head (1 output)" if outputs == 1 else f"{outputs} labels {list(names)}"
        raise UserError(f"--teacher {teacher} was fine-tuned for another task: it has {has}, but {spec.name} needs {wanted}; "
                        f"{fix}")
    return config


def teacher_config(task: str | TaskSpec, teacher: str | Path | None = None, profile: str | dict = "quick",
                   data_dir: str | Path | None = None) -> PretrainedConfig | None:
    """The architecture of the teacher a run will use, without training or loading it: ``teacher``'s
    (checked with :func:`check_teacher`), the profile's trained teacher's, or the base model the
    profile's teacher will be fine-tuned from. None when it cannot be known without converting a model."""
    spec = get_task(task)
    if teacher is not None:
        return check_teacher(teacher, spec)
    folder = teacher_dir(spec.name, profile, data_dir) / "best"
    if (folder / "config.json").exists():
        return AutoConfig.from_pretrained(folder)
    return backbone_config(checked_profile(profile)["teacher"])


def load_teacher(task: str, teacher: str | Path | None = None, profile: str = "quick",
                 data_dir: str | Path | None = None) -> tuple[Path, PreTrainedModel, PreTrainedTokenizerBase]:
    """``(folder, model, tokenizer)`` of ``teacher`` (a model folder fine-tuned on ``task``) or of the
    profile's teacher for ``task`` (trained first when absent)."""
    spec = get_task(task)
    if teacher is not None:
        check_teacher(teacher, spec)
    path = Path(teacher) if teacher is not None else ensure_teacher(spec.name, profile, data_dir=data_dir)
    model, tokenizer = load_backbone(path, num_labels=spec.num_labels)
    return path, model, tokenizer
