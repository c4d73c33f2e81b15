"""Contrastive pieces shared by CoDIR (and any instance-contrastive objective): InfoNCE, label-aware
negative sampling over a training set, and the momentum memory bank.

``info_nce_loss`` (van den Oord et al. 2018; Sun et al. 2020, Eq. 3): with every vector L2-normalised,

    loss = (1/B) Σ_b −log( exp(a_b·p_b/τ) / (exp(a_b·p_b/τ) + Σ_k exp(a_b·n_bk/τ)) )

computed as ``logsumexp([a·p, a·n_1, …, a·n_K] / τ) − a·p/τ`` so that no exponential overflows.

``sample_negatives``: for each anchor, K training-set rows drawn uniformly with replacement among the
rows whose label *differs* from the anchor's (classification: another class; regression: a label at
least ``min_label_distance`` away), so never the anchor itself.

``update_memory_bank``: ``row ← normalize(m·row + (1 − m)·new)`` for the rows of a batch (Wu et al.
2018's non-parametric memory, as CoDIR's official code uses it with m = 0.5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# Raw draws are integers in [0, 2**62): reducing one modulo M is biased by at most M / 2**62, i.e. uniform
# for any training set that fits in memory (a float32 uniform scaled by M would be biased by M / 2**24).
_DRAW_RANGE = 2**62


def _check_temperature(temperature: float, name: str = "temperature") -> float:
    t = float(temperature)
    if not (t > 0.0 and math.isfinite(t)):
        raise ValueError(f"{name} must be a finite number > 0 (CoDIR uses 0.07), got {temperature!r}")
    return t


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    # Half-precision logits divided by τ = 0.07 lose too many digits: compute in float32 at least.
    dtype = torch.promote_types(tensors[0].dtype, torch.float32)
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def info_nce_loss(anchor: Tensor, positive: Tensor, negatives: Tensor, temperature: float = 0.07) -> Tensor:
    """InfoNCE of each anchor against its positive and its own K negatives (formula in the module docstring).

    Args:
        anchor: ``[B, d]``; positive: ``[B, d]``; negatives: ``[B, K, d]`` with K >= 1. All are L2-normalised
            here (inputs need not be). Computed in float32 or wider.
        temperature: τ > 0.

    Returns:
        The mean over the B anchors, a scalar.
    """
    t = _check_temperature(temperature)
    if anchor.dim() != 2 or positive.shape != anchor.shape:
        raise ValueError(
            f"info_nce_loss needs anchor and positive of the same shape [B, d], got anchor {tuple(anchor.shape)} "
            f"and positive {tuple(positive.shape)}"
        )
    batch, width = anchor.shape
    if negatives.dim() != 3 or negatives.shape[0] != batch or negatives.shape[2] != width or negatives.shape[1] < 1:
        raise ValueError(
            f"info_nce_loss needs negatives of shape [B, K, d] = [{batch}, K >= 1, {width}], got {tuple(negatives.shape)}"
        )
    dtype = _compute_dtype(anchor, positive, negatives)
    a = F.normalize(anchor.to(dtype), dim=-1)
    p = F.normalize(positive.to(dtype), dim=-1)
    n = F.normalize(negatives.to(dtype), dim=-1)
    positive_logit = (a * p).sum(-1, keepdim=True) / t  # [B, 1]
    negative_logits = torch.einsum("bd,bkd->bk", a, n) / t  # [B, K]
    logits = torch.cat([positive_logit, negative_logits], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive_logit[:, 0]).mean()


def in_batch_info_nce_loss(anchor: Tensor, positive: Tensor, temperature: float = 0.07) -> Tensor:
    """InfoNCE with in-batch negatives: anchor b's positive is ``positive[b]``, its negatives are
    ``positive[j]`` for every j != b. Equal to ``info_nce_loss(anchor, positive, negatives)`` with those B − 1
    negatives, computed as a cross-entropy over the ``[B, B]`` similarity matrix (no ``[B, B−1, d]`` copy).

    Raises:
        ValueError: for B < 2 (an anchor needs at least one other example as a negative).
    """
    t = _check_temperature(temperature)
    if anchor.dim() != 2 or positive.shape != anchor.shape:
        raise ValueError(
            f"in_batch_info_nce_loss needs anchor and positive of the same shape [B, d], got {tuple(anchor.shape)} "
            f"and {tuple(positive.shape)}"
        )
    if anchor.shape[0] < 2:
        raise ValueError(
            f"in-batch contrastive loss needs a batch of at least 2 examples (the others are the negatives), got "
            f"B = {anchor.shape[0]}; raise the batch size"
        )
    dtype = _compute_dtype(anchor, positive)
    a = F.normalize(anchor.to(dtype), dim=-1)
    p = F.normalize(positive.to(dtype), dim=-1)
    logits = a @ p.T / t
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


class NegativeSampler:
    """Label-aware uniform negative sampling over a fixed training set (what ``sample_negatives`` does).

    The labels are sorted once; the rows eligible for an anchor with label y are then a prefix and a
    suffix of that order — labels ``<= y − δ`` and ``>= y + δ`` (regression) or ``< y`` and ``> y``
    (classification) — so a draw is one integer in ``[0, #eligible)`` mapped into prefix or suffix:
    O(B·K) per call however large the training set.

    Args:
        labels: ``[N]`` labels of the training set (row r has label ``labels[r]``).
        min_label_distance: ``None`` (classification): a negative has a different label. A number δ > 0
            (regression, e.g. 1.0 on STS-B's 0–5 scale): a negative's label differs by ``|Δ| >= δ``, up to
            a float-rounding tolerance of 1e-6 relative to the label scale.
    """

    def __init__(self, labels: Tensor, min_label_distance: float | None = None) -> None:
        if labels.dim() != 1 or labels.numel() == 0:
            raise ValueError(f"labels must be a non-empty 1-D tensor [N] of training-set labels, got shape {tuple(labels.shape)}")
        values = labels.detach().to("cpu", torch.float64)
        if not torch.isfinite(values).all():
            raise ValueError("labels contain NaN or infinite values; negatives are chosen by label, so every label must be finite")
        if min_label_distance is None:
            if labels.is_floating_point() and not torch.equal(values, values.round()):
                raise ValueError(
                    "float labels look like regression targets: pass min_label_distance (e.g. 1.0 for STS-B's 0–5 "
                    "scale) to say how far apart two labels must be for a negative"
                )
            self.tolerance = 0.0
        else:
            delta = float(min_label_distance)
            if not (delta > 0.0 and math.isfinite(delta)):
                raise ValueError(f"min_label_distance must be a finite number > 0 (e.g. 1.0 for STS-B), got {min_label_distance!r}")
            self.tolerance = 1e-6 * max(1.0, delta, float(values.abs().max()))
        self.min_label_distance = min_label_distance
        self.labels = values
        self.order = torch.argsort(values, stable=True)
        self.sorted_labels = values[self.order]

    @property
    def size(self) -> int:
        return self.labels.numel()

    def eligible_bounds(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(lo, hi)`` per anchor: the eligible rows are ``order[:lo]`` and ``order[hi:]``."""
        y = self.labels[index]
        if self.min_label_distance is None:
            lo = torch.searchsorted(self.sorted_labels, y, right=False)
            hi = torch.searchsorted(self.sorted_labels, y, right=True)
        else:
            delta = float(self.min_label_distance)
            lo = torch.searchsorted(self.sorted_labels, y - delta + self.tolerance, right=True)
            hi = torch.searchsorted(self.sorted_labels, y + delta - self.tolerance, right=False)
        return lo, hi

    def check_index(self, index: Tensor, name: str = "index") -> Tensor:
        if index.dim() != 1 or index.is_floating_point() or index.dtype == torch.bool:
            raise ValueError(f"{name} must be a 1-D integer tensor [B] of training-set rows, got {index.dtype} {tuple(index.shape)}")
        index = index.detach().to("cpu", torch.long)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.size):
            raise ValueError(
                f"{name} holds rows outside the training set of {self.size} examples (min {int(index.min())}, "
                f"max {int(index.max())}); rows must index the labels the sampler was built from"
            )
        return index

    def check_all_have_negatives(self) -> None:
        """Raise unless every row of the training set has at least one eligible negative."""
        self._eligible_counts(torch.arange(self.size))

    def _eligible_counts(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = self.eligible_bounds(index)
        counts = lo + (self.size - hi)
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():
            b = int(empty[0])
            rule = "a different label" if self.min_label_distance is None else f"a label at least {self.min_label_distance} away"
            raise ValueError(
                f"no negative example for row {int(index[b])} (label {float(self.labels[index[b]]):g}): no training "
                f"example has {rule}; the training set needs examples of more than one label"
                + ("" if self.min_label_distance is None else ", or lower min_label_distance")
            )
        return lo, hi, counts

    def sample(self, index: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``[B, k]`` rows: for each anchor ``index[b]``, k eligible rows uniformly with replacement."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (the number of negatives per anchor) must be an int >= 1, got {k!r}")
        index = self.check_index(index)
        lo, hi, counts = self._eligible_counts(index)
        draws = torch.randint(0, _DRAW_RANGE, (index.numel(), k), generator=generator) % counts[:, None]
        positions = torch.where(draws < lo[:, None], draws, draws + (hi - lo)[:, None])
        return self.order[positions]


def sample_negatives(
    labels: Tensor, index: Tensor, k: int, generator: torch.Generator | None = None, *, min_label_distance: float | None = None
) -> Tensor:
    """For each anchor row ``index[b]``, ``k`` rows drawn uniformly with replacement among the rows whose label
    differs from ``labels[index[b]]`` — so never the anchor and never an example of the anchor's label.

    Args:
        labels: ``[N]`` training-set labels. index: ``[B]`` anchor rows. k: negatives per anchor (>= 1; drawn
            with replacement, so fewer eligible rows than k is fine).
        generator: a CPU ``torch.Generator`` for reproducible draws (``None``: the global RNG).
        min_label_distance: ``None`` for class labels ("different" = another class). For regression labels,
            δ > 0: "different" means ``|Δ| >= δ`` (CoDIR on STS-B: 1.0 on the 0–5 scale).

    Returns:
        ``LongTensor [B, k]`` of rows (on the CPU).

    Raises:
        ValueError: an anchor has no eligible row, float labels without ``min_label_distance``, bad shapes.
    """
    return NegativeSampler(labels, min_label_distance).sample(index, k, generator)


def first_occurrences(rows: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value of ``rows`` (ascending by value)."""
    unique, inverse = torch.unique(rows, return_inverse=True)
    positions = torch.arange(rows.numel(), device=rows.device)
    first = torch.full((unique.numel(),), rows.numel(), dtype=torch.long, device=rows.device)
    return first.scatter_reduce(0, inverse, positions, reduce="amin")


@torch.no_grad()
def update_memory_bank(bank: Tensor, rows: Tensor, values: Tensor, momentum: float) -> None:
    """In place: ``bank[r] ← normalize(m·bank[r] + (1 − m)·values[i])`` for each ``r = rows[i]``.

    A row listed twice (a distributed sampler pads the last batch with repeats) is updated once, from its
    first occurrence, so the result does not depend on scatter order.
    """
    m = float(momentum)
    if not 0.0 <= m < 1.0:
        raise ValueError(f"momentum must lie in [0, 1) (CoDIR uses 0.5), got {momentum!r}")
    if rows.dim() != 1 or values.dim() != 2 or values.shape[0] != rows.shape[0] or values.shape[1] != bank.shape[1]:
        raise ValueError(
            f"update_memory_bank needs rows [B] and values [B, {bank.shape[1]}], got {tuple(rows.shape)} and {tuple(values.shape)}"
        )
    rows = rows.to(bank.device, torch.long)
    keep = first_occurrences(rows)
    rows, values = rows[keep], values[keep.to(values.device)].to(bank.device, bank.dtype)
    bank[rows] = F.normalize(m * bank[rows] + (1.0 - m) * values, dim=-1)
