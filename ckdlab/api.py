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
    if trainer.accelerator.is_main_process:
        from ckdlab.io import atomic_write_json

        atomic_write_json(out / "size.json", size)
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
    if (directory / "size.json").exists():
        size = json.loads((directory / "size.json").read_text())
        row.update({"params": size["params"], "latency_ms": size["latency_ms"]})
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


# --------------------------------------------------------------------------- distillation
_TEACHER_CACHES: dict[tuple, Any] = {}


def student_dir(task: str, student: str, method: str, profile: str = "quick", seed: int = 0) -> Path:
    safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "_" for c in s)  # noqa: E731
    return runs_dir() / profile / "students" / get_task(task).name / safe(student) / safe(method) / f"seed{seed}"


def _load_teacher(task: str, teacher: str | Path | None, profile: str, data_dir: str | Path | None):
    from ckdlab.models import load_backbone

    spec = get_task(task)
    path = Path(teacher) if teacher else ensure_teacher(spec.name, profile, data_dir=data_dir)
    return path, *load_backbone(path, num_labels=spec.num_labels)


def make_distiller(
    task: str,
    student: str = "layers:0,2,4",
    objective: str = "ckd+kd",
    weights: dict[str, float] | None = None,
    teacher: str | Path | None = None,
    profile: str = "quick",
    temperature: float | None = None,
    layer_map: str | list[tuple[int, int]] = "uniform",
    student_init: str | None = None,
    objective_options: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    callbacks: Iterable[Any] = (),
    cache_teacher: bool = True,
    **overrides: Any,
):
    """A ready :class:`~ckdlab.engine.distill.Distiller` (not yet trained).

    ``teacher`` is a fine-tuned model folder (default: the profile's teacher for ``task``, trained
    first when absent). ``student`` is a builder spec (``layers:0,2,4``, ``config:L4-H256-A4-I1024``)
    applied to the teacher, or a folder with a saved student. ``student_init`` (``bert`` | ``slice``)
    initialises ``config:`` students; default: the profile's ``distill.student_init``.
    """
    from ckdlab.engine.distill import Distiller
    from ckdlab.models import build_student, load_backbone

    spec = get_task(task)
    prof = load_profile(profile)
    teacher_path, teacher_model, tokenizer = _load_teacher(spec.name, teacher, prof["name"], data_dir)
    student_tokenizer = tokenizer
    student_init = student_init or prof.get("distill", {}).get("student_init", "bert")
    if Path(str(student)).exists():
        student_model, student_tokenizer = load_backbone(student, num_labels=spec.num_labels)
    else:
        student_model = build_student(teacher_model, student, num_labels=spec.num_labels, init=student_init, seed=seed)
    config = profile_config(prof, "distill", spec.name, seed=seed, **overrides)
    temperature = temperature if temperature is not None else float(prof.get("distill", {}).get("temperature", 1.0))
    cache_key = (str(Path(teacher_path).resolve()), spec.name, seed, config.train_limit, config.max_length)
    cached = _TEACHER_CACHES.get(cache_key) if cache_teacher else None
    distiller = Distiller(
        teacher_model, student_model, student_tokenizer, spec, objective=objective, weights=weights,
        temperature=temperature, layer_map=layer_map, objective_options=objective_options, config=config,
        out_dir=out_dir, data_dir=data_dir, callbacks=callbacks, teacher_tokenizer=tokenizer,
        cache_teacher=cache_teacher, cache_all_layers=True,
    )
    if cached is not None and set(distiller.mapped_teacher_layers()) <= set(cached.layers):
        distiller.teacher_cache = cached
    distiller.teacher_path = teacher_path
    distiller.cache_key = cache_key
    return distiller


