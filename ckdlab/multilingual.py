"""Zero-shot cross-lingual transfer with distilled students (issue 5; notebook 04).

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
four settings with the sizes of a profile in ``ckdlab/configs/profiles/multilingual.yaml`` and
returns the zero-shot table (rows = settings, columns = languages + the non-source average).
"""
from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, SimpleNamespace
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

from ckdlab.data import DynamicPaddingCollator, compute_metrics, tokenize_dataset
from ckdlab.data.sentiment import SENTIMENT_ISO_CODES, SENTIMENT_LABELS, load_sentiment
from ckdlab.data.tasks import SplitSpec, TaskSpec
from ckdlab.data.xnli import (
    MNLI_SAMPLE_FILE,
    XNLI_LABELS,
    XNLI_LANGUAGES,
    load_mnli_english_train,
    load_xnli,
    multilingual_unlabeled_sentences,
)
from ckdlab.engine.config import TrainConfig
from ckdlab.models import build_student, count_parameters, describe
from ckdlab.results import record_run
from ckdlab.engine.distill import Distiller
from ckdlab.engine.trainer import Callback, Trainer
from ckdlab.objectives.capture import capture_qkv
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.objectives.registry import REGISTRY, BuildContext, build_objectives, default_weights, parse_objective

PROFILE_FILE = Path(__file__).resolve().parent / "configs" / "profiles" / "multilingual.yaml"
SETTINGS = ("a", "b", "c", "d")
SETTING_LABELS = MappingProxyType({
    "teacher": "teacher",
    "a": "(a) pre-training KD",
    "b": "(b) fine-tuning KD",
    "c": "(c) both",
    "d": "(d) no KD",
})


# --------------------------------------------------------------------------- tasks


def _spec(name: str, hub: str, text_fields: tuple[str, ...], labels: Sequence[str], files: Mapping[str, str]) -> TaskSpec:
    # Not GLUE tasks: SplitSpec.file documents where a split lives; the readers below load them.
    return TaskSpec(
        name=name,
        glue_dir=name,
        hub_config=hub,
        text_fields=text_fields,
        num_labels=len(labels),
        label_names=tuple(labels),
        is_regression=False,
        metrics=("accuracy",),
        headline="accuracy",
        splits=MappingProxyType({split: SplitSpec(file, split) for split, file in files.items()}),
        split_aliases=MappingProxyType({"validation": "dev"}),
    )


XNLI_TASK = _spec(
    "xnli", "facebook/xnli", ("premise", "hypothesis"), XNLI_LABELS,
    {"train": MNLI_SAMPLE_FILE, "dev": "xnli/xtreme/dev-<lang>.tsv", "test": "xnli/xtreme/test-<lang>.tsv"},
)
SENTIMENT_TASK = _spec(
    "sentiment", "cardiffnlp/tweet_sentiment_multilingual", ("text",), SENTIMENT_LABELS,
    {"train": "umsab_sentiment/english/train_*", "dev": "umsab_sentiment/<lang>/val_*", "test": "umsab_sentiment/<lang>/test_*"},
)


@dataclass(frozen=True)
class ZeroShotTask:
    """A cross-lingual task: its :class:`TaskSpec`, its languages, and how to read each split.

    ``train`` reads the source-language training set; ``split(language, "dev"|"test")`` a labelled
    evaluation split; ``unlabeled(languages)`` sentences for task-agnostic distillation.
    """

    spec: TaskSpec
    languages: tuple[str, ...]
    source_language: str
    _train: Callable[..., datasets.Dataset]
    _split: Callable[..., datasets.Dataset]
    _unlabeled: Callable[..., list[str]]

    def check_languages(self, languages: Iterable[str] | None) -> list[str]:
        """``languages`` lower-cased and validated (``None`` = all of the task's languages)."""
        if languages is None:
            return list(self.languages)
        if isinstance(languages, str):
            languages = [languages]
        codes = [str(code).strip().lower() for code in languages]
        unknown = [code for code in codes if code not in self.languages]
        if unknown:
            raise ValueError(f"languages {unknown} are not {self.spec.name} languages; choose from {', '.join(self.languages)}")
        if not codes:
            raise ValueError(f"languages is empty; pass some of {', '.join(self.languages)}")
        return list(dict.fromkeys(codes))

    def train(self, data_dir: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0) -> datasets.Dataset:
        return self._train(data_dir=data_dir, limit=limit, seed=seed)

    def split(self, language: str, split: str, data_dir: str | os.PathLike | None = None,
              limit: int | None = None, seed: int = 0) -> datasets.Dataset:
        if split not in ("dev", "test"):
            raise ValueError(f"split={split!r}: zero-shot evaluation reads 'dev' (for selection) or 'test' (for reporting)")
        (language,) = self.check_languages([language])
        return self._split(language, split, data_dir=data_dir, limit=limit, seed=seed)

    def unlabeled(self, languages: Iterable[str] | None = None, data_dir: str | os.PathLike | None = None,
                  limit_per_language: int | None = None, seed: int = 0) -> list[str]:
        return self._unlabeled(self.check_languages(languages), data_dir=data_dir, limit_per_language=limit_per_language, seed=seed)


