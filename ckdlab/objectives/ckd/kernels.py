"""CKD kernels: the four relation terms computed on the Grams of all mapped layers at once.

The K mapped layer pairs are stacked: the WR Grams are one ``[K, B, L, L]`` tensor
(:func:`wr_gram`), the LTR Grams one ``[B, L, K, K]`` (:func:`ltr_gram`), so a term is a fixed,
small number of tensor operations however many pairs the layer map has, instead of one set per
pair. On CPU the WR kernels take the stack in pieces of about 2 MiB per tensor
(:data:`CPU_CHUNK_ELEMENTS`): one piece for small batches, a few for large ones, whose tensors
would otherwise fall out of the cache. Few operations matter beyond Python overhead: on a CPU each
operation above torch's grain size is an OpenMP parallel region, and on oversubscribed cores each
region can wait a scheduler time slice (see :mod:`ckdlab.objectives.ckd.threads`).

Each ``*_sum`` kernel returns ``(sum, count)``: the loss summed over its entries and the number of
entries it averages over, so callers can pool layers (``CKDLoss``) or report them one by one
(``relation_fidelity``, by slicing the stacked Grams). Teacher relations are computed without
gradient; formulas and float32 guards are in :mod:`ckdlab.objectives.relations`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ckdlab.objectives.ckd.angle_blocks import AngleDivergence
from ckdlab.objectives.relations import (
    CentredGram,
    angle_inputs_from_gram,
    angles_from_sq_distances,
    centred_gram,
    compute_dtype,
    pair_relation_from_gram,
)

PAIR_LOSSES = ("kl", "mse", "huber")
TRIPLET_LOSSES = ("mse", "huber")

# Entries per [k, B, L, L] tensor when the WR kernels walk the stacked layers on CPU. One tensor
# over all K layers is slower once it leaves the cache (measured at B = 32, L = 128, 7 layers, one
# thread, all-triplet forward + backward: 845 ms in one piece, 705 ms in pieces of 2^19 entries,
# 665 ms layer by layer in the old loop, which however paid K times the operations at small B, L).
# 2^19 float32 entries are 2 MiB: small batches still take all layers in one piece.
CPU_CHUNK_ELEMENTS = 2**19


# --------------------------------------------------------------------------- Grams


def wr_gram(states: Sequence[Tensor], valid: Tensor, centred: bool = False) -> CentredGram:
    """Centred Grams ``[K, B, L, L]`` of the K layers ``[B, L, d]``.

    The Grams are taken layer by layer and then stacked: stacking the ``[B, L, d]`` states instead
    would copy all of them (and their centred versions) at once, more peak memory for no fewer
    large operations. ``centred`` keeps the per-(layer, sequence) mean in the graph: centred
    cosines depend on it.
    """
    parts = [centred_gram(h, valid, track_mean=centred) for h in states]
    return CentredGram(*(torch.stack([getattr(g, field) for g in parts]) for field in ("gram", "offset", "mean_sq")),
                       parts[0].width)


@torch.no_grad()
def teacher_wr_gram(states: Sequence[Tensor], valid: Tensor) -> CentredGram:
    return wr_gram([t.detach() for t in states], valid)


def ltr_states(states: Sequence[Tensor], valid: Tensor, centred: bool) -> Tensor:
    """The K layers stacked per token, ``[B, L, K, d]`` (float32 at least).

    ``centred``: each layer's states minus that layer's mean over the sequence's valid tokens,
    ``c_i^l = h_i^l - (1/|V|) sum_{j in V} h_j^l``, with the mean in the graph.
    """
    x = torch.stack(list(states), dim=2)
    x = x.to(compute_dtype(x))
    if centred:
        batch, length, layers, width = x.shape
        weight = valid.to(x.dtype).unsqueeze(1)  # [B, 1, L]: one bmm, no [B, L, K, d] temporary
        mean = (weight @ x.reshape(batch, length, layers * width)) / weight.sum(dim=-1, keepdim=True).clamp(min=1)
        x = x - mean.view(batch, 1, layers, width)
    return x


def ltr_gram(stacked: Tensor, valid: Tensor) -> CentredGram:
    """Per-token Grams ``[B, L, K, K]`` across the K stacked layers ``[B, L, K, d]``."""
    return centred_gram(stacked, valid.unsqueeze(-1).expand(-1, -1, stacked.shape[2]))


@torch.no_grad()
def teacher_ltr_gram(states: Sequence[Tensor], valid: Tensor, centred: bool) -> CentredGram:
    return ltr_gram(ltr_states([t.detach() for t in states], valid, centred), valid)


def layer_slice(g: CentredGram, layers: slice) -> CentredGram:
    """Some layer pairs of a stacked WR Gram, still stacked (``[k, B, L, L]``)."""
    return CentredGram(g.gram[layers], g.offset[layers], g.mean_sq[layers], g.width)


def layer_chunks(g: CentredGram) -> list[CentredGram]:
    """The stacked layers in pieces of about :data:`CPU_CHUNK_ELEMENTS` entries on CPU; one piece elsewhere.

    ``split`` rather than slicing: its backward is one concatenation, where each slice's backward
    would write its gradient into a zero tensor of the whole stack.
    """
    layers, per_layer = g.gram.shape[0], g.gram[0].numel()
    step = max(1, CPU_CHUNK_ELEMENTS // max(per_layer, 1)) if g.gram.device.type == "cpu" else layers
    if step >= layers:
        return [g]
    pieces = zip(g.gram.split(step), g.offset.split(step), g.mean_sq.split(step))
    return [CentredGram(gram, offset, mean_sq, g.width) for gram, offset, mean_sq in pieces]


# --------------------------------------------------------------------------- pair-wise


def pointwise(diff: Tensor, loss: str) -> Tensor:
    """Per-entry loss of ``diff = student - teacher``: ``diff^2`` or smooth L1 with beta = 1."""
    if loss == "mse":
        return diff * diff
    return F.smooth_l1_loss(diff, torch.zeros_like(diff), reduction="none", beta=1.0)


def pair_divergence(rel_t: Tensor, rel_s: Tensor, pairs: Tensor, loss: str, metric: str,
                    temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(sum, count)`` of the pair loss over rows ``[..., anchor, :]`` restricted to ``pairs``.

    ``pairs`` broadcasts against the trailing dimensions of the relations (leading ones are
    stacked layers).

    kl:        sum over anchors of sum_j p_j (log p_j - log q_j), p/q = softmax over the anchor's
               valid j of the logits ``sign * r / temperature`` (sign = -1 for 'l2' distances);
               count = anchors with >= 1 valid j.
    mse/huber: sum over valid (anchor, j) of loss(rel_s - rel_t); count = number of such entries.
    """
    copies = rel_s.numel() // pairs.numel()
    if loss == "kl":
        scale = (1.0 if metric == "cos" else -1.0) / temperature
        # A finite fill, not -inf: an anchor with no valid j must give a finite (ignored) row.
        fill = torch.finfo(rel_s.dtype).min
        log_p = torch.log_softmax((rel_t * scale).masked_fill(~pairs, fill), dim=-1)
        log_q = torch.log_softmax((rel_s * scale).masked_fill(~pairs, fill), dim=-1)
        terms = (log_p.exp() * (log_p - log_q)).masked_fill(~pairs, 0.0)
        return terms.sum(), pairs.any(dim=-1).sum() * copies
    diff = (rel_s - rel_t).masked_fill(~pairs, 0.0)
    return pointwise(diff, loss).sum(), pairs.sum() * copies


