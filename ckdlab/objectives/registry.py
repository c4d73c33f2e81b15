"""One registry of distillation objectives (torchdistill-style: configs name them, code builds them).

An objective spec is a ``+``-joined list of names, e.g. ``"ckd+kd"`` or ``"tinybert+kd"``; each
name builds a module whose ``forward(teacher, student, batch, weights)`` returns *unweighted*
named terms (``teacher``/``student`` are :class:`~ckdlab.models.outputs.ModelOutputs`). The
engine passes the current weights in, an objective computes only the terms whose weight is
non-zero, and the engine multiplies each term by its weight, so every term is logged on its own.

=============  ===============================================  ============================================
name           terms                                            needs (per term)
=============  ===============================================  ============================================
``ce``         ce (cross-entropy, MSE for regression)           labels
``kd``         kd (T² · KL of softened logits; MSE if regr.)    teacher logits
``ckd``        wr_pair, wr_triplet, ltr_pair, ltr_triplet       hidden states (+ layer map)
``pkd``        pkd                                              hidden states, equal widths
``tinybert``   tinybert_hidden, tinybert_attn, tinybert_emb     hidden states; q/k for the attention term
``minilm``     minilm_attn, minilm_value                        last-layer q/k/v
``distilbert`` distilbert_cos                                   hidden states, equal widths
``dynabert``   dyna_logit, dyna_hidden                          logits; hidden states
``codir``      codir (InfoNCE of projected layer summaries)     hidden states (example-aligned only)
=============  ===============================================  ============================================

``ce`` is always available; its default weight is 1 when the spec names it or names nothing
else, and 0 otherwise (turn it on with ``weights={"ce": ...}``, as in Hinton's α-mix).
Every other term's default weight is 1.

Optional hooks and attributes an objective module may define (the engine uses them when present):
``bind_training_set(labels, regression)`` once before training; ``after_step(gather)`` after each
optimiser step (for state such as a memory bank); ``process_index``, set to the process's rank;
``teacher_layers``, teacher hidden states it reads beyond the layer map.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ckdlab.models.outputs import ModelOutputs
from ckdlab.objectives.codir import CODIR_OPTIONS, build_codir
from ckdlab.objectives.distilbert import DistilBERTCosine
from ckdlab.objectives.dynabert import DynaBERTLoss
from ckdlab.objectives.kd import CrossEntropy, LogitKD
from ckdlab.objectives.minilm import MiniLM
from ckdlab.objectives.pkd import PKD
from ckdlab.objectives.tinybert import TinyBERT


@dataclass
class BuildContext:
    """What a builder may look at: model configs, the layer map, and free-form options.

    ``fixed_rows``: batches carry ``row``, the index of each example in one fixed training set,
    so per-example state (CKD's teacher-Gram memo, CoDIR's memory bank) may be kept. ``seed``: the
    run's seed, for objectives with random state of their own.
    """

    teacher_config: Any
    student_config: Any
    layer_map: list[tuple[int, int]]
    regression: bool
    temperature: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)
    fixed_rows: bool = False
    seed: int = 0


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective: its terms, what each term needs from the models, its builder, whether
    teacher and student must tokenise identically, and the ``objective_options`` it reads.

    ``reference``: its terms are what balanced weights are measured against (the task and logit
    KD); ``balanced``: its terms get balanced weights (see :mod:`ckdlab.engine.balance`).
    """

    name: str
    needs: Mapping[str, frozenset[str]]
    build: Callable[[BuildContext], nn.Module]
    token_aligned: bool
    options: tuple[str, ...] = ()
    reference: bool = False
    balanced: bool = False

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple(self.needs)


CKD_TERMS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")