def _sentiment_unlabeled(languages, data_dir=None, limit_per_language=None, seed=0) -> list[str]:
    texts: dict[str, None] = {}
    for language in languages:
        for text in load_sentiment(language, "dev", data_dir=data_dir, limit=limit_per_language, seed=seed)["text"]:
            texts.setdefault(text, None)
    return list(texts)


ZERO_SHOT_TASKS: Mapping[str, ZeroShotTask] = MappingProxyType({
    "xnli": ZeroShotTask(
        XNLI_TASK, XNLI_LANGUAGES, "en",
        _train=load_mnli_english_train,
        _split=lambda language, split, **kw: load_xnli(language, split, **kw),
        # XNLI dev sentences (labels dropped): the offline stand-in for multilingual pre-training text.
        _unlabeled=lambda languages, **kw: multilingual_unlabeled_sentences(languages, "dev", **kw),
    ),
    "sentiment": ZeroShotTask(
        SENTIMENT_TASK, tuple(SENTIMENT_ISO_CODES), "en",
        _train=lambda **kw: load_sentiment("en", "train", **kw),
        _split=lambda language, split, **kw: load_sentiment(language, split, **kw),
        _unlabeled=_sentiment_unlabeled,
    ),
})


def get_zero_shot_task(task: str | ZeroShotTask) -> ZeroShotTask:
    if isinstance(task, ZeroShotTask):
        return task
    key = str(task).strip().lower()
    if key not in ZERO_SHOT_TASKS:
        raise ValueError(f"unknown zero-shot task {task!r}; use one of {', '.join(ZERO_SHOT_TASKS)}")
    return ZERO_SHOT_TASKS[key]


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict_labels(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: datasets.Dataset, task: TaskSpec,
    batch_size: int = 64, max_length: int = 128,
) -> np.ndarray:
    """Predicted class ids (argmax of the logits), in the order of ``dataset``'s rows."""
    tokenized = tokenize_dataset(dataset, tokenizer, task, max_length=max_length)
    # Batches of similar length waste far less compute on padding; predictions are put back in order.
    order = np.argsort([len(ids) for ids in tokenized["input_ids"]], kind="stable")
    loader = DataLoader(tokenized.select(order), batch_size=batch_size, collate_fn=DynamicPaddingCollator(tokenizer))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds = []
    for batch in loader:
        inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        preds.append(model(**inputs).logits.argmax(dim=-1).cpu().numpy())
    model.train(was_training)
    result = np.empty(len(tokenized), dtype=np.int64)
    result[order] = np.concatenate(preds) if preds else np.empty(0, dtype=np.int64)
    return result


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


def average_column(source_language: str = "en") -> str:
    return f"avg (non-{source_language})"


def zero_shot_table(scores: Mapping[str, Mapping[str, float]], source_language: str = "en") -> pd.DataFrame:
    """Rows = settings, columns = languages (first row's order) + the average over non-source languages.

    ``avg (non-en) = (1/|T|) sum_{l in T} acc_l`` with T the languages other than ``source_language``
    (the 14 non-English XNLI languages when all 15 are evaluated).
    """
    if not scores:
        raise ValueError("scores is empty; pass {setting: {language: accuracy}}")
    rows = list(scores)
    languages = list(next(iter(scores.values())))
    for row in rows:
        if list(scores[row]) != languages:
            raise ValueError(f"row {row!r} has languages {list(scores[row])}, expected {languages}; evaluate every setting on the same languages")
    targets = [code for code in languages if code != source_language]
    if not targets:
        raise ValueError(f"no language other than the source {source_language!r}; a zero-shot average needs at least one target language")
    frame = pd.DataFrame([[float(scores[row][code]) for code in languages] for row in rows], index=rows, columns=languages)
    frame[average_column(source_language)] = frame[targets].mean(axis=1)
    frame.index.name = "setting"
    return frame


