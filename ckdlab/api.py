"""What notebooks and the CLI call.

Everything here is a thin, documented composition of the engine, models, data and results
modules; the notebooks hold no logic of their own beyond a few lines.

Folders (override with env vars): runs ``$CKDLAB_RUNS`` (default ``<project>/runs``), results
``$CKDLAB_RESULTS`` (``<project>/results``), figures ``$CKDLAB_FIGURES`` (``<project>/figures``),
where ``<project>`` is the checkout when ckdlab runs from one, else the working directory.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ckdlab.data import get_task
from ckdlab.engine import finetune as _finetune
from ckdlab.engine import load_profile, profile_config
from ckdlab.models import count_parameters, describe, measure_latency
from ckdlab.results import record_run


def project_root() -> Path:
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def _folder(env: str, name: str) -> Path:
    return Path(os.environ[env]) if os.environ.get(env) else project_root() / name


def runs_dir() -> Path:
    return _folder("CKDLAB_RUNS", "runs")


def results_dir() -> Path:
    return _folder("CKDLAB_RESULTS", "results")


def figures_dir() -> Path:
    return _folder("CKDLAB_FIGURES", "figures")


def teacher_dir(task: str, profile: str = "quick", root: str | Path | None = None) -> Path:
    """Where the fine-tuned teacher of ``task`` under ``profile`` lives (``.../best`` holds the model)."""
    return Path(root or runs_dir()) / profile / "teachers" / get_task(task).name


def model_size(model, seq_len: int = 128, repeats: int = 5) -> dict[str, Any]:
    """Parameter counts and median CPU latency (batch 1, ``seq_len`` tokens, 1 thread)."""
    params = count_parameters(model)
    latency = measure_latency(model, seq_len=seq_len, repeats=repeats, threads=1)
    return {
        "arch": describe(model),
        "params": params["total"],
        "params_non_embedding": params["non_embedding"],
        "latency_ms": round(latency["latency_ms"], 2),
    }


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
    """Fine-tune the profile's teacher on ``task`` and record the run in the results registry.

    ``overrides`` change training options (``epochs=1``, ``lr=3e-5``, ``train_limit=500``...).
    An interrupted run resumes from its checkpoint when ``resume`` is true.
    """
    spec = get_task(task)
    prof = load_profile(profile)
    model = model or prof["teacher"]
    config = profile_config(prof, "finetune", spec.name, seed=seed, **overrides)
    out = Path(out_dir) if out_dir else teacher_dir(spec.name, prof["name"])
    start = time.perf_counter()
    summary = _finetune(spec.name, model=model, config=config, out_dir=out, data_dir=data_dir, resume=resume)
    trainer = summary.pop("trainer")
    best = summary.get("best_metrics", {})
    size = model_size(trainer.unwrapped_model())
    if record:
        record_run(
            {
                "kind": "finetune",
                "profile": prof["name"],
                "task": spec.name,
                "model": str(model),
                "student": size["arch"],
                "method": "fine-tune",
                "seed": seed,
                "config": config.to_dict(),
                "train_examples": summary["train_examples"],
                "metrics": {k: v for k, v in best.items() if k != "step"},
                "score": summary["best_score"],
                "out_dir": str(out),
                "wall_time_s": time.perf_counter() - start,
                **size,
            },
            results_dir(),
        )
    summary.update(size)
    summary["out_dir"] = str(out)
    return summary


def teacher_ready(task: str, profile: str = "quick") -> bool:
    directory = teacher_dir(task, profile)
    summary = directory / "summary.json"
    return (directory / "best" / "config.json").exists() and summary.exists() and json.loads(summary.read_text()).get("finished", False)


def ensure_teacher(task: str, profile: str = "quick", data_dir: str | Path | None = None, **overrides: Any) -> Path:
    """The fine-tuned teacher's folder, training it first when no finished run exists."""
    if not teacher_ready(task, profile):
        finetune_teacher(task, profile=profile, data_dir=data_dir, **overrides)
    return teacher_dir(task, profile) / "best"


