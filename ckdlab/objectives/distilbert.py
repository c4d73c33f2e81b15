"""DistilBERT's cosine hidden-state loss, Sanh, Debut, Chaumond & Wolf (2019), "DistilBERT, a distilled
version of BERT: smaller, faster, cheaper and lighter".

DistilBERT aligns the directions of student and teacher hidden states with a cosine embedding loss
(target +1) over the real tokens of the last layer. Generalised to a layer map:

    distilbert_cos = Σ_{(t,s) ∈ layer_map} mean_{valid tokens (b, i)} ( 1 − cos(h_s[b,i], h_t[b,i]) )

The original uses the single pair (last teacher layer, last student layer). ``(0, 0)`` embedding pairs are
skipped, as in PKD. Widths must be equal: cosine similarity needs vectors of one space.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ckdlab.objectives.pkd import mapped_equal_width_states, validate_layer_map


class DistilBERTCosine(nn.Module):
    """Cosine alignment of hidden states (term ``distilbert_cos``).

    ``distilbert_cos = Σ_{(t,s)} (1/N_valid) Σ_{valid (b,i)} (1 − h_s·h_t / (‖h_s‖ ‖h_t‖))``

    Args:
        layer_map: (teacher, student) hidden-state index pairs; ``(0, 0)`` is ignored.
    """

    def __init__(self, layer_map: list[tuple[int, int]]) -> None:
        super().__init__()
        pairs = validate_layer_map(layer_map, "DistilBERTCosine")
        self.pairs = [p for p in pairs if p != (0, 0)]
        if not self.pairs:
            raise ValueError(
                "DistilBERTCosine layer_map has only the (0, 0) embedding pair; map at least one transformer "
                "layer, e.g. [(12, 6)] (last layer of a 12-layer teacher and a 6-layer student) as in the original"
            )

    def forward(self, teacher: Any, student: Any, batch: dict[str, Tensor],
                weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        hs_t, hs_s = teacher.hidden_states, student.hidden_states
        if "attention_mask" not in batch:
            raise ValueError("DistilBERTCosine needs batch['attention_mask'] to leave padding out of the loss")
        mask = batch["attention_mask"]
        if tuple(mask.shape) != tuple(hs_s[0].shape[:2]):
            raise ValueError(
                f"DistilBERTCosine: attention_mask has shape {tuple(mask.shape)} but hidden states are "
                f"{tuple(hs_s[0].shape[:2])} [B, L]"
            )
        mask = mask.bool()
        n_valid = mask.sum()
        if n_valid == 0:
            raise ValueError("DistilBERTCosine: attention_mask has no valid token in the whole batch")
        total = None
        for h_t, h_s in mapped_equal_width_states(self.pairs, hs_t, hs_s, "DistilBERTCosine"):
            cos = F.cosine_similarity(h_s, h_t.to(h_s.dtype), dim=-1)
            layer_loss = torch.where(mask, 1.0 - cos, 0.0).sum() / n_valid
            total = layer_loss if total is None else total + layer_loss
        return {"distilbert_cos": total}
