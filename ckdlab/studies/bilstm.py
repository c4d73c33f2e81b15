"""Notebook 06: a BiLSTM student by sentence-representation approximation, stage 2 and the tables.

Stage 1 (:mod:`ckdlab.studies.bilstm_stage1`) trains the BiLSTM encoder without a task. Stage 2
fine-tunes it per task through the distillation study (:func:`ckdlab.studies.distillation.distill`,
objectives ``ce`` and ``kd``), so its runs have identities and records like every other student.
A stage-1 encoder enters a run as a saved folder: for each task shape (one sentence or a pair,
number of labels) :func:`task_student` saves the encoder with a classifier head of that shape
(seeded), because a pair task's BiLSTM encodes the two sentences separately (``sentence_pair``).

The profile's ``bilstm`` section names the student, the tasks, the seeds, the stage-2 training
options (over the profile's ``distill`` settings per task) and the ``methods`` — rows of the table:

- ``stage1: true`` — the stage-1 encoder of the same seed, then ``objective`` (``ce`` or ``kd``);
- ``stage1: false`` — the same shape built from the teacher with ``student_init`` (``random``: the
  issue's baseline, "no stage 1"; ``pca``: PCA embeddings without stage 1), then ``objective``.

Every method of a task and seed gets the same stage-2 budget. :func:`cost_table` measures every
model of the table side by side in one process (batch-1 latency, batch-32 throughput, 1 thread).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import PreTrainedModel

from ckdlab.data import get_task
from ckdlab.io import atomic_directory
from ckdlab.models import build_student, count_parameters, load_backbone
from ckdlab.models.bilstm import BILSTM_INITS, BiLSTMConfig, BiLSTMForSequenceClassification, BiLSTMModel, parse_bilstm_spec
from ckdlab.profiles import load_profile, profile_section
from ckdlab.results import ResultsTable, compare, describe_comparison, table
from ckdlab.studies.bilstm_stage1 import Stage1Result, run_stage1
from ckdlab.studies.distillation import GRID_COLUMNS, distill
from ckdlab.studies.teachers import teacher_summary
from ckdlab.workspace import load_runs, results_dir

TEACHER_ROW = "teacher"


def bilstm_settings(profile: str | dict) -> dict[str, Any]:
    """The profile's ``bilstm`` section, checked: student spec, tasks, seeds, methods."""
    section = profile_section(profile, "bilstm")
    name = load_profile(profile)["name"]
    parse_bilstm_spec(section.get("student", ""))
    for key in ("tasks", "seeds", "methods"):
        if not section.get(key):
            raise ValueError(f"profile '{name}': bilstm.{key} is missing or empty (see ckdlab/configs/profiles/quick.yaml)")
    for label, method in section["methods"].items():
        unknown = set(method) - {"stage1", "objective", "student_init", "tasks"}
        if unknown or "objective" not in method:
            raise ValueError(f"profile '{name}': bilstm.methods[{label!r}] needs 'objective' and may set stage1, student_init, "
                             f"tasks; got {sorted(method)}")
        if not method.get("stage1") and method.get("student_init", "random") not in BILSTM_INITS:
            raise ValueError(f"profile '{name}': bilstm.methods[{label!r}].student_init must be one of {BILSTM_INITS}")
    return section


def student_label(spec: str) -> str:
    """The table's name of a BiLSTM spec: ``'bilstm:L2-H150-E300'`` -> ``'BiLSTM 2×150'``."""
    config = BiLSTMConfig(**parse_bilstm_spec(spec))
    return f"BiLSTM {config.num_layers}×{config.hidden_size}"


def stage2_options(profile: str | dict, task: str) -> dict[str, Any]:
    """Training options of a stage-2 run on ``task``: ``bilstm.stage2.defaults`` and ``.tasks[task]``
    over the profile's ``distill`` settings for the task (what :func:`distill` merges them into)."""
    stage2 = bilstm_settings(profile).get("stage2") or {}
    return {**(stage2.get("defaults") or {}), **((stage2.get("tasks") or {}).get(get_task(task).name) or {})}


