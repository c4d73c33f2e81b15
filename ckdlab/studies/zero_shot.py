"""Notebook 04: zero-shot cross-lingual transfer with distilled students.

The protocol. Train on the source language (English) only; evaluate on every target language;
select checkpoints on the *English* dev set only (no target-language label is ever used for a
choice); report test accuracy per language and its average over the non-English languages
(14 of XNLI's 15). The same functions run XLM-T's tweet sentiment (8 languages) as a second task.

The question (Soltan, Khan & Hamza, SustaiNLP 2021, for multilingual BERT): *when* should a
multilingual model be distilled? A student of a few teacher layers, whose word embeddings are
copied from the teacher and frozen by default (a 250k vocabulary; freezing also keeps the
cross-lingual alignment of the embeddings that English-only training would otherwise erode), is
trained in four ways:

=========  ====================================================================================
setting    what the student goes through
=========  ====================================================================================
(a)        task-agnostic distillation from the *pre-trained* teacher encoder on unlabeled
           multilingual text (hidden-state objectives only: CKD's WR/LTR relations, TinyBERT's
           hidden/attention MSE, ...), then English fine-tuning with cross-entropy
(b)        English fine-tuning *with* distillation from the English-fine-tuned teacher
(c)        (a)'s task-agnostic distillation, then (b)
(d)        English fine-tuning with cross-entropy only (no distillation)
=========  ====================================================================================

All four start from the same student (the same teacher layers, the same seeded classifier head),
so the table isolates the distillation stages. ``run_zero_shot(profile)`` runs the teacher and the
four settings with the sizes of a profile's ``zero_shot`` section and returns the zero-shot table
(rows = settings, columns = languages + the non-source average).

The ``zero_shot`` section: ``teacher`` (e.g. ``me5-small``; ``teacher_shrink`` cuts a small model
out of it for the smoke profile), ``student`` (a layer spec), ``languages``, ``train_limit``
English training pairs, ``dev_limit`` English dev pairs for checkpoint selection, ``test_limit``
test pairs per language, ``eval`` (batch size, length), ``teacher_finetune`` / ``finetune``
(settings a and d) / ``distill`` (settings b and c: TrainConfig keys plus objective, weights,
temperature, layer_map) and ``pretrain`` (objective, weights, layer_map, limit_per_language and
its optimiser keys); ``train_embeddings`` / ``teacher_train_embeddings`` unfreeze the word
embeddings.
"""
from __future__ import annotations

import copy
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import pandas as pd
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import compute_metrics
from ckdlab.data.crosslingual import ZeroShotTask, get_zero_shot_task
from ckdlab.engine import Distiller, KeepBest, TrainConfig, Trainer
from ckdlab.engine.inference import predict_labels
from ckdlab.engine.pretrain import pretrain_distill
from ckdlab.models import add_classification_head, build_student, count_parameters, describe, load_backbone, set_embeddings_trainable
from ckdlab.profiles import PROFILE_DIR, study_settings
from ckdlab.studies.zero_shot_tables import SETTING_LABELS, SETTINGS, average_column, retention_table, zero_shot_table
from ckdlab.workspace import RunIdentity, record_run



# --------------------------------------------------------------------------- evaluation


def evaluate_zero_shot(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: str | ZeroShotTask = "xnli",
    languages: Iterable[str] | None = None,
    split: str = "test",
    limit: int | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 64,
    max_length: int = 128,
    eval_sets: Mapping[str, datasets.Dataset] | None = None,
) -> dict[str, float]:
    """Accuracy per language: ``acc_l = (1/N_l) sum_i [argmax f(x_i) == y_i]`` on ``split`` of each language.

    ``eval_sets`` (language -> labelled Dataset) replaces reading the split, e.g. to evaluate
    several models on the same pre-loaded subsets.
    """
    task = get_zero_shot_task(task)
    if eval_sets is None:
        eval_sets = {code: task.split(code, split, data_dir=data_dir, limit=limit, seed=seed) for code in task.check_languages(languages)}
    scores = {}
    for language, dataset in eval_sets.items():
        preds = predict_labels(model, tokenizer, dataset, task.spec, batch_size=batch_size, max_length=max_length)
        scores[language] = compute_metrics(task.spec, preds, np.asarray(dataset["label"]))["accuracy"]
    return scores


# --------------------------------------------------------------------------- English training (stages b, d and fine-tuning after a)


