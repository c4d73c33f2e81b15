"""One registry of distillation objectives (torchdistill-style: configs name them, code builds them).

An objective spec is a ``+``-joined list of names, e.g. ``"ckd+kd"`` or ``"tinybert+kd"``; each
name builds a module whose ``forward(teacher, student, batch)`` returns *unweighted* named terms.
The engine multiplies each term by its weight (``weights``), so every term is logged on its own.

=============  ===============================================  ============================================
name           terms                                            needs
=============  ===============================================  ============================================
``ce``         ce (cross-entropy, MSE for regression)           labels
``kd``         kd (T² · KL of softened logits; MSE if regr.)    teacher logits
``ckd``        wr_pair, wr_triplet, ltr_pair, ltr_triplet       hidden states (+ layer map)
``pkd``        pkd                                              hidden states, equal widths
``tinybert``   tinybert_hidden, tinybert_attn, tinybert_emb     hidden states + q/k (equal head counts)
``minilm``     minilm_attn, minilm_value                        last-layer q/k/v
``distilbert`` distilbert_cos                                   hidden states, equal widths
=============  ===============================================  ============================================

``ce`` is always available; its default weight is 1 when the spec names it or names nothing
else, and 0 otherwise (turn it on with ``weights={"ce": ...}``, as in Hinton's α-mix).
Every other term's default weight is 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ckdlab.objectives.distilbert import DistilBERTCosine
from ckdlab.objectives.kd import CrossEntropy, LogitKD
from ckdlab.objectives.minilm import MiniLM
from ckdlab.objectives.pkd import PKD
from ckdlab.objectives.tinybert import TinyBERT


@dataclass
class BuildContext:
    """What a builder may look at: model configs, the layer map, and free-form options."""

    teacher_config: Any
    student_config: Any
    layer_map: list[tuple[int, int]]
    regression: bool
    temperature: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectiveSpec:
    name: str
    terms: tuple[str, ...]
    needs: frozenset[str]
    build: Callable[[BuildContext], nn.Module]
    token_aligned: bool


class CKDObjective(nn.Module):
    """Adapter: CKDLoss takes (teacher outputs, student outputs, attention mask)."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        from ckdlab.objectives.ckd import CKDLoss

        options = {k: v for k, v in ctx.options.items() if k in CKD_OPTIONS}
        self.loss = CKDLoss(layer_map=ctx.layer_map, **options)

    @property
    def weights(self) -> dict[str, float]:
        return self.loss.weights

    def forward(self, teacher: Any, student: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.loss(teacher, student, batch["attention_mask"], rows=batch.get("row"))


CKD_OPTIONS = ("pair_loss", "pair_metric", "triplet_loss", "window", "block_elements", "memoize_teacher")


def _heads(config: Any) -> int:
    return config.num_attention_heads


REGISTRY: dict[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec("ce", ("ce",), frozenset({"labels"}), lambda c: CrossEntropy(regression=c.regression), False),
        ObjectiveSpec(
            "kd", ("kd",), frozenset({"logits"}), lambda c: LogitKD(temperature=c.temperature, regression=c.regression), False
        ),
        ObjectiveSpec("ckd", ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet"), frozenset({"hidden_states"}), CKDObjective, True),
        ObjectiveSpec("pkd", ("pkd",), frozenset({"hidden_states"}), lambda c: PKD(c.layer_map), True),
        ObjectiveSpec(
            "tinybert",
            ("tinybert_hidden", "tinybert_attn", "tinybert_emb"),
            frozenset({"hidden_states", "qkv"}),
            lambda c: TinyBERT(
                c.layer_map, c.teacher_config.hidden_size, c.student_config.hidden_size, _heads(c.teacher_config), _heads(c.student_config)
            ),
            True,
        ),
        ObjectiveSpec(
            "minilm",
            ("minilm_attn", "minilm_value"),
            frozenset({"qkv"}),
            lambda c: MiniLM(n_relation_heads=c.options.get("relation_heads", _heads(c.student_config))),
            True,
        ),
        ObjectiveSpec("distilbert", ("distilbert_cos",), frozenset({"hidden_states"}), lambda c: DistilBERTCosine(c.layer_map), True),
    )
}

CKD_TERMS = REGISTRY["ckd"].terms


def parse_objective(spec: str) -> list[str]:
    """``'ckd+kd'`` -> ``['ckd', 'kd']``, validated against the registry."""
    names = [part.strip().lower() for part in spec.split("+") if part.strip()]
    if not names:
        raise ValueError("--objective is empty; use e.g. ckd+kd, kd, ce, pkd+kd, tinybert, minilm, distilbert")
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown} in '{spec}'; known: {', '.join(REGISTRY)}")
    return list(dict.fromkeys(names))


def default_weights(names: list[str]) -> dict[str, float]:
    weights = {"ce": 1.0 if ("ce" in names or names == []) else 0.0}
    for name in names:
        for term in REGISTRY[name].terms:
            weights.setdefault(term, 1.0)
    return weights


def build_objectives(names: list[str], ctx: BuildContext) -> nn.ModuleDict:
    """Build every named objective plus ``ce`` (always available for its weight)."""
    wanted = names if "ce" in names else names + ["ce"]
    return nn.ModuleDict({name: REGISTRY[name].build(ctx) for name in wanted})
