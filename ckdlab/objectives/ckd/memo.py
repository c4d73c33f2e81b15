"""The teacher's CKD Grams per training example, computed once and reused every later epoch."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ckdlab.objectives.ckd.kernels import teacher_ltr_gram, teacher_wr_gram
from ckdlab.objectives.relations import CentredGram


class MemoLayout(NamedTuple):
    """Where a batch's examples live: their memo keys and their valid positions."""

    keys: list[tuple]  # (teacher layers, dataset row) per sequence
    valid: Tensor  # [B, L] bool
    pairs: Tensor  # [B, L, L] bool, valid[i] & valid[j]


class TeacherGramMemo:
    """The teacher's Grams per training example, keyed by its dataset row.

    The teacher is frozen and in eval mode, so its Grams for an example never change: epochs after
    the first skip the teacher half of CKD (its Gram products are the widest ones). Stored per
    example over its valid positions (``K n^2`` floats for K layer pairs and n tokens, less than
    the example's hidden states) and placed into each new batch's padding with one indexed copy
    per tensor, whatever the padding (right, left, or holes); equal to computing them afresh up to
    float rounding.
    """

    def __init__(self) -> None:
        self._wr: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self._ltr: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self._wr) + len(self._ltr)

    @staticmethod
    def layout(rows: Tensor, valid: Tensor, layers: tuple[int, ...]) -> MemoLayout:
        """Keys and masks of a batch, computed once for :meth:`wr` and :meth:`ltr`."""
        if rows.shape != valid.shape[:1]:
            raise ValueError(
                f"rows must hold one dataset row per sequence, got {tuple(rows.shape)} for {valid.shape[0]} sequences"
            )
        keys = [(layers, int(r)) for r in rows.tolist()]
        return MemoLayout(keys, valid, valid.unsqueeze(-1) & valid.unsqueeze(-2))

    @torch.no_grad()
    def wr(self, layout: MemoLayout, teacher_states: Sequence[Tensor]) -> CentredGram:
        """``[K, B, L, L]`` Grams of the K mapped teacher layers for this batch."""
        store, keys, valid = self._wr, layout.keys, layout.valid
        missing = [b for b, key in enumerate(keys) if key not in store]
        if missing:
            index = torch.tensor(missing, device=valid.device)
            g = teacher_wr_gram([t.index_select(0, index) for t in teacher_states], valid.index_select(0, index))
            # Boolean indexing lists valid entries sequence by sequence, row-major within each, so
            # one indexing op and a split give every example its own block (views of one tensor).
            lengths = valid.index_select(0, index).sum(dim=1).tolist()
            grams = g.gram[:, layout.pairs.index_select(0, index)].split([n * n for n in lengths], dim=1)
            offsets = g.offset[:, valid.index_select(0, index)].split(lengths, dim=1)
            for j, b in enumerate(missing):
                store[keys[b]] = (grams[j], offsets[j], g.mean_sq[:, j])
        stored = [store[key] for key in keys]
        k, (batch, length) = len(teacher_states), valid.shape
        dtype = stored[0][0].dtype
        gram = valid.new_zeros((k, batch, length, length), dtype=dtype)
        offset = valid.new_zeros((k, batch, length), dtype=dtype)
        gram[:, layout.pairs] = torch.cat([s[0] for s in stored], dim=1)
        offset[:, valid] = torch.cat([s[1] for s in stored], dim=1)
        mean_sq = torch.stack([s[2] for s in stored], dim=1)
        return CentredGram(gram, offset, mean_sq, teacher_states[0].shape[-1])

    @torch.no_grad()
    def ltr(self, layout: MemoLayout, teacher_states: Sequence[Tensor], centred: bool) -> CentredGram:
        """``[B, L, K, K]`` per-token Grams across the K mapped teacher layers for this batch."""
        store, valid = self._ltr, layout.valid
        keys = [(key, centred) for key in layout.keys]  # centred LTR states give other Grams
        missing = [b for b, key in enumerate(keys) if key not in store]
        if missing:
            index = torch.tensor(missing, device=valid.device)
            valid_missing = valid.index_select(0, index)
            g = teacher_ltr_gram([t.index_select(0, index) for t in teacher_states], valid_missing, centred)
            lengths = valid_missing.sum(dim=1).tolist()
            parts = [x[valid_missing].split(lengths) for x in (g.gram, g.offset, g.mean_sq)]
            for j, b in enumerate(missing):
                store[keys[b]] = (parts[0][j], parts[1][j], parts[2][j])
        stored = [store[key] for key in keys]
        n, (batch, length) = len(teacher_states), valid.shape
        dtype = stored[0][0].dtype
        gram = valid.new_zeros((batch, length, n, n), dtype=dtype)
        offset = valid.new_zeros((batch, length, n), dtype=dtype)
        mean_sq = valid.new_zeros((batch, length, 1), dtype=dtype)
        for target, i in ((gram, 0), (offset, 1), (mean_sq, 2)):
            target[valid] = torch.cat([s[i] for s in stored])
        return CentredGram(gram, offset, mean_sq, teacher_states[0].shape[-1])