def _select_best(trainer: Trainer, keep: KeepBest, model: PreTrainedModel) -> dict[str, Any]:
    summary = trainer.train()
    keep.restore(model)
    return {
        "steps": summary["steps"], "train_examples": summary["train_examples"], "best_step": keep.best_step,
        "dev_accuracy": keep.best_score, "wall_time_s": summary["wall_time_s"],
    }


def finetune_on_source(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: str | ZeroShotTask,
    train: datasets.Dataset, dev: datasets.Dataset, config: TrainConfig, train_embeddings: bool = True,
) -> dict[str, Any]:
    """Cross-entropy fine-tuning on the source language; ``model`` ends at its best English-dev checkpoint.

    Returns ``{steps, train_examples, best_step, dev_accuracy, wall_time_s}``.
    """
    task = get_zero_shot_task(task)
    set_embeddings_trainable(model, train_embeddings)
    keep = KeepBest()
    trainer = Trainer(model, tokenizer, task.spec, config, train_dataset=train, dev_datasets={"dev": dev}, callbacks=[keep])
    return _select_best(trainer, keep, model)


def distill_on_source(
    teacher: PreTrainedModel, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: str | ZeroShotTask,
    train: datasets.Dataset, dev: datasets.Dataset, config: TrainConfig, objective: str = "kd",
    weights: Mapping[str, float] | None = None, temperature: float = 1.0, layer_map: str | list = "uniform",
    objective_options: Mapping[str, Any] | None = None, train_embeddings: bool = False, teacher_cache: Any = None,
) -> tuple[dict[str, Any], Any]:
    """Fine-tuning-stage distillation on the source language from the fine-tuned ``teacher``:
    ``loss = sum_term weight[term] * term`` over the objectives of ``objective`` (``"kd"``, ``"ckd+kd"``...;
    add ``weights={"ce": 1}`` for the labels). ``student`` ends at its best English-dev checkpoint.

    Returns ``(summary, teacher_cache)``; pass the cache to the next call on the same training set
    to skip the teacher's forward passes.
    """
    task = get_zero_shot_task(task)
    set_embeddings_trainable(student, train_embeddings)
    keep = KeepBest()
    distiller = Distiller(
        teacher, student, tokenizer, task.spec, objective=objective, weights=dict(weights or {}), temperature=temperature,
        layer_map=layer_map, objective_options=dict(objective_options or {}), config=config, train_dataset=train,
        dev_datasets={"dev": dev}, callbacks=[keep], teacher_tokenizer=tokenizer, teacher_cache=teacher_cache,
    )
    return _select_best(distiller, keep, student), distiller.teacher_cache


# --------------------------------------------------------------------------- profiles


