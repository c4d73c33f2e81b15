"""The teacher lifecycle: find a profile's fine-tuned teacher for a task, or train it.

A teacher run lives in ``runs/<profile>/teachers/<task>-<id>/`` (``best/`` holds the model),
where ``<id>`` comes from the run's identity (the profile's ``finetune`` settings for the task,
the base model, the data files, the seed), so a changed setting trains a new teacher beside the
old one instead of silently reusing it.
"""
from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import get_task, task_source
from ckdlab.engine import TrainConfig, finetune
from ckdlab.errors import UserError
from ckdlab.io import atomic_write_json
from ckdlab.models import EMBEDDED_NAMES, load_backbone, size_summary
from ckdlab.profiles import load_profile, profile_config
from ckdlab.workspace.folders import results_dir, runs_dir
from ckdlab.workspace.records import record_path, record_run
from ckdlab.workspace.runs import IDENTITY_FILE, SUMMARY_FILE, RunIdentity, is_finished, open_run, package_version

# Training options that change logs and progress output, never the trained model.
COSMETIC_OPTIONS = ("progress", "log_every", "save_every")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def training_identity(config: TrainConfig) -> dict[str, Any]:
    """A TrainConfig as it enters a run's configuration: cosmetic options left out, and the seed too
    (:class:`RunIdentity` carries it apart, so that seeds of one configuration share a ``config_id``)."""
    return {k: v for k, v in config.to_dict().items() if k not in COSMETIC_OPTIONS and k != "seed"}


def data_identity(task: str, splits: tuple[str, ...], data_dir: str | Path | None) -> dict[str, Any]:
    """Which data files (relative name and size, or hub split) a run reads; where they are is not
    part of the identity, so a moved data folder still finds its runs."""
    sources = {split: task_source(task, split, data_dir) for split in splits}
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
    if path.name == "best" and (path.parent / IDENTITY_FILE).exists():
        return {"path": str(path.resolve()), "run_id": json.loads((path.parent / IDENTITY_FILE).read_text())["run_id"]}
    weights = next((path / f for f in WEIGHT_FILES if (path / f).exists()), None)
    if weights is None:
        raise UserError(f"model folder {path} has no {' or '.join(WEIGHT_FILES)}; pass a folder saved with save_pretrained")
    stat = weights.stat()
    return {"path": str(path.resolve()), "weights": _weights_hash(str(weights), stat.st_size, stat.st_mtime)}


def teacher_identity(task: str, profile: str | dict = "quick", model: str | None = None, seed: int = 0,
                     data_dir: str | Path | None = None, **overrides: Any) -> tuple[RunIdentity, TrainConfig, str]:
    """The identity of fine-tuning ``model`` (default: the profile's teacher) on ``task``."""
    spec = get_task(task)
    prof = load_profile(profile)
    model = str(model or prof["teacher"])
    config = profile_config(prof, "finetune", spec.name, seed=seed, **overrides)
    identity = RunIdentity("finetune", config.seed, {
        "task": spec.name, "model": model_reference(model), "train": training_identity(config),
        "data": data_identity(spec.name, ("train", "dev"), data_dir),
    })
    return identity, config, model


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
    prof = load_profile(profile)
    identity, config, model = teacher_identity(spec.name, prof, model, seed, data_dir, **overrides)
    out = Path(out_dir) if out_dir else runs_dir() / prof["name"] / "teachers" / f"{spec.name}-{identity.short}"
    state = open_run(out, identity, resume)
    start = time.perf_counter()
    if state == "finished":
        summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
        size = json.loads((out / "size.json").read_text(encoding="utf-8"))
    else:
        summary = finetune(spec.name, model=model, config=config, out_dir=out, data_dir=data_dir, resume=state == "resume")
        trainer = summary.pop("trainer")
        if not summary["finished"]:
            return {**summary, "out_dir": str(out)}
        size = size_summary(trainer.unwrapped_model())
        if trainer.accelerator.is_main_process:
            atomic_write_json(out / "size.json", size)
    if record and not record_path(results_dir(), identity.run_id).exists():
        best = summary.get("best_metrics", {})
        record_run({
            "run_id": identity.run_id, "config_id": identity.config_id, "kind": "finetune", "profile": prof["name"],
            "task": spec.name, "model": model, "teacher": model, "student": size["arch"], "method": "fine-tune",
            "seed": config.seed, "config": config.to_dict(), "data": {s: task_source(spec.name, s, data_dir) for s in ("train", "dev")},
            "train_examples": summary["train_examples"], "metrics": {k: v for k, v in best.items() if k != "step"},
            "score": summary["best_score"], "out_dir": str(out),
            "wall_time_s": summary.get("wall_time_s", time.perf_counter() - start), **size,
        }, results_dir())
    return {**summary, **size, "out_dir": str(out), "state": state}


def ensure_teacher(task: str, profile: str = "quick", data_dir: str | Path | None = None, **overrides: Any) -> Path:
    """The fine-tuned teacher's model folder (``.../best``), training it first when no finished run exists."""
    summary = finetune_teacher(task, profile=profile, data_dir=data_dir, **overrides)
    return Path(summary["out_dir"]) / "best"


def load_teacher(task: str, teacher: str | Path | None = None, profile: str = "quick",
                 data_dir: str | Path | None = None) -> tuple[Path, PreTrainedModel, PreTrainedTokenizerBase]:
    """``(folder, model, tokenizer)`` of ``teacher`` (a model folder) or of the profile's teacher for
    ``task`` (trained first when absent)."""
    spec = get_task(task)
    if teacher is not None and not Path(teacher).exists():
        raise UserError(f"--teacher {teacher} does not exist; pass a fine-tuned model folder (a run's best/), or leave "
                        "--teacher out to use the profile's teacher")
    path = Path(teacher) if teacher is not None else ensure_teacher(spec.name, profile, data_dir=data_dir)
    model, tokenizer = load_backbone(path, num_labels=spec.num_labels)
    return path, model, tokenizer