def distill(
    task: str,
    student: str = "layers:0,2,4",
    objective: str = "ckd+kd",
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
    """Distil the profile's (or the given) teacher into ``student`` and record the run.

    ``method`` and ``student_name`` label the run in tables (default: the objective and spec);
    the profile's ``distill.student_overrides[student_name]`` (training options such as ``lr``)
    apply unless given here. Other keyword arguments go to :func:`make_distiller` (temperature, layer_map, data_dir,
    objective_options, student_init, and training overrides such as epochs or lr).
    """
    spec = get_task(task)
    method = method or objective
    student_name = student_name or student
    # Per-student training settings of the profile (e.g. a higher lr for a freshly initialised
    # student than for one copied from the teacher); explicit keyword arguments win.
    student_overrides = load_profile(profile).get("distill", {}).get("student_overrides", {}) or {}
    kwargs = {**student_overrides.get(student_name, {}), **kwargs}
    out = Path(out_dir) if out_dir else student_dir(spec.name, student_name, method, profile, seed)
    start = time.perf_counter()
    distiller = make_distiller(spec.name, student=student, objective=objective, weights=weights, teacher=teacher,
                               profile=profile, out_dir=out, seed=seed, **kwargs)
    summary = distiller.train(resume=resume)
    if distiller.teacher_cache is not None:
        # One training set at a time (grids loop over tasks and seeds outside students and
        # methods): keeping only the latest cache bounds memory to one cache budget.
        if distiller.cache_key not in _TEACHER_CACHES:
            _TEACHER_CACHES.clear()
        _TEACHER_CACHES[distiller.cache_key] = distiller.teacher_cache
    size = model_size(distiller.unwrapped_model())
    row = {
        "kind": "distill",
        "profile": load_profile(profile)["name"],
        "task": spec.name,
        "teacher": str(distiller.teacher_path),
        "student": student_name,
        "student_spec": student,
        "method": method,
        "objective": objective,
        "weights": dict(distiller.weights),
        "temperature": distiller.temperature,
        "layer_map": distiller.layer_map,
        "seed": seed,
        "config": distiller.config.to_dict(),
        "train_examples": summary["train_examples"],
        "metrics": {k: v for k, v in summary.get("best_metrics", {}).items() if k != "step"},
        "score": summary["best_score"],
        "out_dir": str(out),
        "wall_time_s": time.perf_counter() - start,
        **size,
    }
    if record:
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
    """Every task x student x method x seed; ``methods`` maps a label to distill() keyword arguments
    (e.g. ``{"CKD + KD": {"objective": "ckd+kd"}}``). Returns a tidy frame, one row per run."""
    rows = []
    for task in tasks:
        for seed in seeds:
            for student_name, student_spec in students.items():
                for method, options in methods.items():
                    row = distill(task, student=student_spec, student_name=student_name, method=method, profile=profile,
                                  seed=seed, **{**kwargs, **options})
                    rows.append({k: row[k] for k in ("task", "student", "method", "seed", "score", "params", "latency_ms", "wall_time_s")})
    return pd.DataFrame(rows)


# --- ablations and DynaBERT (issue 6)
PAPER_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "paper"


def ablations(profile: str = "quick", grid: str = "reduced", reuse: bool = True, **overrides: Any) -> pd.DataFrame:
    """The CKD ablation grid of ``configs/profiles/ablations.yaml`` (see :mod:`ckdlab.ablations`)."""
    from ckdlab.ablations import run_ablations

    return run_ablations(profile, grid, reuse=reuse, **overrides)


def dynabert(profile: str = "quick", grid: str = "reduced", reuse: bool = True, **overrides: Any) -> pd.DataFrame:
    """DynaBERT with its own loss and with CKD + KD, one row per sub-network (see :mod:`ckdlab.dynabert`)."""
    from ckdlab.ablations import run_dynabert_grid

    return run_dynabert_grid(profile, grid, reuse=reuse, **overrides)


def paper_configs(tasks: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The CKD paper's per-task settings, ``ckdlab/configs/paper/<task>.yaml`` (shipped in the package)."""
    import yaml

    configs = {}
    for path in sorted(PAPER_CONFIG_DIR.glob("*.yaml")):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        configs[config["task"]] = config
    wanted = [get_task(t).name for t in tasks] if tasks else list(configs)
    missing = [t for t in wanted if t not in configs]
    if missing:
        raise ValueError(f"no paper config for {missing}; available: {sorted(configs)} in {PAPER_CONFIG_DIR}")
    return {t: configs[t] for t in wanted}


def official_to_ours(official: dict[str, float], lengths: Iterable[int], n_layer_pairs: int, window: int | None = 10) -> dict[str, float]:
    """Convert the official CKD code's loss weights to this implementation's normalisation.

    With n_b the valid tokens of sequence b and K mapped layer pairs (derivation in the YAML files):
    wr_pair x Σn_b / Σn_b²; wr_triplet x Σ_b Σ_a m_a(m_a − 1) / Σ_b n_b(2w+1)² (m_a = valid partners
    of anchor a within the window; without a window x Σ n(n−1)(n−2) / Σ n³); ltr_pair x 1/K;
    ltr_triplet x (K−1)(K−2)/K². Other weights (kd, ce) are unchanged.
    """
    lengths = [int(n) for n in lengths]
    if not lengths or n_layer_pairs < 1:
        raise ValueError("official_to_ours needs token lengths of the training set and n_layer_pairs >= 1")
    k = n_layer_pairs
    anchors = sum(n for n in lengths if n >= 2)
    cells = sum(n * n for n in lengths)
    if window is None:
        ours_t, theirs_t = sum(n * (n - 1) * (n - 2) for n in lengths), sum(n**3 for n in lengths)
    else:
        ours_t = sum(m * (m - 1) for n in lengths for m in (min(a, window) + min(n - 1 - a, window) for a in range(n)))
        theirs_t = sum(n * (2 * window + 1) ** 2 for n in lengths)
    factors = {"wr_pair": anchors / cells, "wr_triplet": ours_t / theirs_t, "ltr_pair": 1.0 / k,
               "ltr_triplet": (k - 1) * (k - 2) / k**2}
    return {name: float(value) * factors.get(name, 1.0) for name, value in official.items()}


def _paper_standin(spec: str) -> str:
    """A tiny stand-in for a student spec: same layers and heads, 2-wide heads, FFN = 2 x hidden."""
    if not spec.lower().startswith("config:"):
        return spec
    from ckdlab.models.students import _CONFIG_RE

    match = _CONFIG_RE.match(spec.split(":", 1)[1])
    layers, heads = int(match[1]), int(match[3] or 1)
    return f"config:L{layers}-H{2 * heads}-A{heads}-I{4 * heads}"


def paper_runs(tasks: Iterable[str] | None = None, dry_run: bool = True, seeds: Iterable[int] | None = None,
               data_dir: str | Path | None = None) -> pd.DataFrame:
    """Every paper config x student (x seed): one row each.

    ``dry_run=True`` (tests, CPU): builds each Distiller exactly as the real run would, but with a
    tiny 12-layer stand-in for bert-base-uncased (24 wide, 12 heads), tiny stand-in students (same
    layers and heads) and 8 synthetic examples, then computes the weighted loss of one batch and
    its gradient (the optimiser and data-loader set-up are skipped: they dominate the time here). ``dry_run=False``
    fine-tunes (or reuses) bert-base-uncased under the paper profile and distils every student
    with every seed (GPU work: ``make paper``).
    """
    import torch
    from datasets import Dataset
    from transformers import BertConfig, BertForSequenceClassification

    from ckdlab.data import load_task, tokenize_dataset
    from ckdlab.engine import TrainConfig
    from ckdlab.engine.distill import Distiller
    from ckdlab.models import build_student, load_backbone, load_tokenizer
    from ckdlab.objectives.layer_map import resolve_layer_map

    rows = []
    for task, config in paper_configs(tasks).items():
        spec = get_task(task)
        if dry_run:
            tokenizer = load_tokenizer("tiny-random")
            texts = ["a tiny stand-in sentence for the dry run", "another short one", "the third example here, longer than the others"]
            data = {field: [texts[i % 3] for i in range(8)] for field in spec.text_fields}
            data["label"] = [float(i % 5) for i in range(8)] if spec.is_regression else [i % spec.num_labels for i in range(8)]
            train = Dataset.from_dict(data)
            teacher_config = BertConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=12, num_attention_heads=12,
                                        intermediate_size=48, num_labels=spec.num_labels)
            teacher = BertForSequenceClassification(teacher_config)
        else:
            teacher_dir_ = ensure_teacher(task, "paper", data_dir=data_dir)
            teacher, tokenizer = load_backbone(teacher_dir_, num_labels=spec.num_labels)
            train = load_task(task, "train", data_dir=data_dir)
        if dry_run:
            encoded = tokenizer(*[list(train[f]) for f in spec.text_fields], truncation=True, max_length=config["train"]["max_length"],
                                padding=True, return_tensors="pt")
            batch = {**encoded, "labels": torch.tensor(list(train["label"]), dtype=torch.float32 if spec.is_regression else torch.long)}
            lengths = encoded["attention_mask"].sum(dim=1).tolist()
        else:
            lengths = [len(ids) for ids in tokenize_dataset(train, tokenizer, spec, max_length=config["train"]["max_length"])["input_ids"]]
        for name, student_spec in config["students"].items():
            built_spec = _paper_standin(student_spec) if dry_run else student_spec
            student = build_student(teacher, built_spec, num_labels=spec.num_labels)
            pairs = resolve_layer_map(config["layer_map"], teacher.config.num_hidden_layers, student.config.num_hidden_layers)
            weights = official_to_ours(config["official_weights"], lengths, len(pairs), config["objective_options"].get("window"))
            row = {"task": task, "student": name, "spec": student_spec, "temperature": config["temperature"],
                   "lr": config["train"]["lr"], "epochs": config["train"]["epochs"], "layer_pairs": len(pairs), **{f"w.{k}": v for k, v in weights.items()}}
            if dry_run:
                train_config = TrainConfig(**{**config["train"], "max_steps": 1, "progress": False})
                distiller = Distiller(teacher, student, tokenizer, spec, objective=config["objective"], weights=weights,
                                      temperature=config["temperature"], layer_map=config["layer_map"],
                                      objective_options=config["objective_options"], config=train_config,
                                      train_dataset=train, dev_datasets={"dev": train}, teacher_tokenizer=tokenizer)
                terms = distiller.compute_terms(batch)
                loss = sum(distiller.weights[name] * value for name, value in terms.items())
                loss.backward()
                rows.append({**row, "loss": float(loss.detach()), "terms": ",".join(sorted(terms))})
                continue
            for seed in seeds if seeds is not None else config["seeds"]:
                record = distill(task, student=student_spec, student_name=name, method="CKD + KD (paper)", profile="paper",
                                 teacher=teacher_dir_, seed=seed, objective=config["objective"], weights=weights,
                                 temperature=config["temperature"], layer_map=config["layer_map"],
                                 objective_options=config["objective_options"], data_dir=data_dir, **config["train"])
                rows.append({**row, "seed": seed, "score": record["score"]})
    return pd.DataFrame(rows)


# --- multilingual zero-shot (issue 5)
def zero_shot(
    profile: str | Path | dict[str, Any] = "quick",
    task: str = "xnli",
    languages: Iterable[str] | None = None,
    settings: Iterable[str] = ("a", "b", "c", "d"),
    seed: int = 0,
    data_dir: str | Path | None = None,
    record: bool = True,
    **overrides: Any,
):
    """Zero-shot cross-lingual transfer: the English-fine-tuned teacher and settings (a) pre-training KD,
    (b) fine-tuning KD, (c) both, (d) no KD, evaluated per language (:func:`ckdlab.multilingual.run_zero_shot`).

    ``profile`` names a section of ``configs/profiles/multilingual.yaml`` (smoke | quick | paper), a YAML
    file or a dict; ``overrides`` replace its top-level keys. Each row is recorded under ``results/``
    (``kind="zero-shot"``) when ``record`` is true. Returns a :class:`ckdlab.multilingual.ZeroShotResult`.
    """
    from ckdlab.multilingual import run_zero_shot

    return run_zero_shot(profile, task=task, languages=languages, settings=settings, seed=seed, data_dir=data_dir,
                         results_dir=results_dir() if record else None, **overrides)