def task_student(stage1: Stage1Result, task: str, seed: int) -> Path:
    """The stage-1 encoder with a classifier head for ``task``'s shape, initialised from ``seed``
    (the stage-2 seed), saved once as a model folder; equal inputs give an equal folder and so an
    equal run identity. A pair task's model encodes its two sentences separately."""
    spec = get_task(task)
    folder = stage1.out_dir / "students" / f"{'pair' if spec.is_pair else 'single'}-{spec.num_labels}-seed{int(seed)}"
    if (folder / "config.json").exists():
        return folder
    encoder = BiLSTMModel.from_pretrained(stage1.encoder_dir)
    config = BiLSTMConfig.from_pretrained(stage1.encoder_dir)
    config.num_labels = spec.num_labels  # the setter also renews the label maps
    config.sentence_pair = spec.is_pair
    config.problem_type = "regression" if spec.is_regression else "single_label_classification"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = BiLSTMForSequenceClassification(config)
    model.bilstm.load_state_dict(encoder.state_dict())
    _, tokenizer = load_backbone(stage1.encoder_dir)
    with atomic_directory(folder) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def stage1_runs(profile: str | dict = "quick", seeds: Iterable[int] | None = None, data_dir: str | Path | None = None,
                progress: bool | None = None) -> dict[int, Stage1Result]:
    """The stage-1 run each stage-2 seed starts from: one shared run (seed ``bilstm.stage1.seed``),
    like one pre-trained checkpoint fine-tuned with several seeds, or, when that is null, one run
    per seed. Finished identical runs are read back."""
    section = bilstm_settings(profile)
    seeds = [int(s) for s in (seeds if seeds is not None else section["seeds"])]
    shared = (section.get("stage1") or {}).get("seed")
    if shared is not None and (isinstance(shared, bool) or not isinstance(shared, int)):
        raise ValueError(f"bilstm.stage1.seed={shared!r} must be an integer (one shared stage-1 run) or null (one per seed)")
    wanted = {seed: seed if shared is None else int(shared) for seed in seeds}
    done = {s: run_stage1(profile, s, data_dir=data_dir, progress=progress) for s in dict.fromkeys(wanted.values())}
    return {seed: done[wanted[seed]] for seed in seeds}


def run_bilstm(profile: str = "quick", tasks: Iterable[str] | None = None, seeds: Iterable[int] | None = None,
               methods: Iterable[str] | None = None, data_dir: str | Path | None = None,
               progress: bool | None = None) -> tuple[pd.DataFrame, dict[int, Stage1Result]]:
    """Stage 1 (:func:`stage1_runs`, when a method needs it), then every task x seed x method
    through :func:`distill` (finished identical runs are read back). Returns one row per run
    (:data:`~ckdlab.studies.distillation.GRID_COLUMNS`) and the stage-1 result of each seed."""
    section = bilstm_settings(profile)
    tasks = [get_task(t).name for t in (tasks or section["tasks"])]
    seeds = [int(s) for s in (seeds if seeds is not None else section["seeds"])]
    chosen = {label: section["methods"][label] for label in (methods or section["methods"])}
    name = student_label(section["student"])
    extra = {} if progress is None else {"progress": progress}
    stage1 = stage1_runs(profile, seeds, data_dir, progress) if any(m.get("stage1") for m in chosen.values()) else {}
    rows = []
    for task in tasks:
        for seed in seeds:
            for label, method in chosen.items():
                if task not in method.get("tasks", [task]):
                    continue
                if method.get("stage1"):
                    student, init = str(task_student(stage1[seed], task, seed)), None
                else:
                    student, init = section["student"], method.get("student_init", "random")
                row = distill(task, student=student, student_name=name, method=label, objective=method["objective"],
                              student_init=init, profile=profile, seed=seed, data_dir=data_dir,
                              **{**stage2_options(profile, task), **extra})
                rows.append({k: row[k] for k in GRID_COLUMNS})
    return pd.DataFrame(rows, columns=list(GRID_COLUMNS)), stage1


