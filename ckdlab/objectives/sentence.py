"""Sentence-representation approximation: stage 1 of task-agnostic BiLSTM distillation.

After Wu et al. (AACL-IJCNLP 2020): on unlabeled sentences the student's sentence vector ``u``
(width ``d_s``), mapped to the teacher's width by a learned affine map, should equal the teacher's
sentence vector ``t`` (width ``d_t``). For a batch of B sentences:

    mse:     L = (1 / (B · d_t)) Σ_b ‖W u_b + c − t_b‖²
    cosine:  L = (1 / B) Σ_b (1 − cos(W u_b + c, t_b))

``W`` [d_t, d_s] and ``c`` [d_t] belong to the loss (they are trained with the student and thrown
away after stage 1). The teacher side is one of the functions below; the choice of teacher vector
is ours (the paper could not be consulted):

- ``"mean"`` (default): masked mean of the last layer over every valid token, ``[CLS]`` and
  ``[SEP]`` included — what the offline teacher ``minilm-l6`` (all-MiniLM-L6-v2) was trained to
  produce as its sentence embedding (before its final L2 normalisation);
- ``"cls"``: the last layer's ``[CLS]`` state;
- ``"mean-layers"``: the average over the chosen hidden-state indices of each layer's masked mean
  (default: the last four layers, counted from the output; index 0 is the embedding output).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TEACHER_POOLINGS = ("mean", "cls", "mean-layers")
DEFAULT_MEAN_LAYERS = (-4, -3, -2, -1)
SENTENCE_METRICS = ("mse", "cosine")


def masked_mean(states: Tensor, attention_mask: Tensor) -> Tensor:
    """``Σ_t m_t h_t / Σ_t m_t`` per row: [B, T, d] and [B, T] -> [B, d] (a row without tokens gives 0)."""
    weights = attention_mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def check_pooling(pooling: str, layers: Sequence[int] | None = None) -> tuple[str, tuple[int, ...] | None]:
    """Validate a teacher pooling choice; returns ``(pooling, layers)`` with the layers resolved
    for ``"mean-layers"`` (default :data:`DEFAULT_MEAN_LAYERS`) and ``None`` otherwise."""
    if pooling not in TEACHER_POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not known; use one of {TEACHER_POOLINGS}")
    if pooling != "mean-layers":
        if layers is not None:
            raise ValueError(f"layers={layers!r} only applies to pooling='mean-layers', not {pooling!r}")
        return pooling, None
    layers = DEFAULT_MEAN_LAYERS if layers is None else tuple(layers)
    if not layers or any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ValueError(f"layers={layers!r} must be a non-empty sequence of hidden-state indices (ints)")
    return pooling, tuple(int(i) for i in layers)


def teacher_sentence_vector(
    hidden_states: Sequence[Tensor],
    attention_mask: Tensor,
    pooling: str = "mean",
    layers: Sequence[int] | None = None,
) -> Tensor:
    """The teacher's sentence vector [B, d] from its hidden states (embeddings first, last layer last).

    ``mean``: ``masked_mean(H_last)``; ``cls``: ``H_last[:, 0]``; ``mean-layers``:
    ``(1/|S|) Σ_{l∈S} masked_mean(H_l)`` for the hidden-state indices S = ``layers``.
    """
    pooling, layers = check_pooling(pooling, layers)
    if pooling == "cls":
        return hidden_states[-1][:, 0]
    if pooling == "mean":
        return masked_mean(hidden_states[-1], attention_mask)
    count = len(hidden_states)
    bad = [i for i in layers if not -count <= i < count]
    if bad:
        raise ValueError(f"layers {bad} out of range for a teacher with {count} hidden states (indices {-count}..{count - 1})")
    return torch.stack([masked_mean(hidden_states[i], attention_mask) for i in layers]).mean(dim=0)


class SentenceApproximationLoss(nn.Module):
    """Stage-1 loss (see the module docstring): ``W u + c`` against the teacher's ``t``.

    Args:
        student_size: width ``d_s`` of the student's sentence vector (4H for the BiLSTM).
        teacher_size: width ``d_t`` of the teacher's sentence vector.
        metric: ``"mse"`` (default) or ``"cosine"``.
    """

    def __init__(self, student_size: int, teacher_size: int, metric: str = "mse") -> None:
        super().__init__()
        if metric not in SENTENCE_METRICS:
            raise ValueError(f"metric={metric!r} is not known; use one of {SENTENCE_METRICS}")
        for name, value in (("student_size", student_size), ("teacher_size", teacher_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.metric = metric
        self.projection = nn.Linear(student_size, teacher_size)

    def forward(self, student_vectors: Tensor, teacher_vectors: Tensor) -> Tensor:
        if student_vectors.dim() != 2 or student_vectors.shape[1] != self.projection.in_features:
            raise ValueError(
                f"student_vectors must be [B, {self.projection.in_features}], got {tuple(student_vectors.shape)}"
            )
        if teacher_vectors.shape != (student_vectors.shape[0], self.projection.out_features):
            raise ValueError(
                f"teacher_vectors must be [{student_vectors.shape[0]}, {self.projection.out_features}], "
                f"got {tuple(teacher_vectors.shape)}"
            )
        mapped = self.projection(student_vectors)
        target = teacher_vectors.detach().to(mapped.dtype)
        if self.metric == "mse":
            return F.mse_loss(mapped, target)
        return (1.0 - F.cosine_similarity(mapped, target, dim=-1)).mean()