def retention_table(table: pd.DataFrame, teacher_row: str = "teacher", source_language: str = "en") -> pd.DataFrame:
    """Each student's retention of the teacher per language, ``acc_student(l) / acc_teacher(l)``.

    The average column is the mean of the per-language retentions over the non-source languages
    (not the ratio of the averages), so it weighs every target language alike. Where the teacher
    scores 0 the retention is NaN (and left out of the average).
    """
    if teacher_row not in table.index:
        raise ValueError(f"table has no {teacher_row!r} row (rows: {list(table.index)}); pass teacher_row=")
    average = average_column(source_language)
    languages = [c for c in table.columns if c != average]
    # A language where the teacher scores 0 has no defined retention: NaN there, not inf.
    teacher = table.loc[teacher_row, languages].where(lambda scores: scores > 0)
    retention = table.drop(index=teacher_row)[languages].div(teacher, axis=1)
    retention[average] = retention[[c for c in languages if c != source_language]].mean(axis=1)
    return retention


# --------------------------------------------------------------------------- students


def set_embeddings_trainable(model: PreTrainedModel, train_embeddings: bool) -> PreTrainedModel:
    """Freeze (``False``) or unfreeze the word-embedding matrix; returns ``model``.

    Only the 250k x d word embeddings: position/type embeddings and their LayerNorm are small and
    carry no language-specific vocabulary. ``requires_grad`` is not saved with a model, so this is
    re-applied before every training stage.
    """
    if not isinstance(train_embeddings, bool):
        raise ValueError(f"train_embeddings={train_embeddings!r} must be True or False")
    model.base_model.embeddings.word_embeddings.requires_grad_(train_embeddings)
    return model


