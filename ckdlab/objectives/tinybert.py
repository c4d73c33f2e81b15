"""TinyBERT transformer-layer and embedding distillation, Jiao et al. (2020), "TinyBERT: Distilling BERT for
Natural Language Understanding", Findings of EMNLP.

For each mapped pair (t, s) of transformer layers (hidden-state indices ≥ 1):

    tinybert_hidden = Σ_{(t,s)} MSE( H_s W_h , H_t )                      (paper eq. 8)
    tinybert_attn   = Σ_{(t,s)} MSE( A_s , A_t ),  A = Q Kᵀ / √d_head       (paper eq. 7, per head)
    tinybert_emb    = MSE( E_s W_e , E_t )                                 (paper eq. 9; E = hidden_states[0])

MSE is a mean over valid (non-padding) tokens and the teacher width; for attention over heads and
(valid query, valid key) pairs. Layers are summed, as in the official code. W_h, W_e are learnable
``nn.Linear(d_s, d_t)`` maps when the widths differ and the identity otherwise. The attention scores are
the *unnormalised* ones (before softmax), which the paper found to converge faster.

Attention layer ℓ (0-based) produces hidden state ℓ + 1, so a hidden pair (t, s) pairs attention layers
(t − 1, s − 1); ``qkv`` must therefore hold every layer (``capture_qkv(model)`` with ``layers=None``).
Padding: the official code replaces masked scores (≈ −10000) by 0 and averages over all L×L entries; here
padded queries and keys are left out of the mean instead, which is padding-invariant.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ckdlab.objectives.pkd import validate_layer_map


def _token_mask(batch: dict[str, Tensor], hidden: Tensor, owner: str) -> Tensor:
    if "attention_mask" not in batch:
        raise ValueError(f"{owner} needs batch['attention_mask'] to leave padding out of the loss")
    mask = batch["attention_mask"]
    if tuple(mask.shape) != tuple(hidden.shape[:2]):
        raise ValueError(
            f"{owner}: attention_mask has shape {tuple(mask.shape)} but hidden states are "
            f"{tuple(hidden.shape[:2])} [B, L]"
        )
    mask = mask.bool()
    if not mask.any():
        raise ValueError(f"{owner}: attention_mask has no valid token in the whole batch")
    return mask


def _masked_token_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean of (pred − target)² over valid tokens [B, L] and the feature dimension."""
    # where (not a multiply) so non-finite garbage in padded positions cannot leak into the sum.
    sq = torch.where(mask[..., None], (pred - target).pow(2), 0.0)
    return sq.sum() / (mask.sum() * pred.shape[-1])


def _scores(q: Tensor, k: Tensor, n_heads: int) -> Tensor:
    """Pre-softmax attention scores Q Kᵀ / √d_head, [B, H, L, L]."""
    b, l, d = q.shape
    d_head = d // n_heads
    q = q.view(b, l, n_heads, d_head).transpose(1, 2)
    k = k.view(b, l, n_heads, d_head).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(d_head)


TERMS = ("tinybert_hidden", "tinybert_attn", "tinybert_emb")


