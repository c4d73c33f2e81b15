"""Task-agnostic distillation of bare encoders on unlabeled sentences (hidden-state objectives).

Used by zero-shot transfer's pre-training stage (notebook 04): the student encoder learns the
teacher encoder's hidden-state relations (CKD) or states (TinyBERT, PKD, ...) on raw text,
before any task.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from ckdlab.data import DynamicPaddingCollator
from ckdlab.data.collate import MODEL_INPUTS
from ckdlab.models.heads import set_embeddings_trainable
from ckdlab.models.outputs import ModelOutputs, forward_outputs, model_inputs
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.objectives.registry import REGISTRY, BuildContext, build_objectives, default_weights, parse_objective, term_needs


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
        unusable = [n for n in names if set().union(*REGISTRY[n].needs.values()) - {"hidden_states", "qkv"}]
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
        self.needs = {"hidden_states"} | (term_needs(self.weights, self.active) & {"qkv"})

    def outputs(self, model: PreTrainedModel, batch: Mapping[str, torch.Tensor]) -> ModelOutputs:
        return forward_outputs(model, model_inputs(batch), self.needs)

    def __call__(self, teacher: PreTrainedModel, student: PreTrainedModel,
                 batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with torch.no_grad():
            teacher_out = self.outputs(teacher, batch)
        student_out = self.outputs(student, batch)
        terms: dict[str, torch.Tensor] = {}
        for name in self.active:
            terms.update(self.modules[name](teacher_out, student_out, batch, weights=self.weights))
        terms = {t: v for t, v in terms.items() if self.weights[t] > 0}
        loss = sum(self.weights[t] * v for t, v in terms.items())
        return loss, terms


def _sentence_loader(sentences: Sequence[str], tokenizer: PreTrainedTokenizerBase, max_length: int,
                     batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    if not sentences:
        raise ValueError("sentences is empty; task-agnostic distillation needs unlabeled text")
    encoded = tokenizer(list(sentences), truncation=True, max_length=max_length)
    rows = [{k: encoded[k][i] for k in MODEL_INPUTS if k in encoded} for i in range(len(sentences))]
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
