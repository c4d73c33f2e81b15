"""Task-agnostic distillation of bare encoders on unlabeled sentences, on the one training loop.

The student encoder learns the teacher encoder's hidden-state relations (CKD) or states
(TinyBERT, PKD, MiniLM, DistilBERT) on raw text, before any task:

    loss = sum_term weight[term] * term(teacher outputs, student outputs, attention mask)

It is a :class:`~ckdlab.engine.distill.Distiller` over the sentences (task ``text``: no labels, no
dev set, no checkpoint selection), so seeding, AdamW without decay on biases and LayerNorm, the
warm-up/decay schedule, clipping, the NaN guard and the per-term log are the ones every run has.
Used by zero-shot transfer's pre-training stage (notebook 04).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import DynamicPaddingCollator, tokenize_dataset
from ckdlab.data.tasks import TEXT_TASK
from ckdlab.engine.callbacks import Callback
from ckdlab.engine.config import TrainConfig
from ckdlab.engine.distill import Distiller
from ckdlab.models.heads import set_embeddings_trainable
from ckdlab.objectives.registry import REGISTRY, default_weights, parse_objective


class StepLog(Callback):
    """Every step's logged values (terms, total loss, learning rate) in memory."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_step_end(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        self.rows.append({"step": step, **logs})


def hidden_state_weights(objective: str, weights: Mapping[str, float] | None) -> dict[str, float]:
    """The term weights of a hidden-state objective (``ce`` at 0), validated: objectives that need
    labels or logits, unknown terms and all-zero weights are clear errors."""
    names = parse_objective(objective)
    unusable = [n for n in names if set().union(*REGISTRY[n].needs.values()) - {"hidden_states", "qkv"}]
    if unusable:
        raise ValueError(
            f"objective {objective!r}: {unusable} need labels or logits, which task-agnostic distillation on "
            "unlabeled text has not; use hidden-state objectives such as ckd, tinybert, pkd, minilm, distilbert"
        )
    resolved = {t: w for t, w in default_weights(names).items() if t != "ce"}
    unknown = sorted(set(weights or {}) - set(resolved))
    if unknown:
        raise ValueError(f"weights has unknown term(s) {unknown} for objective {objective!r}; its terms are {sorted(resolved)}")
    resolved.update({t: float(w) for t, w in (weights or {}).items()})
    if not any(w > 0 for w in resolved.values()):
        raise ValueError(f"every weight of objective {objective!r} is 0; give at least one term a positive weight")
    return {**resolved, "ce": 0.0}


def sentence_distiller(teacher: PreTrainedModel, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                       sentences: Sequence[str], objective: str = "ckd", weights: Mapping[str, float] | None = None,
                       layer_map: str | list = "uniform", objective_options: Mapping[str, Any] | None = None,
                       config: TrainConfig | None = None, callbacks: Sequence[Callback] = ()) -> Distiller:
    """A :class:`Distiller` of ``student`` from ``teacher`` (bare encoders) on ``sentences``."""
    if not sentences:
        raise ValueError("sentences is empty; task-agnostic distillation needs unlabeled text")
    resolved = hidden_state_weights(objective, weights)
    return Distiller(
        teacher, student, tokenizer, TEXT_TASK, objective=objective, weights=resolved, layer_map=layer_map,
        objective_options=dict(objective_options or {}), config=config or TrainConfig(),
        train_dataset=Dataset.from_dict({"text": list(sentences)}), dev_datasets={}, callbacks=callbacks,
        teacher_tokenizer=tokenizer, cache_teacher=False,
    )


@torch.no_grad()
def hidden_state_loss(teacher: PreTrainedModel, student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                      sentences: Sequence[str], objective: str = "ckd", weights: Mapping[str, float] | None = None,
                      layer_map: str | list = "uniform", objective_options: Mapping[str, Any] | None = None,
                      max_length: int = 128, batch_size: int = 32) -> float:
    """Mean (over batches, weighted by batch size) of the weighted objective, both models in eval
    mode (no dropout): the number task-agnostic distillation drives down."""
    distiller = sentence_distiller(teacher, student, tokenizer, sentences, objective, weights, layer_map, objective_options)
    encoded = tokenize_dataset(Dataset.from_dict({"text": list(sentences)}), tokenizer, TEXT_TASK, max_length=max_length)
    loader = DataLoader(encoded, batch_size=batch_size, shuffle=False, collate_fn=DynamicPaddingCollator(tokenizer))
    was_training = student.training
    student.eval()
    total, count = 0.0, 0
    for batch in loader:
        terms = distiller.compute_terms(batch)
        loss = sum(distiller.weights[t] * v for t, v in terms.items())
        total, count = total + float(loss) * len(batch["input_ids"]), count + len(batch["input_ids"])
    student.train(was_training)
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
    """Task-agnostic distillation of bare encoders (``BertModel``) on unlabeled ``sentences``;
    ``student`` is trained in place. Returns the per-step log: ``step, <term>..., loss, lr``."""
    if not (isinstance(epochs, (int, float)) and epochs > 0):
        raise ValueError(f"epochs={epochs!r} must be a positive number")
    set_embeddings_trainable(student, train_embeddings)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                         max_grad_norm=max_grad_norm, max_length=max_length, seed=seed, progress=progress, log_every=1)
    log = StepLog()
    sentence_distiller(teacher, student, tokenizer, sentences, objective, weights, layer_map, objective_options, config, [log]).train()
    return pd.DataFrame(log.rows).drop(columns=["ce"], errors="ignore")