class TinyBERT(nn.Module):
    """TinyBERT intermediate-layer losses (terms ``tinybert_hidden``, ``tinybert_attn``, ``tinybert_emb``).

    ``tinybert_hidden = Σ_{(t,s), t,s≥1} mean_{valid tokens, d_t} (H_s W_h − H_t)²``
    ``tinybert_attn   = Σ_{(t,s), t,s≥1} mean_{heads, valid q, valid k} (Q_sK_sᵀ/√d_hs − Q_tK_tᵀ/√d_ht)²``
    ``tinybert_emb    = mean_{valid tokens, d_t} (E_s W_e − E_t)²``

    Args:
        layer_map: (teacher, student) hidden-state index pairs; ``(0, 0)`` is ignored here because the
            embedding term is always computed.
        d_teacher, d_student: hidden widths; when they differ, W_h and W_e are learnable linear maps, whose
            parameters must go into the optimizer together with the student's.
        n_heads_teacher, n_heads_student: attention head counts; they must be equal because attention
            matrices are compared head by head.
    """

    def __init__(
        self,
        layer_map: list[tuple[int, int]],
        d_teacher: int,
        d_student: int,
        n_heads_teacher: int,
        n_heads_student: int,
    ) -> None:
        super().__init__()
        pairs = validate_layer_map(layer_map, "TinyBERT")
        self.pairs = [p for p in pairs if p != (0, 0)]
        if not self.pairs:
            raise ValueError(
                "TinyBERT layer_map has only the (0, 0) embedding pair; map at least one transformer layer"
            )
        for name, value in (("d_teacher", d_teacher), ("d_student", d_student),
                            ("n_heads_teacher", n_heads_teacher), ("n_heads_student", n_heads_student)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"TinyBERT {name} must be a positive int, got {value!r}")
        if n_heads_teacher != n_heads_student:
            raise ValueError(
                f"TinyBERT compares attention head by head and needs equal head counts, got teacher "
                f"{n_heads_teacher} and student {n_heads_student}; use MiniLM (relation heads) instead"
            )
        for who, d, h in (("teacher", d_teacher, n_heads_teacher), ("student", d_student, n_heads_student)):
            if d % h:
                raise ValueError(f"TinyBERT: {who} width {d} is not divisible by its {h} heads")
        self.d_teacher, self.d_student = d_teacher, d_student
        self.n_heads = n_heads_teacher
        if d_teacher == d_student:
            self.proj_hidden: nn.Module = nn.Identity()
            self.proj_emb: nn.Module = nn.Identity()
        else:
            self.proj_hidden = nn.Linear(d_student, d_teacher)
            self.proj_emb = nn.Linear(d_student, d_teacher)

    def _check_hidden(self, hs_t: tuple[Tensor, ...], hs_s: tuple[Tensor, ...]) -> None:
        # The teacher cache leaves unmapped layers (often the embeddings) as None: check a layer it holds.
        width_t = next((h.shape[-1] for h in hs_t if h is not None), None)
        if width_t != self.d_teacher or hs_s[0].shape[-1] != self.d_student:
            raise ValueError(
                f"TinyBERT was built for widths teacher {self.d_teacher} / student {self.d_student} but got "
                f"hidden states of width {width_t} / {hs_s[0].shape[-1]}; pass the models' hidden_size"
            )
        for t, s in self.pairs:
            if t >= len(hs_t) or s >= len(hs_s):
                raise ValueError(
                    f"TinyBERT layer_map pair ({t}, {s}) is out of range: teacher has {len(hs_t)} hidden states "
                    f"and student {len(hs_s)} (index 0 = embeddings); fix the layer_map"
                )

    def _qkv(self, out: Any, n_hidden: int, who: str) -> list:
        qkv = getattr(out, "qkv", None)
        if qkv is None:
            raise ValueError(
                f"TinyBERT needs {who}.qkv (per-layer (q, k, v)); run the {who} inside "
                "ckdlab.models.capture.capture_qkv(model)"
            )
        if len(qkv) != n_hidden - 1:
            raise ValueError(
                f"TinyBERT needs (q, k, v) for every layer of the {who}: got {len(qkv)} for "
                f"{n_hidden - 1} layers; call capture_qkv with layers=None"
            )
        return qkv

    def forward(self, teacher: Any, student: Any, batch: dict[str, Tensor],
                weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        wanted = {t for t in TERMS if weights is None or weights.get(t, 0.0) != 0}
        hs_t, hs_s = teacher.hidden_states, student.hidden_states
        self._check_hidden(hs_t, hs_s)
        mask = _token_mask(batch, hs_s[0], "TinyBERT")
        dtype = hs_s[0].dtype
        terms: dict[str, Tensor] = {}
        if "tinybert_emb" in wanted:
            terms["tinybert_emb"] = _masked_token_mse(self.proj_emb(hs_s[0]), hs_t[0].detach().to(dtype), mask)
        if "tinybert_hidden" in wanted:
            terms["tinybert_hidden"] = sum(
                _masked_token_mse(self.proj_hidden(hs_s[s]), hs_t[t].detach().to(dtype), mask) for t, s in self.pairs
            )
        if "tinybert_attn" in wanted:
            qkv_t = self._qkv(teacher, len(hs_t), "teacher")
            qkv_s = self._qkv(student, len(hs_s), "student")
            # Attention entries count only when both the query and the key are real tokens.
            pair_mask = mask[:, None, :, None] & mask[:, None, None, :]
            n_pairs = pair_mask.sum() * self.n_heads
            attn = None
            for t, s in self.pairs:
                q_t, k_t, _ = qkv_t[t - 1]
                q_s, k_s, _ = qkv_s[s - 1]
                a_t = _scores(q_t.detach().to(dtype), k_t.detach().to(dtype), self.n_heads)
                a_s = _scores(q_s, k_s, self.n_heads)
                a_loss = torch.where(pair_mask, (a_s - a_t).pow(2), 0.0).sum() / n_pairs
                attn = a_loss if attn is None else attn + a_loss
            terms["tinybert_attn"] = attn
        return {t: terms[t] for t in TERMS if t in terms}
