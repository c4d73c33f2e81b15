"""The Contextual Knowledge Distillation objective (CKD; Park, Kim & Yang, EMNLP 2021).

Four relation-matching terms between a teacher and a student. For one sequence, let V be its
valid (non-padding) positions and cos(x, y) = x.y / (max(|x|, eps) max(|y|, eps)), eps = 1e-12.
Teacher states are constants. "Layer pairs" are the (teacher, student) layers of a layer map
(see ``ckdlab.objectives.layer_map``).

* WR pair-wise (``wr_pair_loss``): for each anchor i in V, p_i = softmax_{j in V, j != i}
  cos(t_i, t_j) and q_i the same from the student;
  loss = sum KL(p_i || q_i) / #(layer pair, sequence, anchor i). Sequences with fewer than two
  valid tokens have no anchors (they contribute nothing).
* WR triplet-wise (``wr_triplet_loss``): psi(a, b, c) = cos(h_b - h_a, h_c - h_a) for a, b, c in
  V, b != a, c != a, b != c (ordered (b, c)); loss = mean over all such (layer pair, sequence,
  a, b, c) of (psi_t - psi_s)^2. ``window=w`` keeps only |b - a| <= w and |c - a| <= w (the
  official 21-token window is w = 10).
* LTR pair-wise (``ltr_pair_loss``): for a valid token i and the n mapped layers,
  p_{i,l} = softmax_{m != l} cos(h_i^l, h_i^m); loss = sum KL(p || q) / #(sequence, token, l).
* LTR triplet-wise (``ltr_triplet_loss``): psi(l, m, k) = cos(h_i^m - h_i^l, h_i^k - h_i^l),
  m != l, k != l, m != k; loss = mean squared difference over (sequence, token, l, m, k).

Options:

* pair ``loss``: ``"kl"`` (default), ``"mse"`` or ``"huber"`` (smooth L1, beta = 1). ``mse`` and
  ``huber`` compare the relation values themselves (cosines, or normalised distances) over the
  same valid (anchor, j != anchor) entries and average over those entries.
* pair ``metric``: ``"cos"`` (default) or ``"l2"``: |h_i - h_j| divided by its mean over the
  valid pairs i != j of that sequence and layer (RKD-style; for LTR, over the layer pairs of that
  token). With ``loss="kl"`` the softmax logit is the *negative* normalised distance, so nearer
  tokens get more probability mass, as nearer = more similar does for cosines.
* triplet ``loss``: ``"mse"`` (default) or ``"huber"`` (smooth L1, beta = 1).

Departures from the official code (github.com/GeondoPark/CKD), all deliberate:

* its KL fills masked logits with -inf, so rows with no valid entry give NaN on current torch;
  here masked logits get the most negative finite value and invalid anchors are dropped from
  both the sum and the count (p = 0 entries contribute exactly 0);
* its LTR weights are never applied; here ``CKDLoss.total`` applies all four weights;
* its windowed angles clamp neighbour indices at the sequence ends (duplicating edge tokens)
  and do not mask padded neighbours; here the window is a plain |b - a| <= w filter on valid
  tokens.

Cost. Triplet angles come from centred Gram matrices through the law of cosines (see
``ckdlab.objectives.relations`` for the formulas and the float32 guards), never from
``[B, L, L, d]`` or ``[B, L, 21, d]`` difference tensors. For the default ``mse`` triplet loss,
the sum over all (a, b, c) of squared angle differences is expanded into inner products of the
per-anchor angle matrices, which are batched ``[L, L]`` matrix products (``_angle_squared_error``):
memory O(B L^2), plain autograd. A window is a mask on the partner legs, so it uses the same
path. The ``huber`` loss does not expand; it walks over blocks of (sequences x anchors) of about
``block_elements`` entries, computing the loss *and* its gradient with respect to the student's
squared-distance matrix in the same pass (first-order gradient only). Padded positions may hold
any finite values.

Measured by ``benchmarks/bench_ckd.py`` (CPU, one thread, d = 768, 7 layer pairs, forward +
backward): all triplets at B = 32, L = 128 in 0.68 s and 0.64 GB extra memory, against 39 s and
10.7 GB for the official windowed code (58x faster, 0.06 of the memory); 37-40x at B = 4-8.
In float32 the matmul expansion agrees with the element-wise sum to about 1e-5 relative.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from ckdlab.objectives.layer_map import LayerMapSpec, resolve_layer_map
from ckdlab.objectives.relations import (
    METRICS,
    CentredGram,
    _check_mask,
    _check_option,
    _check_states,
    _stack_layers,
    angle_inputs_from_gram,
    angles_from_sq_distances,
    centred_gram,
    full_precision,
    pair_relation_from_gram,
)

TERMS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")
PAIR_LOSSES = ("kl", "mse", "huber")
TRIPLET_LOSSES = ("mse", "huber")

# Entries per block of the triplet loop. On CPU a block this size (1 MiB in float32) keeps the
# handful of temporaries in cache; on accelerators larger blocks amortise kernel launches.
CPU_BLOCK_ELEMENTS = 2**18
DEVICE_BLOCK_ELEMENTS = 2**24


# --------------------------------------------------------------------------- shared pieces


def _check_layer_pairs(teacher_states: Sequence[Tensor], student_states: Sequence[Tensor],
                       attention_mask: Tensor, where: str) -> Tensor:
    """Validate WR inputs; returns the bool mask ``[B, L]``."""
    for name, states in (("teacher_states", teacher_states), ("student_states", student_states)):
        if isinstance(states, Tensor) or not isinstance(states, Sequence) or len(states) == 0:
            raise ValueError(f"{where}: {name} must be a non-empty list of [B, L, d] tensors, one per layer pair")
    if len(teacher_states) != len(student_states):
        raise ValueError(
            f"{where}: got {len(teacher_states)} teacher and {len(student_states)} student tensors; "
            f"they are paired one to one by the layer map, so the counts must match"
        )
    for k, (t, s) in enumerate(zip(teacher_states, student_states)):
        _check_states(t, f"{where}: teacher_states[{k}]")
        _check_states(s, f"{where}: student_states[{k}]")
    batch, length = teacher_states[0].shape[:2]
    for k, (t, s) in enumerate(zip(teacher_states, student_states)):
        if t.shape[:2] != (batch, length) or s.shape[:2] != (batch, length):
            raise ValueError(
                f"{where}: layer pair {k} has teacher {tuple(t.shape)} and student {tuple(s.shape)}; "
                f"all states must share [B, L] = [{batch}, {length}] (only the width d may differ)"
            )
    return _check_mask(attention_mask, batch, length, where).to(teacher_states[0].device)


def _stack_checked(teacher_states: Sequence[Tensor], student_states: Sequence[Tensor],
                   attention_mask: Tensor, where: str, min_layers: int) -> tuple[Tensor, Tensor, Tensor]:
    """Validate LTR inputs; returns teacher ``[B, L, n, dt]``, student ``[B, L, n, ds]``, mask ``[B, L]``."""
    teacher = _stack_layers(teacher_states, f"{where}: teacher_states")
    student = _stack_layers(student_states, f"{where}: student_states")
    if teacher.shape[:3] != student.shape[:3]:
        raise ValueError(
            f"{where}: teacher layers stack to [B, L, n, d] = {tuple(teacher.shape)} but student layers to "
            f"{tuple(student.shape)}; B, L and the number of layers n must match"
        )
    n = teacher.shape[2]
    if n < min_layers:
        raise ValueError(
            f"{where} needs at least {min_layers} mapped layers, got {n}; use a layer map with "
            f"{min_layers} or more pairs (e.g. 'uniform'), or give this term weight 0"
        )
    valid = _check_mask(attention_mask, teacher.shape[0], teacher.shape[1], where).to(teacher.device)
    return teacher, student, valid


def _pointwise(diff: Tensor, loss: str) -> Tensor:
    """Per-entry loss of ``diff = student - teacher``: ``diff^2`` or smooth L1 with beta = 1."""
    if loss == "mse":
        return diff * diff
    return F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="none", beta=1.0)


def _pair_divergence(rel_t: Tensor, rel_s: Tensor, pairs: Tensor, loss: str, metric: str) -> tuple[Tensor, Tensor]:
    """``(sum, count)`` of the pair loss over rows ``[..., anchor, :]`` restricted to ``pairs``.

    kl:        sum over anchors of sum_j p_j (log p_j - log q_j), p/q = softmax over the anchor's
               valid j of the teacher/student logits; count = anchors with >= 1 valid j.
    mse/huber: sum over valid (anchor, j) of loss(rel_s - rel_t); count = number of such entries.
    """
    if loss == "kl":
        sign = 1.0 if metric == "cos" else -1.0
        # A finite fill, not -inf: an anchor with no valid j must give a finite (ignored) row.
        fill = torch.finfo(rel_s.dtype).min
        log_p = torch.log_softmax((sign * rel_t).masked_fill(~pairs, fill), dim=-1)
        log_q = torch.log_softmax((sign * rel_s).masked_fill(~pairs, fill), dim=-1)
        terms = (log_p.exp() * (log_p - log_q)).masked_fill(~pairs, 0.0)
        return terms.sum(), pairs.any(dim=-1).sum()
    diff = (rel_s - rel_t).masked_fill(~pairs, 0.0)
    return _pointwise(diff, loss).sum(), pairs.sum()


def _wr_grams(states: Sequence[Tensor], valid: Tensor) -> list[CentredGram]:
    """One centred Gram ``[B, L, L]`` per mapped layer."""
    return [centred_gram(h, valid) for h in states]


def _ltr_gram(stacked: Tensor, valid: Tensor) -> CentredGram:
    """Per-token Grams ``[B, L, n, n]`` across the n stacked layers ``[B, L, n, d]``."""
    return centred_gram(stacked, valid.unsqueeze(-1).expand(-1, -1, stacked.shape[2]))


@torch.no_grad()
def _teacher_wr_grams(teacher_states: Sequence[Tensor], valid: Tensor) -> list[CentredGram]:
    return _wr_grams([t.detach() for t in teacher_states], valid)


@torch.no_grad()
def _teacher_ltr_gram(teacher_stacked: Tensor, valid: Tensor) -> CentredGram:
    return _ltr_gram(teacher_stacked.detach(), valid)


class TeacherGramMemo:
    """The teacher's Grams per training example, keyed by its dataset row.

    The teacher is frozen and in eval mode, so its Grams for an example never change: epochs after
    the first skip the teacher half of CKD (its Gram products are the widest ones). Stored per
    example over its valid positions (``K n^2`` floats for K layer pairs and n tokens, less than
    the example's hidden states) and placed into each new batch's padding; equal to computing them
    afresh up to float rounding.
    """

    def __init__(self) -> None:
        self._wr: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        self._ltr: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return len(self._wr) + len(self._ltr)

    @staticmethod
    def layout(rows: Tensor, valid: Tensor, layers: tuple[int, ...]) -> tuple[list[tuple], list[slice | Tensor]]:
        """Keys (teacher layers, row) and, per sequence, its valid positions (a slice when they are a
        prefix): computed once per batch, for :meth:`wr` and :meth:`ltr`."""
        if rows.shape != valid.shape[:1]:
            raise ValueError(f"rows must hold one dataset row per sequence, got {tuple(rows.shape)} for {valid.shape[0]} sequences")
        lengths = valid.sum(dim=1)
        prefix = (valid == (torch.arange(valid.shape[1], device=valid.device) < lengths[:, None])).all(dim=1)
        positions: list[slice | Tensor] = [
            slice(0, n) if is_prefix else valid[b].nonzero().squeeze(-1)
            for b, (n, is_prefix) in enumerate(zip(lengths.tolist(), prefix.tolist()))
        ]
        return [(layers, int(r)) for r in rows.tolist()], positions

    @torch.no_grad()
    def wr(self, layout: tuple[list[tuple], list[slice | Tensor]], teacher_states: Sequence[Tensor],
           valid: Tensor) -> list[CentredGram]:
        """``[B, L, L]`` Grams of the mapped teacher layers for this batch (``layout`` from :meth:`layout`)."""
        store, (keys, positions) = self._wr, layout
        missing = [b for b, key in enumerate(keys) if key not in store]
        if missing:
            index = torch.tensor(missing, device=valid.device)
            grams = _teacher_wr_grams([t.index_select(0, index) for t in teacher_states], valid.index_select(0, index))
            for j, b in enumerate(missing):
                pos = positions[b]
                store[keys[b]] = (
                    torch.stack([g.gram[j][pos][:, pos] for g in grams]),
                    torch.stack([g.offset[j][pos] for g in grams]),
                    torch.stack([g.mean_sq[j] for g in grams]),
                )
        k, (batch, length) = len(teacher_states), valid.shape
        dtype = store[keys[0]][0].dtype
        gram = valid.new_zeros((k, batch, length, length), dtype=dtype)
        offset = valid.new_zeros((k, batch, length), dtype=dtype)
        mean_sq = valid.new_zeros((k, batch, 1), dtype=dtype)
        for b, key in enumerate(keys):
            g, o, m = store[key]
            pos = positions[b]
            if isinstance(pos, slice):  # right padding: a plain block copy
                gram[:, b, pos, pos], offset[:, b, pos] = g, o
            else:
                gram[:, b, pos[:, None], pos[None, :]], offset[:, b, pos] = g, o
            mean_sq[:, b] = m
        width = teacher_states[0].shape[-1]
        return [CentredGram(gram[i], offset[i], mean_sq[i], width) for i in range(k)]

    @torch.no_grad()
    def ltr(self, layout: tuple[list[tuple], list[slice | Tensor]], teacher_states: Sequence[Tensor],
            valid: Tensor) -> CentredGram:
        """``[B, L, n, n]`` per-token Grams across the n mapped teacher layers for this batch."""
        store, (keys, positions) = self._ltr, layout
        missing = [b for b, key in enumerate(keys) if key not in store]
        if missing:
            index = torch.tensor(missing, device=valid.device)
            stacked = torch.stack([t.index_select(0, index) for t in teacher_states], dim=2)
            g = _teacher_ltr_gram(stacked, valid.index_select(0, index))
            for j, b in enumerate(missing):
                pos = positions[b]
                store[keys[b]] = (g.gram[j][pos], g.offset[j][pos], g.mean_sq[j][pos])
        n, (batch, length) = len(teacher_states), valid.shape
        dtype = store[keys[0]][0].dtype
        gram = valid.new_zeros((batch, length, n, n), dtype=dtype)
        offset = valid.new_zeros((batch, length, n), dtype=dtype)
        mean_sq = valid.new_zeros((batch, length, 1), dtype=dtype)
        for b, key in enumerate(keys):
            pos = positions[b]
            gram[b, pos], offset[b, pos], mean_sq[b, pos] = store[key]
        return CentredGram(gram, offset, mean_sq, teacher_states[0].shape[-1])


# --------------------------------------------------------------------------- WR pair-wise


def wr_pair_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    loss: str = "kl",
    metric: str = "cos",
) -> Tensor:
    """Word-relation pair-wise loss, averaged over (layer pair, sequence, anchor i in V).

    ``loss="kl"``: ``KL(p_i || q_i)`` with ``p_i = softmax_{j in V, j != i} r_t(i, j)`` and ``q_i``
    the same from the student, ``r = cos`` (``metric="cos"``) or ``r = -|h_i - h_j| / mean``
    (``metric="l2"``). ``loss="mse"/"huber"``: mean over valid (i, j != i) of
    ``loss(r_s(i, j) - r_t(i, j))`` with r the cosine or normalised distance.

    Args:
        teacher_states, student_states: equal-length lists of ``[B, L, d_t]`` / ``[B, L, d_s]``;
            the k-th teacher tensor is paired with the k-th student tensor.
        attention_mask: ``[B, L]`` of 0/1.

    Returns:
        A scalar (float32, or float64 for float64 inputs); 0 if no sequence has two valid tokens.
    """
    _check_option("loss", loss, PAIR_LOSSES)
    _check_option("metric", metric, METRICS)
    valid = _check_layer_pairs(teacher_states, student_states, attention_mask, "wr_pair_loss")
    with full_precision(valid.device):
        return _wr_pair(_teacher_wr_grams(teacher_states, valid), _wr_grams(student_states, valid), valid, loss, metric)


def _wr_pair(grams_t: Sequence[CentredGram], grams_s: Sequence[CentredGram], valid: Tensor, loss: str,
             metric: str) -> Tensor:
    length = valid.shape[1]
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    pairs = valid.unsqueeze(-1) & valid.unsqueeze(-2) & ~eye
    total, count = 0.0, 0
    for g_t, g_s in zip(grams_t, grams_s):
        with torch.no_grad():
            rel_t = pair_relation_from_gram(g_t, valid, metric)
        rel_s = pair_relation_from_gram(g_s, valid, metric)
        part, n = _pair_divergence(rel_t, rel_s, pairs, loss, metric)
        total, count = total + part, count + n
    return total / count.clamp(min=1)


# --------------------------------------------------------------------------- WR triplet-wise


class _AngleDivergence(torch.autograd.Function):
    """``sum over triplets of loss(psi_s - psi_t)`` from squared distances, with its gradient.

    Inputs: ``d2_s``, ``d2_t`` ``[B, L, L]`` squared distances; ``inv_s``, ``inv_t`` the matching
    inverse lengths ``R[a, b] = 1 / sqrt(2 D2[a, b])``, already 0 for every (a, b) that is not a
    usable (anchor, partner) pair, so every triplet with an unusable leg has psi = 0 for both
    models and adds nothing. ``psi[a, b, c] = (x + y - z) R[a, b] R[a, c]`` with x = D2[a, b],
    y = D2[a, c], z = D2[b, c]. With r = R[a, b] R[a, c] and g = dloss/dpsi:

        dpsi/dx = r - psi R[a, b]^2,   dpsi/dy = r - psi R[a, c]^2,   dpsi/dz = -r.

    psi and the mask are symmetric in (b, c), so the x and y parts give the same row sums:
    ``dD2[a, b] += 2 sum_c g (r - psi R[a, b]^2)`` and ``dD2[b, c] -= sum_a g r``. The gradient is
    accumulated in forward, block by block, so nothing of size L^3 outlives a block.
    """

    @staticmethod
    def forward(ctx, d2_s: Tensor, d2_t: Tensor, inv_s: Tensor, inv_t: Tensor,
                loss: str, window: int | None, block_elements: int) -> Tensor:
        want_grad = ctx.needs_input_grad[0]
        grad = torch.zeros_like(d2_s) if want_grad else None
        total = torch.zeros((), dtype=torch.float64, device=d2_s.device)
        batch, length, _ = d2_s.shape
        blocks = list(_triplet_blocks(batch, length, window, block_elements))
        # Three block-sized buffers reused by every block: fresh allocations of this size cost
        # about as much as the arithmetic on them.
        largest = max(_block_size(block) for block in blocks)
        buffers = d2_s.new_empty(3, largest)
        for block in blocks:
            rows, anchors, cols = block
            width = cols.stop - cols.start
            shape = (rows.stop - rows.start, anchors.stop - anchors.start, width, width)
            psi_s, r_s, psi_t = (buf[: _block_size(block)].view(shape) for buf in buffers)

            x_s, q_s = d2_s[rows, anchors, cols], inv_s[rows, anchors, cols]
            torch.add(x_s.unsqueeze(-1), x_s.unsqueeze(-2), out=psi_s)
            psi_s -= d2_s[rows, cols, cols].unsqueeze(1)
            torch.mul(q_s.unsqueeze(-1), q_s.unsqueeze(-2), out=r_s)
            psi_s *= r_s

            x_t, q_t = d2_t[rows, anchors, cols], inv_t[rows, anchors, cols]
            torch.add(x_t.unsqueeze(-1), x_t.unsqueeze(-2), out=psi_t)
            psi_t -= d2_t[rows, cols, cols].unsqueeze(1)
            psi_t *= q_t.unsqueeze(-1)
            psi_t *= q_t.unsqueeze(-2)

            diff = torch.sub(psi_s, psi_t, out=psi_t)
            diff.diagonal(dim1=-2, dim2=-1).zero_()  # b == c is not a triplet
            if loss == "mse":
                flat = diff.view(-1)
                total += torch.dot(flat, flat)
                g = diff  # dloss/ddiff is 2 diff; the factor 2 is applied once, to the sum, below
            else:
                size = diff.abs()
                inner = size.clamp(max=1.0)
                total += torch.dot(inner.view(-1), (size - 0.5 * inner).view(-1))  # smooth L1, beta = 1
                g = diff.clamp_(-1.0, 1.0)
            if want_grad:
                g_psi = torch.linalg.vecdot(psi_s, g)  # sum_c g psi
                g_r = r_s.mul_(g)
                grad[rows, cols, cols] -= g_r.sum(dim=1)
                grad[rows, anchors, cols] += 2.0 * (g_r.sum(dim=-1) - q_s.square() * g_psi)
        if want_grad and loss == "mse":
            grad *= 2.0
        ctx.save_for_backward(grad)
        return total.to(d2_s.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_total, None, None, None, None, None, None


def _angle_inner(p1: Tensor, r1: Tensor, d1: Tensor, p2: Tensor, r2: Tensor, d2: Tensor, same: bool) -> Tensor:
    """``sum over (sequence, a, b, c) of psi_1(a, b, c) * psi_2(a, b, c)``, b == c included, by matmuls.

    For one anchor a (row a of each ``[B, L, L]`` input) the angle matrix over (b, c) is
    ``Psi = p r^T + r p^T - diag(r) D diag(r)`` with ``r = R[a, :]``, ``p = (R * D)[a, :]``, so

        <Psi_1, Psi_2> = 2 [(p1.p2)(r1.r2) + (p1.r2)(r1.p2)] - 2 (p1*r2)^T D2 w - 2 (p2*r1)^T D1 w
                         + w^T (D1 * D2) w,      w = r1 * r2.

    Each quadratic form is one batched ``[L, L] @ [L, L]`` product for all anchors at once.
    ``same`` (model 1 is model 2) skips the product that then repeats.
    """
    w = r1 * r2
    rank_one = (p1 * p2).sum(-1) * w.sum(-1) + (p1 * r2).sum(-1) * (r1 * p2).sum(-1)
    first = (((p1 * r2) @ d2) * w).sum(-1)
    second = first if same else (((p2 * r1) @ d1) * w).sum(-1)
    both = ((w @ (d1 * d2)) * w).sum(-1)
    return (2.0 * (rank_one - first - second) + both).sum()


def _angle_squared_error(d2_s: Tensor, inv_s: Tensor, d2_t: Tensor, inv_t: Tensor) -> Tensor:
    """``sum over triplets (b != c) of (psi_s - psi_t)^2`` in O(B L^2) memory, with plain autograd.

    ``|Psi_s - Psi_t|^2 = <Psi_s, Psi_s> + <Psi_t, Psi_t> - 2 <Psi_s, Psi_t>`` per anchor (see
    :func:`_angle_inner`), minus the b == c entries, ``psi(a, b, b) = 2 R[a, b]^2 D[a, b]`` (1 for
    a usable pair, 0 for a left-out one). Matrix products replace the L^3 element-wise passes
    (2-6x faster on CPU at L = 64-128). The expansion subtracts sums of size |Psi|^2 to get
    |Psi_s - Psi_t|^2, so in float32 the result carries an extra relative error of about
    eps * |Psi|^2 / |Psi_s - Psi_t|^2 (measured 5e-6 on random states); float64 inputs stay float64.
    """
    p_s, p_t = inv_s * d2_s, inv_t * d2_t
    full = (
        _angle_inner(p_s, inv_s, d2_s, p_s, inv_s, d2_s, same=True)
        + _angle_inner(p_t, inv_t, d2_t, p_t, inv_t, d2_t, same=True)
        - 2.0 * _angle_inner(p_s, inv_s, d2_s, p_t, inv_t, d2_t, same=False)
    )
    same_partner = 2.0 * (p_s * inv_s - p_t * inv_t)
    return full - same_partner.square().sum()


def _block_size(block: tuple[slice, slice, slice]) -> int:
    rows, anchors, cols = block
    return (rows.stop - rows.start) * (anchors.stop - anchors.start) * (cols.stop - cols.start) ** 2


def _triplet_blocks(batch: int, length: int, window: int | None, block_elements: int):
    """Yield ``(rows, anchors, cols)`` slices covering every (sequence, anchor) once.

    ``cols`` is the range of partners b, c an anchor block can reach: everything, or the anchors
    widened by the window on both sides. Blocks hold about ``block_elements`` entries
    (rows x anchors x cols x cols).
    """
    banded = window is not None and 2 * window + 1 < length
    per_anchor = length * length
    if banded:
        anchors_per_block = max(1, min(length, window))
    else:
        anchors_per_block = max(1, min(length, block_elements // per_anchor))
    for a0 in range(0, length, anchors_per_block):
        a1 = min(length, a0 + anchors_per_block)
        c0, c1 = (max(0, a0 - window), min(length, a1 + window)) if banded else (0, length)
        rows_per_block = max(1, min(batch, block_elements // ((a1 - a0) * (c1 - c0) ** 2)))
        for r0 in range(0, batch, rows_per_block):
            yield slice(r0, min(batch, r0 + rows_per_block)), slice(a0, a1), slice(c0, c1)


def _check_block_elements(block_elements: int | None, device: torch.device) -> int:
    if block_elements is None:
        return CPU_BLOCK_ELEMENTS if device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    if isinstance(block_elements, bool) or not isinstance(block_elements, int) or block_elements < 1:
        raise ValueError(f"block_elements={block_elements!r} must be a positive int (entries per block) or None")
    return block_elements


def _check_window(window: int | None) -> int | None:
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(
            f"window={window!r} must be None (all triplets) or a positive int w keeping |b - a| <= w "
            f"and |c - a| <= w (the official 21-token window is w = 10)"
        )
    return window


def wr_triplet_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    loss: str = "mse",
    window: int | None = None,
    block_elements: int | None = None,
) -> Tensor:
    """Word-relation triplet-wise (angle) loss.

    ``psi(a, b, c) = cos(h_b - h_a, h_c - h_a)`` for valid a, b, c with b != a, c != a, b != c;
    the loss is the mean over all such (layer pair, sequence, a, b, c) of
    ``(psi_t - psi_s)^2`` (``loss="mse"``) or smooth L1 with beta = 1 (``loss="huber"``).

    Args:
        teacher_states, student_states: equal-length lists of ``[B, L, d_t]`` / ``[B, L, d_s]``.
        attention_mask: ``[B, L]`` of 0/1.
        window: None for all triplets, or w to keep only |b - a| <= w and |c - a| <= w.
        block_elements: entries per block of the ``huber`` loop (memory/speed trade-off);
            None = 2^18 on CPU, 2^24 on accelerators. The ``mse`` loss needs no blocks.

    Returns:
        A scalar (float32, or float64 for float64 inputs); 0 if there is no valid triplet.
    """
    _check_option("loss", loss, TRIPLET_LOSSES)
    window = _check_window(window)
    valid = _check_layer_pairs(teacher_states, student_states, attention_mask, "wr_triplet_loss")
    block_elements = _check_block_elements(block_elements, valid.device)
    with full_precision(valid.device):
        return _wr_triplet(_teacher_wr_grams(teacher_states, valid), _wr_grams(student_states, valid), valid, loss,
                           window, block_elements)


def _wr_triplet(grams_t: Sequence[CentredGram], grams_s: Sequence[CentredGram], valid: Tensor, loss: str,
                window: int | None, block_elements: int) -> Tensor:
    length = valid.shape[1]
    positions = torch.arange(length, device=valid.device)
    usable = valid.unsqueeze(-1) & valid.unsqueeze(-2) & (positions[:, None] != positions[None, :])
    if window is not None:
        usable &= (positions[:, None] - positions[None, :]).abs() <= window
    partners = usable.sum(dim=-1)
    triplets_per_pair = (partners * (partners - 1)).sum()
    total = 0.0
    for g_t, g_s in zip(grams_t, grams_s):
        with torch.no_grad():
            d2_t, inv_t = angle_inputs_from_gram(g_t, usable)
        d2_s, inv_s = angle_inputs_from_gram(g_s, usable)
        if loss == "mse":
            total = total + _angle_squared_error(d2_s, inv_s, d2_t, inv_t)
        else:
            total = total + _AngleDivergence.apply(d2_s, d2_t, inv_s.detach(), inv_t, loss, window, block_elements)
    return total / (triplets_per_pair * len(grams_t)).clamp(min=1)


# --------------------------------------------------------------------------- LTR


def ltr_pair_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    loss: str = "kl",
    metric: str = "cos",
) -> Tensor:
    """Layer-transforming pair-wise loss, averaged over (sequence, valid token i, layer l).

    For token i with states h_i^1..h_i^n in the n mapped layers: ``loss="kl"`` uses
    ``KL(p_{i,l} || q_{i,l})`` with ``p_{i,l} = softmax_{m != l} r_t(h_i^l, h_i^m)``, ``r = cos`` or
    ``-|h^l - h^m| / mean`` (``metric="l2"``, mean over the token's layer pairs m != l);
    ``loss="mse"/"huber"`` averages ``loss(r_s - r_t)`` over (sequence, token, l, m != l).

    Args:
        teacher_states, student_states: the n >= 2 mapped layers, ``[B, L, d_t]`` / ``[B, L, d_s]``.
        attention_mask: ``[B, L]`` of 0/1.
    """
    _check_option("loss", loss, PAIR_LOSSES)
    _check_option("metric", metric, METRICS)
    teacher, student, valid = _stack_checked(teacher_states, student_states, attention_mask, "ltr_pair_loss", 2)
    with full_precision(valid.device):
        return _ltr_pair(_teacher_ltr_gram(teacher, valid), _ltr_gram(student, valid), valid, loss, metric)


def _ltr_pair(gram_t: CentredGram, gram_s: CentredGram, valid: Tensor, loss: str, metric: str) -> Tensor:
    n = gram_t.gram.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=valid.device)
    pairs = valid[:, :, None, None] & ~eye
    layer_valid = valid.unsqueeze(-1).expand(-1, -1, n)
    with torch.no_grad():
        rel_t = pair_relation_from_gram(gram_t, layer_valid, metric)
    rel_s = pair_relation_from_gram(gram_s, layer_valid, metric)
    total, count = _pair_divergence(rel_t, rel_s, pairs, loss, metric)
    return total / count.clamp(min=1)


def ltr_triplet_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    loss: str = "mse",
) -> Tensor:
    """Layer-transforming triplet-wise (angle) loss.

    ``psi(l, m, k) = cos(h_i^m - h_i^l, h_i^k - h_i^l)`` over the n >= 3 mapped layers of each valid
    token i, m != l, k != l, m != k; the loss is the mean over (sequence, token, l, m, k) of
    ``(psi_t - psi_s)^2`` (``loss="mse"``) or smooth L1 with beta = 1 (``loss="huber"``).
    The per-token tensors are ``[n, n, n]`` (343 entries for n = 7), so this is plain autograd.
    """
    _check_option("loss", loss, TRIPLET_LOSSES)
    teacher, student, valid = _stack_checked(teacher_states, student_states, attention_mask, "ltr_triplet_loss", 3)
    with full_precision(valid.device):
        return _ltr_triplet(_teacher_ltr_gram(teacher, valid), _ltr_gram(student, valid), valid, loss)


def _ltr_triplet(gram_t: CentredGram, gram_s: CentredGram, valid: Tensor, loss: str) -> Tensor:
    n = gram_t.gram.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=valid.device)
    usable = valid[:, :, None, None] & ~eye
    defined = usable.unsqueeze(-1) & usable.unsqueeze(-2) & ~eye
    with torch.no_grad():
        psi_t = angles_from_sq_distances(*angle_inputs_from_gram(gram_t, usable))
    psi_s = angles_from_sq_distances(*angle_inputs_from_gram(gram_s, usable))
    total = _pointwise((psi_s - psi_t).masked_fill(~defined, 0.0), loss).sum()
    count = valid.sum() * (n * (n - 1) * (n - 2))
    return total / count.clamp(min=1)


# --------------------------------------------------------------------------- the module


class CKDLoss(nn.Module):
    """The CKD objective on Hugging Face model outputs.

    ``forward`` maps layers with ``layer_map`` and returns the *unweighted* terms
    ``{"wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet"}``, computing only those whose weight
    is non-zero; ``total(terms)`` is their weighted sum with the weights as they are at call
    time. ``weights`` is a plain dict that may be changed between steps (schedules).

    Args:
        weights: weight per term; missing terms get 0. None = all four at 1.0.
        layer_map: see ``ckdlab.objectives.layer_map.resolve_layer_map`` (default "uniform").
        pair_loss, pair_metric: options of both pair-wise terms ("kl"/"mse"/"huber", "cos"/"l2").
        triplet_loss: option of both triplet terms ("mse"/"huber").
        window: WR triplet window w (None = all triplets).
        block_elements: block size of the WR triplet loop (None = device default).
        memoize_teacher: keep the teacher's Grams per training example (:class:`TeacherGramMemo`),
            for calls that pass ``rows``, the dataset row of each sequence. For a fixed training
            set only (the distillation engine turns it on).
    """

    def __init__(
        self,
        weights: Mapping[str, float] | None = None,
        layer_map: LayerMapSpec = "uniform",
        *,
        pair_loss: str = "kl",
        pair_metric: str = "cos",
        triplet_loss: str = "mse",
        window: int | None = None,
        block_elements: int | None = None,
        memoize_teacher: bool = False,
    ) -> None:
        super().__init__()
        self.weights: dict[str, float] = (
            {term: 1.0 for term in TERMS} if weights is None else {term: 0.0 for term in TERMS} | dict(weights)
        )
        self._check_weights()
        self.layer_map = layer_map
        self.pair_loss = _check_option("pair_loss", pair_loss, PAIR_LOSSES)
        self.pair_metric = _check_option("pair_metric", pair_metric, METRICS)
        self.triplet_loss = _check_option("triplet_loss", triplet_loss, TRIPLET_LOSSES)
        self.window = _check_window(window)
        self.block_elements = block_elements
        if block_elements is not None:
            _check_block_elements(block_elements, torch.device("cpu"))
        self.teacher_memo = TeacherGramMemo() if memoize_teacher else None

    def _check_weights(self) -> None:
        unknown = sorted(set(self.weights) - set(TERMS))
        if unknown:
            raise ValueError(f"weights has unknown term(s) {unknown}; the terms are {', '.join(TERMS)}")
        for term, value in self.weights.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"weights[{term!r}]={value!r} must be a real number")

    def forward(self, teacher_outputs: object, student_outputs: object, attention_mask: Tensor,
                rows: Tensor | None = None, weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        """Unweighted CKD terms for the non-zero-weight terms.

        Args:
            teacher_outputs, student_outputs: model outputs with ``.hidden_states`` (call the
                models with ``output_hidden_states=True``), or the hidden-states tuples themselves.
            attention_mask: ``[B, L]`` of 0/1, the mask given to both models.
            rows: ``[B]`` dataset row of each sequence, for ``memoize_teacher``; without it (a batch
                from elsewhere) the teacher's Grams are computed afresh and not stored.
            weights: the weights deciding which terms are computed (non-zero ones); ``None`` = the
                constructor's ``weights``. Nothing is stored on the module.
        """
        memo = self.teacher_memo if rows is not None else None
        self._check_weights()
        weights = self.weights if weights is None else {term: float(weights.get(term, 0.0)) for term in TERMS}
        teacher_hidden = _hidden_states(teacher_outputs, "teacher_outputs")
        student_hidden = _hidden_states(student_outputs, "student_outputs")
        pairs = resolve_layer_map(self.layer_map, len(teacher_hidden) - 1, len(student_hidden) - 1)
        teacher = [teacher_hidden[t] for t, _ in pairs]
        student = [student_hidden[s] for _, s in pairs]
        layers = tuple(t for t, _ in pairs)
        for term, needed in (("ltr_pair", 2), ("ltr_triplet", 3)):
            if weights[term] != 0 and len(pairs) < needed:
                raise ValueError(
                    f"{term} needs at least {needed} mapped layers but layer_map={self.layer_map!r} gives "
                    f"{len(pairs)} pair(s) {pairs}; use a map with more pairs or set weights[{term!r}] = 0"
                )
        terms: dict[str, Tensor] = {}
        wanted = {term for term in TERMS if weights[term] != 0}
        if not wanted:
            return terms
        valid = _check_layer_pairs(teacher, student, attention_mask, "CKDLoss")
        layout = memo.layout(rows, valid, layers) if memo is not None else None
        # One centred Gram per layer (WR) and per token (LTR) serves both the pair and the triplet
        # term: the Grams are the largest part of CKD's cost at BERT widths.
        with full_precision(valid.device):
            if wanted & {"wr_pair", "wr_triplet"}:
                grams_t = memo.wr(layout, teacher, valid) if memo is not None else _teacher_wr_grams(teacher, valid)
                grams_s = _wr_grams(student, valid)
                if "wr_pair" in wanted:
                    terms["wr_pair"] = _wr_pair(grams_t, grams_s, valid, self.pair_loss, self.pair_metric)
                if "wr_triplet" in wanted:
                    block_elements = _check_block_elements(self.block_elements, valid.device)
                    terms["wr_triplet"] = _wr_triplet(grams_t, grams_s, valid, self.triplet_loss, self.window,
                                                      block_elements)
            if wanted & {"ltr_pair", "ltr_triplet"}:
                if memo is not None:
                    gram_t = memo.ltr(layout, teacher, valid)
                else:
                    gram_t = _teacher_ltr_gram(_stack_layers(teacher, "CKDLoss: teacher_states"), valid)
                gram_s = _ltr_gram(_stack_layers(student, "CKDLoss: student_states"), valid)
                if "ltr_pair" in wanted:
                    terms["ltr_pair"] = _ltr_pair(gram_t, gram_s, valid, self.pair_loss, self.pair_metric)
                if "ltr_triplet" in wanted:
                    terms["ltr_triplet"] = _ltr_triplet(gram_t, gram_s, valid, self.triplet_loss)
        return {term: terms[term] for term in TERMS if term in terms}

    def total(self, terms: Mapping[str, Tensor]) -> Tensor:
        """``sum_k weights[k] * terms[k]`` with the current weights (0 for an empty dict)."""
        self._check_weights()
        unknown = sorted(set(terms) - set(TERMS))
        if unknown:
            raise ValueError(f"terms has unknown key(s) {unknown}; the terms are {', '.join(TERMS)}")
        result = torch.zeros(())
        for term, value in terms.items():
            result = result + self.weights[term] * value
        return result

    def extra_repr(self) -> str:
        return (
            f"weights={self.weights}, layer_map={self.layer_map!r}, pair_loss={self.pair_loss!r}, "
            f"pair_metric={self.pair_metric!r}, triplet_loss={self.triplet_loss!r}, window={self.window}"
        )


def _hidden_states(outputs: object, name: str) -> Sequence[Tensor]:
    hidden = outputs if isinstance(outputs, (tuple, list)) else getattr(outputs, "hidden_states", None)
    if hidden is None:
        raise ValueError(
            f"{name} has no hidden_states; call the model with output_hidden_states=True "
            f"(or pass the hidden_states tuple itself)"
        )
    if len(hidden) < 2:
        raise ValueError(
            f"{name}.hidden_states must hold the embedding output and at least one layer, got {len(hidden)} tensor(s)"
        )
    return hidden