def wr_pair_sum(g_t: CentredGram, g_s: CentredGram, valid: Tensor, loss: str, metric: str,
                temperature: float = 1.0, centred: bool = False) -> tuple[Tensor, Tensor]:
    """WR pair-wise loss over the stacked layers: anchors i and partners j != i, both valid."""
    length = valid.shape[1]
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    pairs = valid.unsqueeze(-1) & valid.unsqueeze(-2) & ~eye
    total, count = 0.0, 0
    for piece_t, piece_s in zip(layer_chunks(g_t), layer_chunks(g_s)):
        with torch.no_grad():
            rel_t = pair_relation_from_gram(piece_t, valid, metric, centred)
        rel_s = pair_relation_from_gram(piece_s, valid, metric, centred)
        part, n = pair_divergence(rel_t, rel_s, pairs, loss, metric, temperature)
        total, count = total + part, count + n
    return total, count


def ltr_pair_sum(g_t: CentredGram, g_s: CentredGram, valid: Tensor, loss: str, metric: str,
                 temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """LTR pair-wise loss: for each valid token, anchor layer l and partner layers m != l."""
    n = g_t.gram.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=valid.device)
    pairs = valid[:, :, None, None] & ~eye
    layer_valid = valid.unsqueeze(-1).expand(-1, -1, n)
    with torch.no_grad():
        rel_t = pair_relation_from_gram(g_t, layer_valid, metric)
    rel_s = pair_relation_from_gram(g_s, layer_valid, metric)
    return pair_divergence(rel_t, rel_s, pairs, loss, metric, temperature)


# --------------------------------------------------------------------------- triplet-wise


