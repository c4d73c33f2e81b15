"""Relation matrices of Contextual Knowledge Distillation (CKD; Park, Kim & Yang, EMNLP 2021).

CKD does not match hidden states directly; it matches *relations* between them, which makes
teacher and student comparable even when their widths differ. There are two families:

* word relations (WR): between the tokens of one sequence, within one layer;
* layer-transforming relations (LTR): between the mapped layers, for one token.

and two kinds of relation:

* pair-wise:    cos(x_i, x_j), or the RKD-style normalised Euclidean distance;
* triplet-wise: the angle at an anchor, psi(a, b, c) = cos(x_b - x_a, x_c - x_a).

Throughout, cos(x, y) = x.y / (max(|x|, eps) * max(|y|, eps)) with eps = 1e-12.

This module holds the relations themselves. The four ``*_relation`` functions return them for
one layer / token / anchor with NaN wherever a relation is undefined, for inspection and plots.
The building blocks above them (``centred_gram``, ``cosines_from_gram``,
``angles_from_sq_distances``...) are what the losses in ``ckdlab.objectives.ckd`` use, so a plot
shows exactly the numbers a loss compares.

Numerics. Angles are computed from Gram matrices rather than from explicit difference vectors
(which cost memory proportional to L^2 * d or L^3): with D2[i, j] = |x_i - x_j|^2, the law of
cosines gives

    psi(a, b, c) = (D2[a, b] + D2[a, c] - D2[b, c]) / (2 * sqrt(D2[a, b]) * sqrt(D2[a, c])).

The Gram form loses precision by cancellation when the states share a large common component
(hidden states of BERT do), so it is guarded as follows:

1. states are centred on the mean of the valid positions before the Gram matrix is taken
   (distances and angles do not depend on a common translation);
2. the arithmetic runs in float32 at least (float64 stays float64), with autocast disabled,
   so bf16/fp16 inputs under autocast do not drop the Gram matrix to half precision;
3. squared distances are clamped at >= 0;
4. a difference whose squared length is at most ``tol * (|c_a|^2 + |c_b|^2)`` (c = centred
   state, ``tol = 8 * sqrt(d) * machine_eps``, i.e. below the rounding error of the Gram form;
   2.6e-5 in float32 at d = 768, so differences shorter than ~0.7% of the tokens' distance from
   their centroid) or at most eps^2 counts as a zero vector. By the
   definition of cos above, a zero vector has cosine 0 with everything, so such angles are
   exactly 0 and carry no gradient, instead of being rounding noise divided by rounding noise.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

EPS = 1e-12
METRICS = ("cos", "l2")


# --------------------------------------------------------------------------- validation helpers


def _check_option(name: str, value: object, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}")
    return value


def _check_mask(attention_mask: Tensor, batch: int, length: int, where: str) -> Tensor:
    """The mask as bool ``[B, L]``; raises ValueError unless it is 0/1 of the states' shape."""
    if not isinstance(attention_mask, Tensor):
        raise ValueError(
            f"{where}: attention_mask must be a tensor of shape [B, L], got {type(attention_mask).__name__}"
        )
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(
            f"{where}: attention_mask has shape {tuple(attention_mask.shape)} but the states have "
            f"[B, L] = [{batch}, {length}]; pass the mask that was given to the models"
        )
    if attention_mask.dtype != torch.bool:
        if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
            raise ValueError(f"{where}: attention_mask must contain only 0 and 1 (1 = real token, 0 = padding)")
        attention_mask = attention_mask != 0
    return attention_mask


def _check_states(states: Tensor, where: str) -> None:
    if not isinstance(states, Tensor) or states.dim() != 3:
        shape = tuple(states.shape) if isinstance(states, Tensor) else type(states).__name__
        raise ValueError(f"{where}: states must be a tensor [B, L, d], got {shape}")
    if not states.is_floating_point():
        raise ValueError(f"{where}: states must be floating point, got {states.dtype}")