def finetune_teachers(
    tasks: Iterable[str] | None = None, profile: str = "quick", data_dir: str | Path | None = None, reuse: bool = True
) -> pd.DataFrame:
    """Fine-tune (or reuse) one teacher per task; a tidy table of their best dev scores."""
    prof = load_profile(profile)
    rows = []
    for task in tasks or prof["tasks"]:
        name = get_task(task).name
        if not (reuse and teacher_ready(name, profile)):
            finetune_teacher(name, profile=profile, data_dir=data_dir)
        rows.append(teacher_summary(name, profile))
    return pd.DataFrame(rows)


def teacher_summary(task: str, profile: str = "quick") -> dict[str, Any]:
    directory = teacher_dir(task, profile)
    summary = json.loads((directory / "summary.json").read_text())
    best = summary.get("best_metrics", {})
    row = {"task": task, "train_examples": summary["train_examples"], "steps": summary["steps"], "best_step": summary["best_step"]}
    row.update({k: round(v, 4) for k, v in best.items() if k not in ("step", "score") and isinstance(v, float)})
    row["headline"] = summary["headline_metric"]
    row["score"] = round(summary["best_score"], 4)
    row["wall_time_s"] = round(summary["wall_time_s"], 1)
    return row


def learning_curves(run_dirs: dict[str, str | Path]) -> pd.DataFrame:
    """Tidy training-loss and dev-metric curves of several runs: run, step, kind, name, value."""
    frames = []
    for run, directory in run_dirs.items():
        directory = Path(directory)
        train = pd.read_csv(directory / "train_log.csv")
        train = train.assign(run=run, kind="train")
        frames.append(train[["run", "step", "epoch", "kind", "name", "value"]])
        if (directory / "eval_log.csv").exists():
            dev = pd.read_csv(directory / "eval_log.csv")
            dev = dev.assign(run=run, kind="dev", name=dev["split"] + "_" + dev["metric"])
            frames.append(dev[["run", "step", "epoch", "kind", "name", "value"]])
    return pd.concat(frames, ignore_index=True)


def evaluate(
    model_dir: str | Path, task: str, split: str = "dev", data_dir: str | Path | None = None, limit: int | None = None, batch_size: int = 64
) -> dict[str, float]:
    """Metrics of a saved classifier (a run's ``best/`` folder or any compatible model) on a split."""
    from ckdlab.engine import TrainConfig, Trainer
    from ckdlab.data import load_task
    from ckdlab.models import load_backbone

    spec = get_task(task)
    model, tokenizer = load_backbone(model_dir, num_labels=spec.num_labels)
    dev = load_task(spec.name, split, data_dir=data_dir, limit=limit)
    trainer = Trainer(model, tokenizer, spec, TrainConfig(eval_batch_size=batch_size, progress=False), train_dataset=dev, dev_datasets={split: dev})
    return trainer.evaluate()


def info() -> dict[str, Any]:
    """Embedded models, known tasks, profiles and the data roots that exist on this machine."""
    from ckdlab.data.paths import candidate_roots
    from ckdlab.data.tasks import TASKS
    from ckdlab.engine import PROFILES
    from ckdlab.models import EMBEDDED_NAMES

    return {
        "models": list(EMBEDDED_NAMES),
        "tasks": sorted(TASKS),
        "profiles": list(PROFILES),
        "data_roots": [str(p) for p in candidate_roots() if p.exists()],
        "runs": str(runs_dir()),
        "results": str(results_dir()),
    }


def figure_path(name: str, profile: str = "quick") -> Path:
    """Where a notebook saves a figure: ``figures/`` for the quick profile (kept for the README),
    ``figures/<profile>/`` for the others (so smoke tests never overwrite the README's figures)."""
    folder = figures_dir() if profile == "quick" else figures_dir() / profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def save_table(frame: pd.DataFrame, name: str, profile: str = "quick") -> Path:
    """A tidy result table as CSV under ``results/<profile>/`` (atomically)."""
    from ckdlab.io import atomic_write_frame

    return atomic_write_frame(results_dir() / profile / f"{name}.csv", frame)
