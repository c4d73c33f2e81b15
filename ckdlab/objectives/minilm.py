"""MiniLM self-attention relation distillation.

MiniLM (Wang et al., NeurIPS 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression
of Pre-Trained Transformers") transfers the last layer's attention distributions softmax(Q Kᵀ/√d) and
value relations softmax(V Vᵀ/√d) with a KL divergence. MiniLMv2 (Wang et al., Findings of ACL 2021,
"MiniLMv2: Multi-Head Self-Attention Relation Distillation for Compressing Pretrained Transformers")
makes this independent of the head counts: Q, K, V are concatenated back to [B, L, d] and re-split into
``n_relation_heads`` relation heads of width d_r = d / n_relation_heads (each model uses its own d_r):

    R_XY = softmax( X_r Y_rᵀ / √d_r )                       over valid keys, per relation head r
    loss_XY = mean_{b, r, valid query i} KL( R_XY^t[b,r,i] ‖ R_XY^s[b,r,i] )

Relations offered: ``qk`` (term ``minilm_attn``; MiniLMv1's attention distribution, exactly it when
``n_relation_heads`` equals the model's head count), ``vv`` (``minilm_value``), ``qq`` (``minilm_qq``)
and ``kk`` (``minilm_kk``). MiniLMv2 itself uses ``("qq", "kk", "vv")``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

RELATION_TERMS = {"qk": "minilm_attn", "vv": "minilm_value", "qq": "minilm_qq", "kk": "minilm_kk"}
_QKV_POS = {"q": 0, "k": 1, "v": 2}


def relation_log_probs(x: Tensor, y: Tensor, n_relation_heads: int, key_mask: Tensor) -> Tensor:
    """log softmax(X_r Y_rᵀ / √d_r) over valid keys, [B, n_r, L, L].

    ``x``, ``y``: [B, L, d] with d divisible by ``n_relation_heads``; ``key_mask``: [B, L] bool.
    Invalid keys get the most negative finite value, never −inf, so a row can never become NaN.
    """
    b, l, d = x.shape
    d_r = d // n_relation_heads
    xr = x.view(b, l, n_relation_heads, d_r).transpose(1, 2)
    yr = y.view(b, l, n_relation_heads, d_r).transpose(1, 2)
    scores = xr @ yr.transpose(-1, -2) / math.sqrt(d_r)
    scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return torch.log_softmax(scores, dim=-1)


class MiniLM(nn.Module):
    """MiniLM / MiniLMv2 relation KL (terms ``minilm_attn``, ``minilm_value``, and optionally
    ``minilm_qq``, ``minilm_kk``).

    For each relation XY: ``mean_{b, r, valid i} Σ_{valid j} R_t[b,r,i,j] (log R_t[b,r,i,j] − log R_s[b,r,i,j])``
    with ``R = softmax(X_r Y_rᵀ/√d_r)``.

    Args:
        n_relation_heads: relation heads; both widths must be divisible by it. Teacher and student head
            counts do not matter.
        teacher_layer, student_layer: indices into the ``.qkv`` lists (Python indexing, default -1 = last
            captured layer). When ``capture_qkv`` was given a subset of layers, index into that subset.
        relations: any of ``"qk"``, ``"vv"``, ``"qq"``, ``"kk"``.
    """

    def __init__(
        self,
        n_relation_heads: int,
        teacher_layer: int = -1,
        student_layer: int = -1,
        relations: tuple[str, ...] = ("qk", "vv"),
    ) -> None:
        super().__init__()
        if not isinstance(n_relation_heads, int) or isinstance(n_relation_heads, bool) or n_relation_heads <= 0:
            raise ValueError(f"MiniLM n_relation_heads must be a positive int, got {n_relation_heads!r}")
        if isinstance(relations, str):
            raise ValueError(
                f"MiniLM relations must be a tuple of names such as ('qk', 'vv'), got the string {relations!r}"
            )
        relations = tuple(relations)
        unknown = [r for r in relations if r not in RELATION_TERMS]
        if not relations or unknown or len(set(relations)) != len(relations):
            raise ValueError(
                f"MiniLM relations must be a non-empty tuple of distinct names from {sorted(RELATION_TERMS)}, "
                f"got {relations!r}"
            )
        for name, idx in (("teacher_layer", teacher_layer), ("student_layer", student_layer)):
            if not isinstance(idx, int) or isinstance(idx, bool):
                raise ValueError(f"MiniLM {name} must be an int index into .qkv, got {idx!r}")
        self.n_relation_heads = n_relation_heads
        self.teacher_layer = teacher_layer
        self.student_layer = student_layer
        self.relations = relations

    def _layer(self, out: Any, index: int, who: str) -> tuple[Tensor, Tensor, Tensor]:
        qkv = getattr(out, "qkv", None)
        if qkv is None:
            raise ValueError(
                f"MiniLM needs {who}.qkv (per-layer (q, k, v)); run the {who} inside "
                "ckdlab.models.capture.capture_qkv(model)"
            )
        if not -len(qkv) <= index < len(qkv):
            raise ValueError(
                f"MiniLM {who}_layer={index} is out of range for {len(qkv)} captured layers; "
                "pick an index into the captured list (-1 = last)"
            )
        layer = qkv[index]
        d = layer[0].shape[-1]
        if d % self.n_relation_heads:
            raise ValueError(
                f"MiniLM: {who} width {d} is not divisible by n_relation_heads={self.n_relation_heads}; "
                "choose a common divisor of both widths"
            )
        return layer

    def forward(self, teacher: Any, student: Any, batch: dict[str, Tensor],
                weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        qkv_t = self._layer(teacher, self.teacher_layer, "teacher")
        qkv_s = self._layer(student, self.student_layer, "student")
        if "attention_mask" not in batch:
            raise ValueError("MiniLM needs batch['attention_mask'] to leave padding out of the loss")
        mask = batch["attention_mask"]
        if tuple(mask.shape) != tuple(qkv_s[0].shape[:2]) or qkv_t[0].shape[:2] != qkv_s[0].shape[:2]:
            raise ValueError(
                f"MiniLM: attention_mask {tuple(mask.shape)}, teacher q {tuple(qkv_t[0].shape)} and student q "
                f"{tuple(qkv_s[0].shape)} must share [B, L]"
            )
        mask = mask.bool()
        n_rows = mask.sum() * self.n_relation_heads
        if n_rows == 0:
            raise ValueError("MiniLM: attention_mask has no valid token in the whole batch")
        dtype = qkv_s[0].dtype
        # A KL entry counts when its query is a real token (rows) and its key is a real token (columns).
        entry_mask = mask[:, None, :, None] & mask[:, None, None, :]

        terms: dict[str, Tensor] = {}
        for rel in self.relations:
            if weights is not None and weights.get(RELATION_TERMS[rel], 0.0) == 0:
                continue
            i, j = _QKV_POS[rel[0]], _QKV_POS[rel[1]]
            log_t = relation_log_probs(
                qkv_t[i].detach().to(dtype), qkv_t[j].detach().to(dtype), self.n_relation_heads, mask
            )
            log_s = relation_log_probs(qkv_s[i], qkv_s[j], self.n_relation_heads, mask)
            kl = torch.where(entry_mask, log_t.exp() * (log_t - log_s), 0.0)
            terms[RELATION_TERMS[rel]] = kl.sum() / n_rows
        return terms
