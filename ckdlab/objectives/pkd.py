"""Patient Knowledge Distillation (PKD), Sun, Cheng, Gan & Liu (2019), "Patient Knowledge Distillation for
BERT Model Compression", EMNLP.

The student is taught the teacher's intermediate [CLS] representations, after L2 normalisation:

    pkd = (1/B) Σ_b Σ_{(t, s) ∈ layer_map} ‖ h_s[b] / ‖h_s[b]‖₂ − h_t[b] / ‖h_t[b]‖₂ ‖₂²

where ``h = hidden_states[index][:, 0]`` (the [CLS] position). This is the paper's L_PT: a sum over
mapped layers of squared distances, averaged over the batch (not a mean over the hidden dimension).
PKD-Skip maps every other teacher layer, PKD-Last the last ones; the final layer is usually left to the
logit KD term. Pairs that map embeddings to embeddings (``(0, 0)``) are skipped: the paper distils
transformer layers only.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


def validate_layer_map(layer_map: list[tuple[int, int]], owner: str) -> list[tuple[int, int]]:
    """Check a (teacher hidden-state index, student hidden-state index) map; ``owner`` names the caller in errors.

    Shared by the hidden-state baselines (PKD, TinyBERT, DistilBERT cosine). Ranges are checked later, in
    ``forward``, against the real number of hidden states.
    """
    pairs = [tuple(p) for p in layer_map]
    if not pairs:
        raise ValueError(f"{owner} needs a non-empty layer_map of (teacher_index, student_index) pairs")
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in pair):
            raise ValueError(
                f"{owner} layer_map entries must be (teacher_index, student_index) pairs of ints >= 0, "
                f"got {pair!r}"
            )
        if (pair[0] == 0) != (pair[1] == 0):
            raise ValueError(
                f"{owner} layer_map pair {pair} maps an embedding output (index 0) to a transformer layer; "
                "map 0 only to 0"
            )
    return pairs  # type: ignore[return-value]


def mapped_equal_width_states(
    pairs: list[tuple[int, int]], hs_t: Sequence[Tensor], hs_s: Sequence[Tensor], owner: str
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (detached teacher state, student state) for each mapped pair, checking that the pair is in
    range and that both widths agree (PKD and DistilBERT compare states without a projection)."""
    for t, s in pairs:
        if t >= len(hs_t) or s >= len(hs_s):
            raise ValueError(
                f"{owner} layer_map pair ({t}, {s}) is out of range: teacher has {len(hs_t)} hidden states and "
                f"student {len(hs_s)} (index 0 = embeddings); fix the layer_map"
            )
        h_t, h_s = hs_t[t].detach(), hs_s[s]
        if h_t.shape[-1] != h_s.shape[-1]:
            raise ValueError(
                f"{owner} needs equal hidden widths, got teacher {h_t.shape[-1]} and student {h_s.shape[-1]}; "
                "use TinyBERT (learned projection) for students of a different width"
            )
        yield h_t, h_s


class PKD(nn.Module):
    """Patient KD on normalised [CLS] states (term ``pkd``), Sun et al. (2019).

    ``pkd = (1/B) Σ_b Σ_{(t,s)} ‖ h_s/‖h_s‖ − h_t/‖h_t‖ ‖²`` with ``h = hidden_states[i][b, 0]``.

    Args:
        layer_map: (teacher hidden-state index, student hidden-state index) pairs; index 0 = embeddings.
            ``(0, 0)`` pairs are ignored. Teacher and student widths must be equal (the normalised states
            are compared directly).
    """

    def __init__(self, layer_map: list[tuple[int, int]]) -> None:
        super().__init__()
        pairs = validate_layer_map(layer_map, "PKD")
        self.pairs = [p for p in pairs if p != (0, 0)]
        if not self.pairs:
            raise ValueError("PKD layer_map has only the (0, 0) embedding pair; map at least one transformer layer")

    def forward(self, teacher: Any, student: Any, batch: dict[str, Tensor],
                weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        hs_t, hs_s = teacher.hidden_states, student.hidden_states
        total = None
        for h_t, h_s in mapped_equal_width_states(self.pairs, hs_t, hs_s, "PKD"):
            cls_t, cls_s = h_t[:, 0], h_s[:, 0]
            diff = F.normalize(cls_s, dim=-1) - F.normalize(cls_t.to(cls_s.dtype), dim=-1)
            layer_loss = diff.pow(2).sum(-1).mean()
            total = layer_loss if total is None else total + layer_loss
        return {"pkd": total}