def _check_index(name: str, value: int, size: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
        raise ValueError(f"{name}={value!r} is out of range; {what} has valid indices 0..{size - 1}")
    return value


def _stack_layers(layer_states: Sequence[Tensor], where: str) -> Tensor:
    """``n`` tensors ``[B, L, d]`` -> one ``[B, L, n, d]``."""
    if isinstance(layer_states, Tensor) or len(layer_states) == 0:
        raise ValueError(
            f"{where}: layer_states must be a non-empty sequence of [B, L, d] tensors, one per mapped layer"
        )
    for k, h in enumerate(layer_states):
        _check_states(h, f"{where}[{k}]")
        if h.shape != layer_states[0].shape:
            raise ValueError(
                f"{where}: all layers must have the same shape [B, L, d]; layer 0 is "
                f"{tuple(layer_states[0].shape)}, layer {k} is {tuple(h.shape)}"
            )
    return torch.stack(list(layer_states), dim=2)


# --------------------------------------------------------------------------- numeric building blocks


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64; everything else (bf16, fp16, float32) is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast off, so matmuls on float32 inputs stay float32 inside a bf16/fp16 autocast region."""
    if device.type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class CentredGram(NamedTuple):
    """One Gram matrix from which every relation of a set of states follows.

    ``gram[i, j] = c_i.c_j`` with ``c_i = x_i - mu`` (``mu`` the mean of the valid positions,
    a constant), ``offset[i] = c_i.mu`` and ``mean_sq = mu.mu``, so that
    ``x_i.x_j = gram[i, j] + offset[i] + offset[j] + mean_sq`` and
    ``|x_i - x_j|^2 = gram[i, i] + gram[j, j] - 2 gram[i, j]``. Computing it once per layer serves
    the pair-wise (cosine or distance) and the triplet-wise (angle) relations alike.
    """

    gram: Tensor  # [..., n, n]
    offset: Tensor  # [..., n]
    mean_sq: Tensor  # [..., 1]
    width: int  # d, for the rounding tolerance of coincident()


def centred_gram(x: Tensor, valid: Tensor | None = None, *, track_mean: bool = False) -> CentredGram:
    """The :class:`CentredGram` of ``x`` ``[..., n, d]`` (float32 at least).

    Rows and columns of invalid positions (``valid`` bool, broadcastable to ``[..., n]``; None =
    all valid) are zeroed, so padding may hold any finite garbage (non-finite values would reach
    the mean through a 0 weight and give NaN).

    By default the mean is treated as a constant. That is exact, not an approximation: distances
    depend only on differences x_i - x_j, and ``gram + offset_i + offset_j + mean_sq`` equals
    ``x_i.x_j`` for any constant ``mu``, so gradients are those of the plain formulas. Relations of
    the *centred* states themselves (``cosines_from_gram(g, centred=True)``) do depend on ``mu``;
    for those, ``track_mean=True`` keeps the mean in the autograd graph.
    """
    x = x.to(compute_dtype(x))
    with torch.set_grad_enabled(track_mean and torch.is_grad_enabled()):
        if valid is None:
            mean = x.mean(dim=-2, keepdim=True)
        else:
            weight = valid.to(x.dtype).unsqueeze(-2)  # [..., 1, n]: a matmul, no [..., n, d] temporary
            mean = (weight @ x) / weight.sum(dim=-1, keepdim=True).clamp(min=1)
    centred = x - mean
    gram = _SymmetricGram.apply(centred) if centred.requires_grad else centred @ centred.transpose(-1, -2)
    offset = (centred @ mean.transpose(-1, -2)).squeeze(-1)
    if valid is not None:
        # Zeroing the [n, n] results rather than the [n, d] states is cheaper for n < d, and
        # identical: row i of the Gram and offset_i depend on c_i alone.
        gram = gram.masked_fill(~(valid.unsqueeze(-1) & valid.unsqueeze(-2)), 0.0)
        offset = offset.masked_fill(~valid, 0.0)
    return CentredGram(gram, offset, (mean * mean).sum(dim=-1), x.shape[-1])


class _SymmetricGram(torch.autograd.Function):
    """``G = c c^T`` with the backward ``dc = (g + g^T) c``: one matrix product instead of autograd's two."""

    @staticmethod
    def forward(ctx, centred: Tensor) -> Tensor:
        ctx.save_for_backward(centred)
        return centred @ centred.transpose(-1, -2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (centred,) = ctx.saved_tensors
        return (grad + grad.transpose(-1, -2)) @ centred


def cosines_from_gram(g: CentredGram, centred: bool = False) -> Tensor:
    """``cos(x_i, x_j) = x_i.x_j / (max(|x_i|, eps) max(|x_j|, eps))`` ``[..., n, n]``.

    ``centred=True``: the cosines of the centred states ``c_i = x_i - mu`` instead (``g.gram`` alone).
    """
    if centred:
        dots = g.gram
    else:
        dots = g.gram + g.offset.unsqueeze(-1) + g.offset.unsqueeze(-2) + g.mean_sq.unsqueeze(-1)
    # sqrt(max(|x|^2, eps^2)) = max(|x|, eps), and the clamp keeps sqrt's backward away from 0.
    norms = torch.sqrt(dots.diagonal(dim1=-2, dim2=-1).clamp(min=EPS**2))
    return dots / (norms.unsqueeze(-1) * norms.unsqueeze(-2))


def squared_distances_from_gram(g: CentredGram) -> tuple[Tensor, Tensor]:
    """``(D2, sq)``: ``D2[i, j] = |c_i|^2 + |c_j|^2 - 2 c_i.c_j = |x_i - x_j|^2`` clamped at >= 0,
    and the centred squared norms ``sq = |c_i|^2`` (the scale used by :func:`coincident`)."""
    sq = g.gram.diagonal(dim1=-2, dim2=-1)
    d2 = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2.0 * g.gram).clamp(min=0.0)
    return d2, sq


def coincident(d2: Tensor, sq: Tensor, width: int) -> Tensor:
    """Bool ``[..., n, n]``: pairs whose difference is indistinguishable from a zero vector.

    True where ``D2 <= max(tol * (sq_i + sq_j), eps^2)`` with ``tol = 8 sqrt(d) * machine_eps``:
    below that, the Gram-form squared distance is dominated by rounding (its error grows like
    ``sqrt(d) * machine_eps * |c|^2``). The diagonal is always True.
    """
    tol = 8.0 * math.sqrt(max(width, 1)) * torch.finfo(d2.dtype).eps
    return d2 <= torch.clamp(tol * (sq.unsqueeze(-1) + sq.unsqueeze(-2)), min=EPS**2)


def safe_sqrt(d2: Tensor, zero: Tensor) -> Tensor:
    """``sqrt(d2)`` where ``zero`` is False, exactly 0 (with zero gradient) where it is True.

    Filling before the sqrt keeps its backward away from 0, where it would be infinite.
    """
    return torch.sqrt(d2.masked_fill(zero, 1.0)).masked_fill(zero, 0.0)


def inverse_lengths(d2: Tensor, usable: Tensor) -> Tensor:
    """``R[..., a, b] = 1 / sqrt(2 * D2[a, b])`` where ``usable``, else 0.

    With these, ``R[a, b] * R[a, c] = 1 / (2 |x_b - x_a| |x_c - x_a|)``, the denominator of the
    law of cosines; a zero ``R`` makes every angle that uses the pair exactly 0.
    """
    return torch.rsqrt(2.0 * d2.masked_fill(~usable, 0.5)).masked_fill(~usable, 0.0)


def angles_from_sq_distances(d2: Tensor, inv: Tensor, anchors: int | slice | None = None) -> Tensor:
    """Angles at anchors by the law of cosines.

    ``psi[..., a, b, c] = (D2[a, b] + D2[a, c] - D2[b, c]) * R[a, b] * R[a, c]``
    ``                  = cos(x_b - x_a, x_c - x_a)``  (with ``R`` from :func:`inverse_lengths`).

    Args:
        d2: ``[..., n, n]`` squared distances.
        inv: ``[..., n, n]`` inverse lengths ``R`` (0 for pairs to leave out).
        anchors: an int (result ``[..., n, n]``), a slice or None = all (result ``[..., A, n, n]``).
    """
    if isinstance(anchors, int):
        return angles_from_sq_distances(d2, inv, slice(anchors, anchors + 1)).squeeze(-3)
    anchors = slice(None) if anchors is None else anchors
    x = d2[..., anchors, :]
    r = inv[..., anchors, :]
    numerator = x.unsqueeze(-1) + x.unsqueeze(-2) - d2.unsqueeze(-3)
    return numerator * r.unsqueeze(-1) * r.unsqueeze(-2)


def normalised_distances_from_gram(g: CentredGram, valid: Tensor | None = None) -> Tensor:
    """RKD-style distances ``|x_i - x_j| / mu`` with ``mu`` the mean distance over valid pairs i != j.

    ``mu`` is taken per leading index (per sequence, or per token for LTR) and floored at eps, so
    a set of identical states gives all-zero distances rather than 0/0.
    """
    d2, sq = squared_distances_from_gram(g)
    dist = safe_sqrt(d2, coincident(d2, sq, g.width))
    n = d2.shape[-1]
    pairs = ~torch.eye(n, dtype=torch.bool, device=d2.device)
    if valid is not None:
        pairs = pairs & valid.unsqueeze(-1) & valid.unsqueeze(-2)
    pairs = pairs.expand_as(dist)
    mean = dist.masked_fill(~pairs, 0.0).sum(dim=(-2, -1)) / pairs.sum(dim=(-2, -1)).clamp(min=1)
    return dist / mean.clamp(min=EPS)[..., None, None]


def pair_relation_from_gram(g: CentredGram, valid: Tensor | None, metric: str, centred: bool = False) -> Tensor:
    """Pair-wise relation ``[..., n, n]`` under ``metric`` 'cos' or 'l2'.

    ``centred=True`` takes cosines of the centred states (see :func:`cosines_from_gram`); distances
    do not depend on centring. Entries that involve invalid positions are finite but meaningless;
    callers mask them.
    """
    _check_option("metric", metric, METRICS)
    if metric == "cos":
        return cosines_from_gram(g, centred)
    return normalised_distances_from_gram(g, valid)


def pair_relation_matrix(x: Tensor, valid: Tensor | None, metric: str, centred: bool = False) -> Tensor:
    """Pair-wise relation ``[..., n, n]`` of ``x`` ``[..., n, d]`` under ``metric`` 'cos' or 'l2'."""
    return pair_relation_from_gram(centred_gram(x, valid), valid, metric, centred)


def angle_inputs_from_gram(g: CentredGram, usable: Tensor) -> tuple[Tensor, Tensor]:
    """``(D2, R)`` for :func:`angles_from_sq_distances`: squared distances and inverse lengths that
    are 0 outside ``usable`` and for coincident pairs."""
    d2, sq = squared_distances_from_gram(g)
    with torch.no_grad():
        keep = usable & ~coincident(d2, sq, g.width)
    return d2, inverse_lengths(d2, keep)


def angle_inputs(x: Tensor, usable: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`angle_inputs_from_gram` of the states ``x`` ``[..., n, d]``."""
    return angle_inputs_from_gram(centred_gram(x, valid), usable)


# --------------------------------------------------------------------------- public relations (for inspection)


def wr_pair_relation(states: Tensor, attention_mask: Tensor, metric: str = "cos", centred: bool = False) -> Tensor:
    """Word-relation pair matrix of one layer: ``[B, L, L]``.

    ``metric='cos'``: ``cos(h_i, h_j)``; ``metric='l2'``: ``|h_i - h_j|`` divided by its mean over
    the valid pairs i != j of the sequence. ``centred=True``: the cosines of ``h_i - mu`` with ``mu``
    the mean of the sequence's valid states (distances are unchanged by it). Rows and columns of
    padded positions are NaN.
    """
    _check_states(states, "wr_pair_relation")
    if not isinstance(centred, bool):
        raise ValueError(f"centred={centred!r} must be True or False")
    batch, length, _ = states.shape
    valid = _check_mask(attention_mask, batch, length, "wr_pair_relation").to(states.device)
    with full_precision(states.device):
        rel = pair_relation_matrix(states, valid, metric, centred)
    return rel.masked_fill(~(valid.unsqueeze(-1) & valid.unsqueeze(-2)), float("nan"))


def wr_triplet_relation(states: Tensor, attention_mask: Tensor, anchor: int) -> Tensor:
    """Word-relation angles at one anchor token: ``psi[b, j, k] = cos(h_j - h_anchor, h_k - h_anchor)``.

    Returns ``[B, L, L]``; NaN where j or k is padded, j == anchor, k == anchor or j == k, and on
    the whole matrix of a sequence in which the anchor itself is padding.
    """
    _check_states(states, "wr_triplet_relation")
    batch, length, _ = states.shape
    valid = _check_mask(attention_mask, batch, length, "wr_triplet_relation").to(states.device)
    _check_index("anchor", anchor, length, "the sequence")
    eye = torch.eye(length, dtype=torch.bool, device=states.device)
    usable = valid.unsqueeze(-1) & valid.unsqueeze(-2) & ~eye
    with full_precision(states.device):
        d2, inv = angle_inputs(states, usable, valid)
        psi = angles_from_sq_distances(d2, inv, anchor)
    return psi.masked_fill(~_triplet_defined(usable[:, anchor, :], length), float("nan"))


def ltr_pair_relation(
    layer_states: Sequence[Tensor], attention_mask: Tensor, token: int, metric: str = "cos"
) -> Tensor:
    """Layer-transforming pair matrix of one token across the ``n`` given layers: ``[B, n, n]``.

    ``metric='cos'``: ``cos(h^l, h^m)`` of the token's states in layers l and m; ``'l2'``: their
    distance divided by its mean over l != m. All NaN for sequences in which the token is padding.
    """
    stacked = _stack_layers(layer_states, "ltr_pair_relation")
    batch, length = stacked.shape[:2]
    valid = _check_mask(attention_mask, batch, length, "ltr_pair_relation").to(stacked.device)
    _check_index("token", token, length, "the sequence")
    with full_precision(stacked.device):
        rel = pair_relation_matrix(stacked[:, token], None, metric)
    return rel.masked_fill(~valid[:, token, None, None], float("nan"))


def ltr_triplet_relation(
    layer_states: Sequence[Tensor], attention_mask: Tensor, token: int, anchor_layer: int
) -> Tensor:
    """Layer-transforming angles of one token at one anchor layer l: ``[B, n, n]``.

    ``psi[b, m, k] = cos(h^m - h^l, h^k - h^l)`` for the token's states; NaN where m == l,
    k == l or m == k, and everywhere for sequences in which the token is padding.
    """
    stacked = _stack_layers(layer_states, "ltr_triplet_relation")
    batch, length, n = stacked.shape[:3]
    valid = _check_mask(attention_mask, batch, length, "ltr_triplet_relation").to(stacked.device)
    _check_index("token", token, length, "the sequence")
    _check_index("anchor_layer", anchor_layer, n, f"the list of {n} layers")
    eye = torch.eye(n, dtype=torch.bool, device=stacked.device)
    usable = (~eye).expand(batch, n, n) & valid[:, token, None, None]
    with full_precision(stacked.device):
        d2, inv = angle_inputs(stacked[:, token], usable)
        psi = angles_from_sq_distances(d2, inv, anchor_layer)
    return psi.masked_fill(~_triplet_defined(usable[:, anchor_layer, :], n), float("nan"))


def _triplet_defined(partners: Tensor, n: int) -> Tensor:
    """``[B, n, n]`` True where both j and k are usable partners of the anchor and j != k."""
    eye = torch.eye(n, dtype=torch.bool, device=partners.device)
    return partners.unsqueeze(-1) & partners.unsqueeze(-2) & ~eye
