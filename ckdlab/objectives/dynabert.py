"""DynaBERT's own distillation loss (Hou et al., NeurIPS 2020), terms ``dyna_logit`` and ``dyna_hidden``.

    dyna_logit  = −(1/B) Σ_b Σ_c softmax(z_t)[b,c] · log softmax(z_s)[b,c]     (soft cross-entropy, T = 1)
                  (1/B) Σ_b (z_s[b] − z_t[b])²                                   for a regression head
    dyna_hidden = Σ_j Σ_{valid tokens, features} (h_s^j − h_t^j)² / (#valid tokens · d)

The hidden term pairs student hidden state j with teacher hidden state j, embeddings included, so
the caller aligns the teacher's states with the student's: DynaBERT's sub-network of depth d
reads teacher hidden state ``kept[j]`` for its state j (:func:`ckdlab.models.dynabert.depth_layer_map`).
Official weights: 1 and 0.1 in the width stage, 1 and 1 in the depth stage.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ckdlab.models.outputs import ModelOutputs


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``−(1/B) Σ_b Σ_c softmax(z_t)[b,c] · log softmax(z_s)[b,c]`` (DynaBERT's logit loss, T = 1)."""
    return -(F.softmax(teacher_logits.detach().float(), dim=-1) * F.log_softmax(student_logits.float(), dim=-1)).sum(-1).mean()


def hidden_mse(student_states: Sequence[Tensor], teacher_states: Sequence[Tensor], attention_mask: Tensor) -> Tensor:
    """``Σ_j Σ_{valid tokens, features} (h_s^j − h_t^j)² / (#valid tokens · d)``: one MSE per matched
    pair of states, padding excluded, summed over pairs."""
    if len(student_states) != len(teacher_states):
        raise ValueError(f"hidden_mse pairs states one to one; got {len(student_states)} student and {len(teacher_states)} teacher")
    valid = attention_mask.to(torch.bool).unsqueeze(-1)
    count = valid.sum() * student_states[0].shape[-1]
    total = student_states[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_states, teacher_states):
        diff = torch.where(valid, s.float() - t.detach().float(), 0.0)
        total = total + diff.pow(2).sum() / count.clamp(min=1)
    return total


class DynaBERTLoss(nn.Module):
    """The two DynaBERT terms on aligned outputs (see the module docstring)."""

    def __init__(self, regression: bool = False) -> None:
        super().__init__()
        self.regression = regression

    def forward(self, teacher: ModelOutputs, student: ModelOutputs, batch: dict[str, Tensor],
                weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        wanted = {t for t in ("dyna_logit", "dyna_hidden") if weights is None or weights.get(t, 0.0) != 0}
        terms: dict[str, Tensor] = {}
        if "dyna_logit" in wanted:
            if self.regression:
                terms["dyna_logit"] = F.mse_loss(student.logits.squeeze(-1).float(), teacher.logits.squeeze(-1).detach().float())
            else:
                terms["dyna_logit"] = soft_cross_entropy(student.logits, teacher.logits)
        if "dyna_hidden" in wanted:
            terms["dyna_hidden"] = hidden_mse(student.hidden_states, teacher.hidden_states, batch["attention_mask"])
        return terms
