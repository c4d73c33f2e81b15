"""What a forward pass gives the objectives: one typed record, built in one place.

Objectives (``ckdlab.objectives``) read a teacher's and a student's :class:`ModelOutputs`; the
engine builds them with :func:`forward_outputs` (or from its teacher cache), so the objectives
never see a model or a transformers output class.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ckdlab.data.collate import MODEL_INPUTS
from ckdlab.models.capture import capture_qkv

NEEDS = frozenset({"logits", "hidden_states", "qkv", "labels"})


@dataclass
class ModelOutputs:
    """Logits ``[B, C]``, hidden states (a tuple indexed by hidden-state index, 0 = embedding output;
    ``None`` at an index that was not computed or not cached), and per-layer ``(q, k, v)``
    projections ``[B, L, d]`` when an objective asked for them."""

    logits: Tensor | None = None
    hidden_states: tuple[Tensor | None, ...] | None = None
    qkv: list[tuple[Tensor, Tensor, Tensor]] | None = None


def model_inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The keyword arguments a model is called with: the batch's ``MODEL_INPUTS`` columns."""
    return {key: batch[key] for key in MODEL_INPUTS if key in batch}


def forward_outputs(model: nn.Module, inputs: Mapping[str, Tensor], needs: frozenset[str] | set[str]) -> ModelOutputs:
    """Run ``model`` on ``inputs`` and keep what ``needs`` asks for (``hidden_states``, ``qkv``;
    logits whenever the model has a head)."""
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"unknown model output(s) {sorted(unknown)}; known: {sorted(NEEDS)}")
    hidden = "hidden_states" in needs
    if "qkv" in needs:
        with capture_qkv(model) as qkv:
            out = model(**inputs, output_hidden_states=hidden)
    else:
        qkv = None
        out = model(**inputs, output_hidden_states=hidden)
    return ModelOutputs(logits=getattr(out, "logits", None), hidden_states=out.hidden_states if hidden else None, qkv=qkv)


@torch.no_grad()
def frozen_outputs(model: nn.Module, inputs: Mapping[str, Tensor], needs: frozenset[str] | set[str]) -> ModelOutputs:
    """:func:`forward_outputs` without autograd, for a frozen teacher."""
    return forward_outputs(model, inputs, needs)