# --------------------------------------------------------------------------- what the table compares


def comparison_runs(profile: str = "quick", tasks: Iterable[str] | None = None) -> pd.DataFrame:
    """The other rows of notebook 06's table, from what is on disk (nothing is trained): the
    profile's teachers (notebook 01's summaries) and notebook 03's transformer students (its run
    records: the profile's ``distill.students`` x ``distill.methods``), when present."""
    prof = load_profile(profile)
    tasks = [get_task(t).name for t in (tasks or bilstm_settings(prof)["tasks"])]
    rows = []
    for task in tasks:
        try:
            summary = teacher_summary(task, prof["name"])
        except FileNotFoundError:
            continue
        rows.append({"student": TEACHER_ROW, "method": "fine-tune", "task": task, "seed": 0, "score": summary["score"],
                     "params": summary.get("params"), "run_id": f"teacher-{task}", "config_id": f"teacher-{task}"})
    teachers = pd.DataFrame(rows)
    records = load_runs(results_dir(), kind="distill", profile=prof["name"])
    students = list((prof.get("distill") or {}).get("students", {}))
    methods = list((prof.get("distill") or {}).get("methods", {}))
    if records.empty:
        return teachers
    keep = records["student"].isin(students) & records["method"].isin(methods) & records["task"].isin(tasks)
    return pd.concat([teachers, records[keep]], ignore_index=True)


def bilstm_table(grid: pd.DataFrame, others: pd.DataFrame | None = None, costs: pd.DataFrame | None = None,
                 scale: float = 100.0) -> tuple[ResultsTable, pd.DataFrame]:
    """Rows = student x method, columns = tasks and their average (mean ± std over seeds), then
    parameters and the measured costs of each student (:func:`cost_table`). Returns the
    :class:`ResultsTable` of the scores and the display frame."""
    runs = load_runs(results_dir(), kind="distill", run_id=list(grid["run_id"]))
    # The seeds of one method are seeds of one configuration by construction (one run_bilstm call),
    # but their run identities differ by more than the seed: the training config's own seed field,
    # and for stage-1 methods the seed's stage-1 folder. Pool them as one configuration.
    runs["config_id"] = "bilstm|" + runs["student"] + "|" + runs["method"]
    frame = pd.concat([runs, others], ignore_index=True) if others is not None and not others.empty else runs
    result = table(frame, rows=("student", "method"), scale=scale)
    shown = result.formatted()
    shown["seeds"] = result.seeds()
    if costs is not None:
        by_student = costs.set_index("student")
        students = [key[0] for key in shown.index]
        shown["params (M)"] = [f"{by_student.loc[s, 'params'] / 1e6:.1f}" if s in by_student.index else "–" for s in students]
        for column, fmt in (("latency_ms", "{:.1f}"), ("x teacher", "{:.2f}"), ("sentences/s", "{:.0f}")):
            shown[column] = [fmt.format(by_student.loc[s, column]) if s in by_student.index else "–" for s in students]
    return result, shown


def markdown(frame: pd.DataFrame) -> str:
    """A display frame (index = row keys) as a Markdown table."""
    names = [str(n) for n in frame.index.names] if frame.index.names[0] else ["row"]
    lines = ["| " + " | ".join(names + [str(c) for c in frame.columns]) + " |",
             "|" + "|".join(["---"] * len(names) + ["---:"] * len(frame.columns)) + "|"]
    for key, row in frame.iterrows():
        keys = list(key) if isinstance(key, tuple) else [key]
        lines.append("| " + " | ".join([str(k) for k in keys] + [str(v) for v in row.values]) + " |")
    return "\n".join(lines)


def stage1_effect(grid: pd.DataFrame, pairs: Iterable[tuple[str, str]], scale: float = 100.0) -> list[str]:
    """For each ``(a, b)`` pair of methods: the paired difference over seeds (averaged over tasks
    per seed, then per task) with its 95% interval, as sentences that say only what it supports."""
    lines = []
    for a, b in pairs:
        if not {a, b} <= set(grid["method"]):
            continue
        lines.append(f"**{a} vs {b}** — all tasks: " + describe_comparison(compare(grid, a, b, column="method"), scale))
        for task in dict.fromkeys(grid["task"]):
            part = grid[grid["task"] == task]
            if {a, b} <= set(part["method"]):
                lines.append(f"- {task}: " + describe_comparison(compare(part, a, b, column="method"), scale))
    return lines