def wr_triplet_sum(g_t: CentredGram, g_s: CentredGram, valid: Tensor, loss: str, window: int | None,
                   block_elements: int) -> tuple[Tensor, Tensor]:
    """WR angle loss over the stacked layers; count = triplets per layer x layers."""
    length = valid.shape[1]
    positions = torch.arange(length, device=valid.device)
    usable = valid.unsqueeze(-1) & valid.unsqueeze(-2) & (positions[:, None] != positions[None, :])
    if window is not None:
        usable &= (positions[:, None] - positions[None, :]).abs() <= window
    partners = usable.sum(dim=-1)
    count = (partners * (partners - 1)).sum() * g_s.gram.shape[0]
    total = 0.0
    for piece_t, piece_s in zip(layer_chunks(g_t), layer_chunks(g_s)):
        with torch.no_grad():
            d2_t, inv_t = angle_inputs_from_gram(piece_t, usable)
        d2_s, inv_s = angle_inputs_from_gram(piece_s, usable)
        if loss == "mse":
            total = total + angle_squared_error(d2_s, inv_s, d2_t, inv_t)
        else:
            # The block walk takes sequences as rows: (layer, sequence) pairs are just more rows.
            rows = (-1, length, length)
            total = total + AngleDivergence.apply(d2_s.reshape(rows), d2_t.reshape(rows), inv_s.detach().reshape(rows),
                                                  inv_t.reshape(rows), loss, window, block_elements)
    return total, count


def angle_inner(p1: Tensor, r1: Tensor, d1: Tensor, p2: Tensor, r2: Tensor, d2: Tensor, same: bool) -> Tensor:
    """``sum over (sequence, a, b, c) of psi_1(a, b, c) * psi_2(a, b, c)``, b == c included, by matmuls.

    For one anchor a (row a of each ``[..., L, L]`` input) the angle matrix over (b, c) is
    ``Psi = p r^T + r p^T - diag(r) D diag(r)`` with ``r = R[a, :]``, ``p = (R * D)[a, :]``, so

        <Psi_1, Psi_2> = 2 [(p1.p2)(r1.r2) + (p1.r2)(r1.p2)] - 2 (p1*r2)^T D2 w - 2 (p2*r1)^T D1 w
                         + w^T (D1 * D2) w,      w = r1 * r2.

    Each quadratic form is one batched ``[L, L] @ [L, L]`` product for all anchors (and all
    stacked layers) at once. ``same`` (model 1 is model 2) skips the product that then repeats.
    """
    w = r1 * r2
    rank_one = (p1 * p2).sum(-1) * w.sum(-1) + (p1 * r2).sum(-1) * (r1 * p2).sum(-1)
    first = (((p1 * r2) @ d2) * w).sum(-1)
    second = first if same else (((p2 * r1) @ d1) * w).sum(-1)
    both = ((w @ (d1 * d2)) * w).sum(-1)
    return (2.0 * (rank_one - first - second) + both).sum()


def angle_squared_error(d2_s: Tensor, inv_s: Tensor, d2_t: Tensor, inv_t: Tensor) -> Tensor:
    """``sum over triplets (b != c) of (psi_s - psi_t)^2`` in O(B L^2) memory, with plain autograd.

    ``|Psi_s - Psi_t|^2 = <Psi_s, Psi_s> + <Psi_t, Psi_t> - 2 <Psi_s, Psi_t>`` per anchor (see
    :func:`angle_inner`), minus the b == c entries, ``psi(a, b, b) = 2 R[a, b]^2 D[a, b]`` (1 for
    a usable pair, 0 for a left-out one). Matrix products replace the L^3 element-wise passes
    (2-6x faster on CPU at L = 64-128). The expansion subtracts sums of size |Psi|^2 to get
    |Psi_s - Psi_t|^2, so in float32 the result carries an extra relative error of about
    eps * |Psi|^2 / |Psi_s - Psi_t|^2 (measured 5e-6 on random states); float64 inputs stay float64.
    """
    p_s, p_t = inv_s * d2_s, inv_t * d2_t
    full = (
        angle_inner(p_s, inv_s, d2_s, p_s, inv_s, d2_s, same=True)
        + angle_inner(p_t, inv_t, d2_t, p_t, inv_t, d2_t, same=True)
        - 2.0 * angle_inner(p_s, inv_s, d2_s, p_t, inv_t, d2_t, same=False)
    )
    same_partner = 2.0 * (p_s * inv_s - p_t * inv_t)
    return full - same_partner.square().sum()


def ltr_triplet_sum(g_t: CentredGram, g_s: CentredGram, valid: Tensor, loss: str) -> tuple[Tensor, Tensor]:
    """LTR angle loss; the per-token tensors are ``[K, K, K]`` (343 entries for K = 7): plain autograd."""
    n = g_t.gram.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=valid.device)
    usable = valid[:, :, None, None] & ~eye
    defined = usable.unsqueeze(-1) & usable.unsqueeze(-2) & ~eye
    with torch.no_grad():
        psi_t = angles_from_sq_distances(*angle_inputs_from_gram(g_t, usable))
    psi_s = angles_from_sq_distances(*angle_inputs_from_gram(g_s, usable))
    total = pointwise((psi_s - psi_t).masked_fill(~defined, 0.0), loss).sum()
    return total, valid.sum() * (n * (n - 1) * (n - 2))