class CKDObjective(nn.Module):
    """Adapter: :class:`~ckdlab.objectives.ckd.CKDLoss` takes (teacher, student, attention mask)."""

    def __init__(self, ctx: BuildContext) -> None:
        super().__init__()
        from ckdlab.objectives.ckd import CKDLoss

        options = {k: v for k, v in ctx.options.items() if k in CKD_OPTIONS}
        # The teacher's Grams can be kept per example only when rows name one fixed training set.
        options["memoize_teacher"] = bool(options.get("memoize_teacher", True)) and ctx.fixed_rows
        self.loss = CKDLoss(layer_map=ctx.layer_map, **options)

    def reset_memo(self) -> None:
        self.loss.reset_memo()

    def forward(self, teacher: ModelOutputs, student: ModelOutputs, batch: dict[str, torch.Tensor],
                weights: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
        own = None if weights is None else {term: float(weights.get(term, 0.0)) for term in CKD_TERMS}
        return self.loss(teacher, student, batch["attention_mask"], rows=batch.get("row"), weights=own)


CKD_OPTIONS = ("pair_loss", "pair_metric", "triplet_loss", "window", "block_elements", "memoize_teacher", "pair_temperature",
               "centred", "threads")

_HIDDEN = frozenset({"hidden_states"})


def _heads(config: Any) -> int:
    return config.num_attention_heads


REGISTRY: dict[str, ObjectiveSpec] = {
    spec.name: spec
    for spec in (
        ObjectiveSpec("ce", {"ce": frozenset({"labels"})}, lambda c: CrossEntropy(regression=c.regression), False,
                      reference=True),
        ObjectiveSpec("kd", {"kd": frozenset({"logits"})}, lambda c: LogitKD(temperature=c.temperature, regression=c.regression), False,
                      reference=True),
        ObjectiveSpec("ckd", dict.fromkeys(CKD_TERMS, _HIDDEN), CKDObjective, True,
                      CKD_OPTIONS, balanced=True),
        ObjectiveSpec("pkd", {"pkd": _HIDDEN}, lambda c: PKD(c.layer_map), True),
        ObjectiveSpec(
            "tinybert",
            {"tinybert_hidden": _HIDDEN, "tinybert_attn": frozenset({"hidden_states", "qkv"}), "tinybert_emb": _HIDDEN},
            lambda c: TinyBERT(
                c.layer_map, c.teacher_config.hidden_size, c.student_config.hidden_size, _heads(c.teacher_config), _heads(c.student_config)
            ),
            True,
        ),
        ObjectiveSpec(
            "minilm",
            dict.fromkeys(("minilm_attn", "minilm_value"), frozenset({"qkv"})),
            lambda c: MiniLM(n_relation_heads=c.options.get("relation_heads", _heads(c.student_config))),
            True,
            ("relation_heads",),
        ),
        ObjectiveSpec("distilbert", {"distilbert_cos": _HIDDEN}, lambda c: DistilBERTCosine(c.layer_map), True),
        ObjectiveSpec("dynabert", {"dyna_logit": frozenset({"logits"}), "dyna_hidden": _HIDDEN},
                      lambda c: DynaBERTLoss(regression=c.regression), True),
        # Contrastive over examples: the same example on both sides, not the same tokens.
        ObjectiveSpec("codir", {"codir": _HIDDEN}, build_codir, False, CODIR_OPTIONS),
    )
}



def parse_objective(spec: str) -> list[str]:
    """``'ckd+kd'`` -> ``['ckd', 'kd']``, validated against the registry."""
    names = [part.strip().lower() for part in spec.split("+") if part.strip()]
    if not names:
        raise ValueError(f"--objective is empty; use e.g. {', '.join(('ckd+kd', 'kd', 'ce', 'pkd+kd', 'tinybert', 'minilm'))}")
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


def term_needs(weights: Mapping[str, float], names: Iterable[str]) -> frozenset[str]:
    """What the models must produce for the terms of ``names`` whose weight is non-zero."""
    needs: set[str] = set()
    for name in names:
        for term, term_needs_ in REGISTRY[name].needs.items():
            if weights.get(term, 0.0) != 0:
                needs |= term_needs_
    return frozenset(needs)


def check_options(names: Iterable[str], options: Mapping[str, Any]) -> None:
    """Every ``objective_options`` key must be read by one of the objectives ``names``."""
    known = {option for name in names for option in REGISTRY[name].options}
    unknown = sorted(set(options) - known)
    if unknown:
        readable = ", ".join(sorted(known)) or "none"
        raise ValueError(f"objective option(s) {unknown} are not read by objective(s) {'+'.join(names)}; they read: {readable}")


def build_objectives(names: list[str], ctx: BuildContext) -> nn.ModuleDict:
    """Build every named objective plus ``ce`` (always available for its weight)."""
    check_options(names, ctx.options)
    wanted = names if "ce" in names else names + ["ce"]
    return nn.ModuleDict({name: REGISTRY[name].build(ctx) for name in wanted})