def load_zero_shot_profile(profile: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The ``zero_shot`` section of a profile (``smoke`` | ``quick`` | ``paper`` or a path to a profile
    YAML file), with the profile's ``name``; a dict is taken as the section itself."""
    values = study_settings(profile, "zero_shot")
    required = ("teacher", "student", "languages", "teacher_finetune", "finetune", "distill", "pretrain")
    missing = [key for key in required if key not in values]
    if missing:
        raise ValueError(f"zero-shot profile {values['name']!r} lacks {missing}; see the zero_shot section of {PROFILE_DIR / 'quick.yaml'}")
    return values


def configure(profile: str | os.PathLike | Mapping[str, Any], languages: Sequence[str] | None = None,
              train_limit: int | None = None, test_limit: int | None = None,
              unlabeled_per_language: int | None = None) -> dict[str, Any]:
    """The profile's zero-shot settings with the notebook's parameters (those not None) applied."""
    config = load_zero_shot_profile(profile)
    for key, value in {"languages": languages, "train_limit": train_limit, "test_limit": test_limit}.items():
        if value is not None:
            config[key] = list(value) if key == "languages" else value
    if unlabeled_per_language is not None:
        config["pretrain"] = {**config["pretrain"], "limit_per_language": unlabeled_per_language}
    return config


def describe_config(config: Mapping[str, Any]) -> str:
    """Three lines: teacher, student and embeddings; languages; the two objectives."""
    shrink = f" cut to {config['teacher_shrink']}" if config.get("teacher_shrink") else ""
    return (f"profile={config['name']}  teacher={config['teacher']}{shrink}  student={config['student']}  "
            f"train_embeddings={config.get('train_embeddings', False)}\n"
            f"languages={config['languages']}\n"
            f"pre-training objective={config['pretrain']['objective']}  fine-tuning KD objective={config['distill']['objective']} "
            f"weights={config['distill'].get('weights')}")


# --------------------------------------------------------------------------- the pipeline


@dataclass
class ZeroShotResult:
    """What :func:`run_zero_shot` returns.

    ``scores``: {row: {language: test accuracy}}; ``table``: :func:`zero_shot_table` of them;
    ``retention``: :func:`retention_table`; ``runs``: one dict per row (dev accuracy, sizes, times);
    ``pretrain_log``: the per-step log of task-agnostic distillation (settings a and c).
    """

    profile: dict[str, Any]
    task: str
    languages: list[str]
    scores: dict[str, dict[str, float]]
    table: pd.DataFrame
    retention: pd.DataFrame
    runs: list[dict[str, Any]]
    pretrain_log: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def sizes(self) -> dict[str, Any]:
        keys = ("train_examples", "dev_examples", "test_examples_per_language", "unlabeled_sentences")
        return {k: run[k] for run in self.runs for k in keys if k in run}


def _train_config(section: Mapping[str, Any], seed: int) -> TrainConfig:
    return TrainConfig.from_dict({**section, "seed": seed})


def load_pretrained_teacher(name: str, shrink: str | None = None, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The pre-trained teacher encoder and its tokenizer; ``shrink`` (``"config:L4-H64-A2-I128"``,
    smoke profile) cuts a small model out of it (the leading block of every matrix), keeping its vocabulary."""
    encoder, tokenizer = load_backbone(name)
    if shrink:
        encoder = build_student(encoder, shrink, init="slice", seed=seed)
    return encoder, tokenizer


def run_zero_shot(
    profile: str | os.PathLike | Mapping[str, Any] = "quick",
    task: str = "xnli",
    languages: Iterable[str] | None = None,
    settings: Iterable[str] = SETTINGS,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    results_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    **overrides: Any,
) -> ZeroShotResult:
    """Fine-tune the teacher on English, run the chosen settings (a)-(d), evaluate all zero-shot.

    ``overrides`` replace top-level profile keys (``train_limit=500``, ``student="layers:0,6"``...).
    With ``results_dir`` each row is recorded there (``kind="zero-shot"``).
    """
    prof = load_zero_shot_profile(profile)
    unknown = set(overrides) - set(prof) - {"teacher_shrink", "unlabeled_languages", "train_embeddings", "teacher_train_embeddings"}
    if unknown:
        raise ValueError(f"unknown zero-shot option(s) {sorted(unknown)}; the profile's keys are {sorted(prof)}")
    prof.update(overrides)
    settings = list(dict.fromkeys(s.strip().lower().strip("()") for s in settings))
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        raise ValueError(f"settings {bad} are not known; choose from {', '.join(SETTINGS)} (a: pre-training KD, b: fine-tuning KD, c: both, d: none)")
    zs = get_zero_shot_task(task)
    languages = zs.check_languages(languages or prof["languages"])
    if zs.source_language not in languages:
        languages = [zs.source_language, *languages]
    train_embeddings = bool(prof.get("train_embeddings", False))
    if progress is not None:
        for key in ("teacher_finetune", "finetune", "distill"):
            prof[key] = {**prof[key], "progress": progress}
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    # Data: English train and dev (selection), test (or dev) subsets of every language for the table.
    train = zs.train(data_dir=data_dir, limit=prof.get("train_limit"), seed=seed)
    dev = zs.split(zs.source_language, "dev", data_dir=data_dir, limit=prof.get("dev_limit"), seed=seed)
    report_split = prof.get("report_split", "test")
    tests = {code: zs.split(code, report_split, data_dir=data_dir, limit=prof.get("test_limit"), seed=seed) for code in languages}
    evaluation = dict(prof.get("eval", {}))
    timings["data_s"] = time.perf_counter() - clock

    def evaluate(model: PreTrainedModel) -> dict[str, float]:
        return evaluate_zero_shot(model, tokenizer, zs, eval_sets=tests, batch_size=evaluation.get("batch_size", 64),
                                  max_length=evaluation.get("max_length", 128))

    # The teacher: pre-trained encoder + seeded head; its English fine-tuning is the teacher row.
    start = time.perf_counter()
    encoder, tokenizer = load_pretrained_teacher(prof["teacher"], prof.get("teacher_shrink"), seed=seed)
    pretrained = add_classification_head(encoder, zs.spec.num_labels, seed=seed)
    del encoder
    teacher = copy.deepcopy(pretrained)
    teacher_summary = finetune_on_source(teacher, tokenizer, zs, train, dev, _train_config(prof["teacher_finetune"], seed),
                                         train_embeddings=bool(prof.get("teacher_train_embeddings", True)))
    teacher.requires_grad_(False)
    timings["teacher_finetune_s"] = time.perf_counter() - start
    scores: dict[str, dict[str, float]] = {}
    runs: list[dict[str, Any]] = []

    def report(key: str, model: PreTrainedModel, summary: dict[str, Any]) -> None:
        start = time.perf_counter()
        scores[SETTING_LABELS[key]] = evaluate(model)
        timings[f"{key}_eval_s"] = time.perf_counter() - start
        params = count_parameters(model)
        runs.append({
            "setting": SETTING_LABELS[key], "arch": describe(model), "params": params["total"],
            "params_non_embedding": params["non_embedding"], **summary, "train_examples": len(train),
            "dev_examples": len(dev), "test_examples_per_language": len(tests[languages[0]]), **sizes,
        })

    sizes: dict[str, int] = {}
    report("teacher", teacher, teacher_summary)

    # Every student starts from the same copy of the pre-trained teacher's layers (and head).
    initial = build_student(pretrained, prof["student"], num_labels=zs.spec.num_labels, seed=seed)
    pretrain_log = None
    pretrained_student = None
    if {"a", "c"} & set(settings):
        start = time.perf_counter()
        section = dict(prof["pretrain"])
        sentences = zs.unlabeled(prof.get("unlabeled_languages") or languages, data_dir=data_dir,
                                 limit_per_language=section.pop("limit_per_language", None), seed=seed)
        pretrained_student = copy.deepcopy(initial)
        pretrain_log = pretrain_distill(
            pretrained.bert, pretrained_student.bert, tokenizer, sentences, train_embeddings=train_embeddings, seed=seed,
            progress=section.pop("progress", True) if progress is None else progress, **section,
        )
        timings["pretrain_distill_s"] = time.perf_counter() - start
        sizes["unlabeled_sentences"] = len(sentences)
    del pretrained

    distill = dict(prof["distill"])
    distill_kwargs = {k: distill.pop(k) for k in ("objective", "weights", "temperature", "layer_map", "objective_options") if k in distill}
    cache = None
    for setting in settings:
        start = time.perf_counter()
        student = copy.deepcopy(pretrained_student if setting in ("a", "c") else initial)
        if setting in ("a", "d"):
            summary = finetune_on_source(student, tokenizer, zs, train, dev, _train_config(prof["finetune"], seed), train_embeddings)
        else:
            summary, cache = distill_on_source(teacher, student, tokenizer, zs, train, dev, _train_config(distill, seed),
                                               train_embeddings=train_embeddings, teacher_cache=cache, **distill_kwargs)
        timings[f"{setting}_train_s"] = time.perf_counter() - start
        report(setting, student, summary)
        del student

    table = zero_shot_table(scores, zs.source_language)
    retention = retention_table(table, SETTING_LABELS["teacher"], zs.source_language)
    timings["total_s"] = time.perf_counter() - clock
    if results_dir is not None:
        average = average_column(zs.source_language)
        for run in runs:
            label = run["setting"]
            identity = RunIdentity("zero-shot", seed, {"task": zs.spec.name, "languages": languages, "setting": label,
                                                       "profile": {k: v for k, v in prof.items() if k != "name"}})
            record_run({
                "run_id": identity.run_id, "config_id": identity.config_id, "teacher": str(prof["teacher"]),
                "kind": "zero-shot", "profile": prof["name"], "task": zs.spec.name, "model": str(prof["teacher"]),
                "student": run["arch"], "method": label, "seed": seed, "split": report_split,
                "metrics": {**scores[label], "avg_non_source": float(table.loc[label, average]), "dev_accuracy": run["dev_accuracy"]},
                "score": float(table.loc[label, average]), "wall_time_s": run["wall_time_s"], "params": run["params"],
                "config": {k: v for k, v in prof.items() if k != "name"},
            }, results_dir)
    return ZeroShotResult(prof, zs.spec.name, languages, scores, table, retention, runs, pretrain_log, timings)