def add_classification_head(encoder: PreTrainedModel, num_labels: int, seed: int = 0) -> BertForSequenceClassification:
    """``BertForSequenceClassification`` holding ``encoder``'s weights and a seeded fresh pooler and head."""
    config = BertConfig.from_dict(encoder.config.to_dict())
    config.num_labels, config.problem_type = num_labels, "single_label_classification"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    missing, unexpected = model.bert.load_state_dict(encoder.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise ValueError(f"encoder weights do not fit a BERT classifier: missing={missing}, unexpected={unexpected}")
    return model


# --------------------------------------------------------------------------- English training (stages b, d and fine-tuning after a)


class KeepBest(Callback):
    """Remember the trainable parameters at the best dev score; :meth:`restore` puts them back.

    Frozen parameters never change, so copying only the trainable ones restores the best model
    exactly, without saving the 250k-row embedding matrix at every improvement.
    """

    def __init__(self) -> None:
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}
        self._state: dict[str, torch.Tensor] | None = None

    def on_evaluate(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        if metrics["score"] > self.best_score:
            self.best_score, self.best_step, self.best_metrics = metrics["score"], step, dict(metrics)
            model = trainer.unwrapped_model()
            self._state = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def restore(self, model: PreTrainedModel) -> PreTrainedModel:
        if self._state is None:
            raise ValueError("KeepBest saw no evaluation; evaluate at least once (the trainer does at the end of training)")
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in self._state.items():
                params[name].copy_(value)
        return model


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


# --------------------------------------------------------------------------- task-agnostic distillation (stage a)


class HiddenStateObjective:
    """The weighted sum of hidden-state distillation terms between two bare encoders:

        loss = sum_term weight[term] * term(teacher outputs, student outputs, attention mask)

    ``objective`` is a ``+``-joined list of registry objectives that need no labels and no logits:
    ``ckd`` (WR/LTR pair and triplet relations), ``tinybert`` (hidden, attention-score and
    embedding MSE), ``pkd``, ``minilm``, ``distilbert``. ``weights`` overrides the default weight
    (1) of any term, e.g. ``{"tinybert_attn": 0, "tinybert_emb": 0}`` for hidden-state MSE alone.
    """

    def __init__(self, teacher_config: Any, student_config: Any, objective: str = "ckd",
                 weights: Mapping[str, float] | None = None, layer_map: str | list = "uniform",
                 objective_options: Mapping[str, Any] | None = None) -> None:
        names = parse_objective(objective)
        unusable = [n for n in names if REGISTRY[n].needs - {"hidden_states", "qkv"}]
        if unusable:
            raise ValueError(
                f"objective {objective!r}: {unusable} need labels or logits, which task-agnostic distillation on "
                "unlabeled text has not; use hidden-state objectives such as ckd, tinybert, pkd, minilm, distilbert"
            )
        self.weights = {t: w for t, w in default_weights(names).items() if t != "ce"}
        unknown = sorted(set(weights or {}) - set(self.weights))
        if unknown:
            raise ValueError(f"weights has unknown term(s) {unknown} for objective {objective!r}; its terms are {sorted(self.weights)}")
        self.weights.update({t: float(w) for t, w in (weights or {}).items()})
        if not any(w > 0 for w in self.weights.values()):
            raise ValueError(f"every weight of objective {objective!r} is 0; give at least one term a positive weight")
        self.layer_map = resolve_layer_map(layer_map, teacher_config.num_hidden_layers, student_config.num_hidden_layers)
        ctx = BuildContext(teacher_config, student_config, self.layer_map, regression=False, options=dict(objective_options or {}))
        self.modules = torch.nn.ModuleDict({n: m for n, m in build_objectives(names, ctx).items() if n != "ce"})
        self.active = [n for n in self.modules if any(self.weights[t] > 0 for t in REGISTRY[n].terms)]
        self.needs_qkv = any("qkv" in REGISTRY[n].needs for n in self.active)

    def outputs(self, model: PreTrainedModel, batch: Mapping[str, torch.Tensor]) -> SimpleNamespace:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        if self.needs_qkv:
            with capture_qkv(model) as qkv:
                out = model(**inputs, output_hidden_states=True)
        else:
            qkv, out = None, model(**inputs, output_hidden_states=True)
        return SimpleNamespace(hidden_states=out.hidden_states, qkv=qkv, logits=None)

    def __call__(self, teacher: PreTrainedModel, student: PreTrainedModel,
                 batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            teacher_out = self.outputs(teacher, batch)
        student_out = self.outputs(student, batch)
        terms: dict[str, torch.Tensor] = {}
        for name in self.active:
            module = self.modules[name]
            if name == "ckd":
                module.weights.update({t: self.weights[t] for t in REGISTRY["ckd"].terms})
            terms.update(module(teacher_out, student_out, batch))
        terms = {t: v for t, v in terms.items() if self.weights[t] > 0}
        loss = sum(self.weights[t] * v for t, v in terms.items())
        return loss, terms


def _sentence_loader(sentences: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int,
                     batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    if not sentences:
        raise ValueError("sentences is empty; task-agnostic distillation needs unlabeled text")
    encoded = tokenizer(list(sentences), truncation=True, max_length=max_length)
    rows = [{k: encoded[k][i] for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded} for i in range(len(sentences))]
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=DynamicPaddingCollator(tokenizer))


@torch.no_grad()
def hidden_state_loss(teacher: PreTrainedModel, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      sentences: Sequence[str], objective: str = "ckd", weights: Mapping[str, float] | None = None,
                      layer_map: str | list = "uniform", objective_options: Mapping[str, Any] | None = None,
                      max_length: int = 128, batch_size: int = 32) -> float:
    """Mean (over batches, weighted by batch size) of the :class:`HiddenStateObjective` loss, both
    models in eval mode (no dropout): the number task-agnostic distillation drives down."""
    criterion = HiddenStateObjective(teacher.config, student.config, objective, weights, layer_map, objective_options)
    modes = teacher.training, student.training
    teacher.eval(), student.eval()
    total, count = 0.0, 0
    for batch in _sentence_loader(sentences, tokenizer, max_length, batch_size, shuffle=False, seed=0):
        loss, _ = criterion(teacher, student, batch)
        total, count = total + float(loss) * len(batch["input_ids"]), count + len(batch["input_ids"])
    teacher.train(modes[0]), student.train(modes[1])
    return total / count


def pretrain_distill(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    objective: str = "ckd",
    weights: Mapping[str, float] | None = None,
    layer_map: str | list = "uniform",
    objective_options: Mapping[str, Any] | None = None,
    epochs: float = 1.0,
    batch_size: int = 32,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    max_grad_norm: float = 1.0,
    max_length: int = 128,
    train_embeddings: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Task-agnostic distillation of bare encoders (``BertModel``) on unlabeled ``sentences``.

    Minimises the :class:`HiddenStateObjective` loss with AdamW (no decay on biases and LayerNorm)
    and a linear warm-up/decay schedule, teacher frozen in eval mode, seeded batches; ``student``
    is trained in place. Returns the per-step log: ``step, loss, <term>..., lr``.
    """
    if not (isinstance(epochs, (int, float)) and epochs > 0):
        raise ValueError(f"epochs={epochs!r} must be a positive number")
    torch.manual_seed(seed)
    criterion = HiddenStateObjective(teacher.config, student.config, objective, weights, layer_map, objective_options)
    set_embeddings_trainable(student, train_embeddings)
    teacher.eval().requires_grad_(False)
    device = next(student.parameters()).device
    teacher.to(device), criterion.modules.to(device)
    loader = _sentence_loader(sentences, tokenizer, max_length, batch_size, shuffle=True, seed=seed)
    total_steps = max(1, math.ceil(epochs * len(loader)))
    decay, no_decay = [], []
    for module in (student, criterion.modules):
        for name, param in module.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)
    student.train()
    log, step = [], 0
    with tqdm(total=total_steps, desc="task-agnostic distillation", disable=not progress, leave=False) as bar:
        while step < total_steps:
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                loss, terms = criterion(teacher, student, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"task-agnostic distillation loss is {loss.item()} at step {step + 1}; lower lr or check the weights")
                loss.backward()
                if max_grad_norm:
                    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                log.append({"step": step, "loss": loss.item(), **{t: v.item() for t, v in terms.items()}, "lr": scheduler.get_last_lr()[0]})
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                if step >= total_steps:
                    break
    return pd.DataFrame(log)


# --------------------------------------------------------------------------- profiles


def load_zero_shot_profile(profile: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a zero-shot profile: ``smoke`` | ``quick`` | ``paper`` (sections of
    ``configs/profiles/multilingual.yaml``), a path to a YAML file holding one such section, or a dict."""
    if isinstance(profile, Mapping):
        values = copy.deepcopy(dict(profile))
        values.setdefault("name", "custom")
    else:
        path = Path(profile)
        if path.suffix in (".yaml", ".yml"):
            if not path.exists():
                raise FileNotFoundError(f"zero-shot profile file {path} does not exist")
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
            values.setdefault("name", path.stem)
        else:
            sections = yaml.safe_load(PROFILE_FILE.read_text(encoding="utf-8"))
            if str(profile) not in sections:
                raise ValueError(f"unknown zero-shot profile {profile!r}; use one of {', '.join(sections)} or a path to a YAML file")
            values = dict(sections[str(profile)], name=str(profile))
    required = ("teacher", "student", "languages", "teacher_finetune", "finetune", "distill", "pretrain")
    missing = [key for key in required if key not in values]
    if missing:
        raise ValueError(f"zero-shot profile {values['name']!r} lacks {missing}; see {PROFILE_FILE} for the keys")
    return values


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


def load_teacher(name: str, shrink: str | None = None, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The pre-trained teacher encoder and its tokenizer; ``shrink`` (``"config:L4-H64-A2-I128"``,
    smoke profile) cuts a small model out of it (the leading block of every matrix), keeping its vocabulary."""
    from ckdlab.models import load_backbone

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
    encoder, tokenizer = load_teacher(prof["teacher"], prof.get("teacher_shrink"), seed=seed)
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
            record_run({
                "kind": "zero-shot", "profile": prof["name"], "task": zs.spec.name, "model": str(prof["teacher"]),
                "student": run["arch"], "method": label, "seed": seed, "split": report_split,
                "metrics": {**scores[label], "avg_non_source": float(table.loc[label, average]), "dev_accuracy": run["dev_accuracy"]},
                "score": float(table.loc[label, average]), "wall_time_s": run["wall_time_s"], "params": run["params"],
                "config": {k: v for k, v in prof.items() if k != "name"},
            }, results_dir)
    return ZeroShotResult(prof, zs.spec.name, languages, scores, table, retention, runs, pretrain_log, timings)


def best_setting(table: pd.DataFrame, source_language: str = "en", exclude: Sequence[str] = ("teacher",)) -> str:
    """The row with the highest non-source average (ties: the first in table order)."""
    average = table.drop(index=[r for r in exclude if r in table.index])[average_column(source_language)]
    if average.empty:
        raise ValueError("the table has no student rows")
    return str(average.idxmax())


def findings(table: pd.DataFrame, source_language: str = "en", tolerance: float = 0.0) -> pd.DataFrame:
    """Soltan et al.'s claims checked against ``table`` (rows labelled as in :data:`SETTING_LABELS`).

    Each claim compares non-source averages; it "holds" when the difference exceeds ``tolerance``
    in the claimed direction. Claims whose rows are missing are left out.
    """
    average = table[average_column(source_language)]
    label = SETTING_LABELS
    claims = [
        ("pre-training KD beats fine-tuning KD", label["a"], label["b"]),
        ("pre-training KD beats no KD", label["a"], label["d"]),
        ("fine-tuning KD hurts zero-shot (no KD beats it)", label["d"], label["b"]),
        ("both stages beat fine-tuning KD alone", label["c"], label["b"]),
    ]
    rows = []
    for claim, better, worse in claims:
        if better in average.index and worse in average.index:
            difference = float(average[better] - average[worse])
            rows.append({"claim": claim, "better": better, "worse": worse, "difference": difference, "holds": difference > tolerance})
    return pd.DataFrame(rows)