# --------------------------------------------------------------------------- costs, side by side


def bert_inputs(batch: int, tokens: int, vocab_size: int, cls_id: int, sep_id: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``[CLS] w ... w [SEP]`` of random word pieces, every position valid: what latency is measured on."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (batch, tokens), generator=generator)
    ids[:, 0], ids[:, -1] = cls_id, sep_id
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


@torch.no_grad()
def alternate(models: dict[str, PreTrainedModel], inputs: dict[str, torch.Tensor], repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per forward of each model, the models called in turn ``repeats`` times, so that the
    load of a shared machine drifts over all of them alike."""
    for _ in range(warmup):
        for model in models.values():
            model(**inputs)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(**inputs)
            times[name].append(time.perf_counter() - start)
    return times


def cost_table(profile: str = "quick", tokens: int = 64, batch: int = 32, repeats: int = 50, batch_repeats: int = 5,
               threads: int = 1, extra: dict[str, str] | None = None) -> pd.DataFrame:
    """Parameters, batch-1 latency (median and 90th percentile, ms) and batch-``batch`` throughput
    (sentences/s) at ``tokens`` tokens on ``threads`` CPU threads of the profile's teacher (2-label
    head), notebook 03's students (``distill.students``), the BiLSTM student and ``extra``
    (name -> spec), measured side by side in one process; weights do not change the cost, so the
    models are built from the pre-trained teacher rather than loaded from runs."""
    prof = load_profile(profile)
    teacher, tokenizer = load_backbone(str(prof["teacher"]), num_labels=2)
    bilstm = bilstm_settings(prof)["student"]
    specs = {**(prof.get("distill") or {}).get("students", {}), student_label(bilstm): bilstm, **(extra or {})}
    models = {TEACHER_ROW: teacher}
    models.update({name: build_student(teacher, spec, num_labels=2) for name, spec in specs.items()})
    for model in models.values():
        model.eval()
    make = {"vocab_size": teacher.config.vocab_size, "cls_id": tokenizer.cls_token_id, "sep_id": tokenizer.sep_token_id}
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        latency = alternate(models, bert_inputs(1, tokens, **make), repeats)
        throughput = alternate(models, bert_inputs(batch, tokens, **make), batch_repeats, warmup=1)
    finally:
        torch.set_num_threads(previous)
    reference = statistics.median(latency[TEACHER_ROW])
    rows = []
    for name, model in models.items():
        median = statistics.median(latency[name])
        rows.append({"student": name, "params": count_parameters(model)["total"], "latency_ms": 1000 * median,
                     "latency_p90_ms": 1000 * sorted(latency[name])[int(0.9 * (len(latency[name]) - 1))],
                     "x teacher": median / reference, "sentences/s": batch / statistics.median(throughput[name]),
                     "tokens": tokens, "threads": threads})
    return pd.DataFrame(rows)


def pareto_points(result: ResultsTable, costs: pd.DataFrame) -> pd.DataFrame:
    """One point per table row with an average: ``student, method, score, score_std, latency_ms, kind``."""
    if "avg" not in result.mean.columns:
        raise ValueError("the table has no 'avg' column: every row needs every task for the Pareto plot")
    by_student = costs.set_index("student")
    rows = []
    for (student, method), score in result.mean["avg"].dropna().items():
        if student not in by_student.index:
            continue
        kind = TEACHER_ROW if student == TEACHER_ROW else "BiLSTM" if student.startswith("BiLSTM") else "transformer student"
        rows.append({"student": student, "method": method, "score": score, "score_std": result.std.loc[(student, method), "avg"],
                     "latency_ms": by_student.loc[student, "latency_ms"], "kind": kind})
    return pd.DataFrame(rows)
