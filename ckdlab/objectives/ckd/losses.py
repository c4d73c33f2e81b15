"""The four CKD losses as functions of per-layer hidden states, and their argument checks.

Each function validates its inputs, computes the teacher's relations without gradient, and runs
the student's side through :func:`ckdlab.objectives.ckd.threads.run_scoped` (``threads`` CPU
threads, default 1; None keeps torch's setting). Definitions: :mod:`ckdlab.objectives.ckd`.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

from torch import Tensor

from ckdlab.objectives.ckd.angle_blocks import check_block_elements
from ckdlab.objectives.ckd.kernels import (
    PAIR_LOSSES,
    TRIPLET_LOSSES,
    ltr_gram,
    ltr_pair_sum,
    ltr_states,
    ltr_triplet_sum,
    teacher_ltr_gram,
    teacher_wr_gram,
    wr_gram,
    wr_pair_sum,
    wr_triplet_sum,
)
from ckdlab.objectives.ckd.threads import KERNEL_THREADS, check_threads, kernel_threads, run_scoped
from ckdlab.objectives.relations import METRICS, _check_mask, _check_option, _check_states, full_precision

# --------------------------------------------------------------------------- argument checks


def check_layer_pairs(teacher_states: Sequence[Tensor], student_states: Sequence[Tensor], attention_mask: Tensor,
                      where: str, min_layers: int = 1) -> Tensor:
    """Validate per-layer states (K teacher and K student ``[B, L, d]``); returns the bool mask ``[B, L]``."""
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
    for name, states in (("teacher_states", teacher_states), ("student_states", student_states)):
        widths = sorted({h.shape[-1] for h in states})
        if len(widths) > 1:
            raise ValueError(
                f"{where}: the {name} have widths {widths}; the layers of one model must share one width d "
                f"(they are stacked into one tensor)"
            )
    if len(teacher_states) < min_layers:
        raise ValueError(
            f"{where} needs at least {min_layers} mapped layers, got {len(teacher_states)}; use a layer map with "
            f"{min_layers} or more pairs (e.g. 'uniform'), or give this term weight 0"
        )
    return _check_mask(attention_mask, batch, length, where).to(teacher_states[0].device)


def check_window(window: int | None) -> int | None:
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(
            f"window={window!r} must be None (all triplets) or a positive int w keeping |b - a| <= w "
            f"and |c - a| <= w (the official 21-token window is w = 10)"
        )
    return window


def check_temperature(temperature: float, loss: str, name: str = "temperature") -> float:
    """A finite real > 0; anything but 1 only with the KL loss (mse/huber have no softmax)."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"{name}={temperature!r} must be a finite number > 0 (1.0 = the official form)")
    if temperature != 1.0 and loss != "kl":
        raise ValueError(
            f"{name}={temperature!r} scales the softmax logits of the 'kl' pair loss, but the pair loss is "
            f"{loss!r}, which compares the relations themselves; use loss 'kl' or leave {name} at 1.0"
        )
    return float(temperature)


def check_centred(centred: bool) -> bool:
    if not isinstance(centred, bool):
        raise ValueError(f"centred={centred!r} must be True or False")
    return centred


# --------------------------------------------------------------------------- the losses


def wr_pair_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    loss: str = "kl",
    metric: str = "cos",
    temperature: float = 1.0,
    centred: bool = False,
    threads: int | None = KERNEL_THREADS,
) -> Tensor:
    """Word-relation pair-wise loss, averaged over (layer pair, sequence, anchor i in V).

    ``loss="kl"``: ``KL(p_i || q_i)`` with ``p_i = softmax_{j in V, j != i} r_t(i, j) / T`` and
    ``q_i`` the same from the student, ``r = cos`` (``metric="cos"``) or ``r = -|h_i - h_j| / mean``
    (``metric="l2"``), ``T = temperature``. ``loss="mse"/"huber"``: mean over valid (i, j != i) of
    ``loss(r_s(i, j) - r_t(i, j))``. ``centred``: cosines of ``h_i - mu`` (mu = mean of the
    sequence's valid states in that layer).

    Args:
        teacher_states, student_states: equal-length lists of ``[B, L, d_t]`` / ``[B, L, d_s]``;
            the k-th teacher tensor is paired with the k-th student tensor.
        attention_mask: ``[B, L]`` of 0/1.

    Returns:
        A scalar (float32, or float64 for float64 inputs); 0 if no sequence has two valid tokens.
    """
    _check_option("loss", loss, PAIR_LOSSES)
    _check_option("metric", metric, METRICS)
    temperature, centred = check_temperature(temperature, loss), check_centred(centred)
    threads = check_threads(threads)
    valid = check_layer_pairs(teacher_states, student_states, attention_mask, "wr_pair_loss")
    with kernel_threads(threads, valid.device), full_precision(valid.device):
        g_t = teacher_wr_gram(teacher_states, valid)

    def kernels(student: list[Tensor]) -> tuple[Tensor]:
        total, count = wr_pair_sum(g_t, wr_gram(student, valid, centred), valid, loss, metric, temperature, centred)
        return (total / count.clamp(min=1),)

    return run_scoped(kernels, student_states, threads, valid.device)[0]


def wr_triplet_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    loss: str = "mse",
    window: int | None = None,
    block_elements: int | None = None,
    threads: int | None = KERNEL_THREADS,
) -> Tensor:
    """Word-relation triplet-wise (angle) loss.

    ``psi(a, b, c) = cos(h_b - h_a, h_c - h_a)`` for valid a, b, c with b != a, c != a, b != c;
    the loss is the mean over all such (layer pair, sequence, a, b, c) of
    ``(psi_t - psi_s)^2`` (``loss="mse"``) or smooth L1 with beta = 1 (``loss="huber"``).
    Angles do not change when states are centred, so there is no ``centred`` option here.

    Args:
        teacher_states, student_states: equal-length lists of ``[B, L, d_t]`` / ``[B, L, d_s]``.
        attention_mask: ``[B, L]`` of 0/1.
        window: None for all triplets, or w to keep only |b - a| <= w and |c - a| <= w.
        block_elements: entries per block of the ``huber`` walk (memory/speed trade-off);
            None = 2^18 on CPU, 2^24 on accelerators. The ``mse`` loss needs no blocks.

    Returns:
        A scalar (float32, or float64 for float64 inputs); 0 if there is no valid triplet.
    """
    _check_option("loss", loss, TRIPLET_LOSSES)
    window, threads = check_window(window), check_threads(threads)
    valid = check_layer_pairs(teacher_states, student_states, attention_mask, "wr_triplet_loss")
    block_elements = check_block_elements(block_elements, valid.device)
    with kernel_threads(threads, valid.device), full_precision(valid.device):
        g_t = teacher_wr_gram(teacher_states, valid)

    def kernels(student: list[Tensor]) -> tuple[Tensor]:
        total, count = wr_triplet_sum(g_t, wr_gram(student, valid), valid, loss, window, block_elements)
        return (total / count.clamp(min=1),)

    return run_scoped(kernels, student_states, threads, valid.device)[0]


def ltr_pair_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    loss: str = "kl",
    metric: str = "cos",
    temperature: float = 1.0,
    centred: bool = False,
    threads: int | None = KERNEL_THREADS,
) -> Tensor:
    """Layer-transforming pair-wise loss, averaged over (sequence, valid token i, layer l).

    For token i with states h_i^1..h_i^n in the n mapped layers: ``loss="kl"`` uses
    ``KL(p_{i,l} || q_{i,l})`` with ``p_{i,l} = softmax_{m != l} r_t(h_i^l, h_i^m) / T``, ``r = cos``
    or ``-|h^l - h^m| / mean`` (``metric="l2"``, mean over the token's layer pairs m != l);
    ``loss="mse"/"huber"`` averages ``loss(r_s - r_t)`` over (sequence, token, l, m != l).
    ``centred``: the same on ``h_i^l - mu^l``, mu^l = mean of the sequence's valid states in layer l.

    Args:
        teacher_states, student_states: the n >= 2 mapped layers, ``[B, L, d_t]`` / ``[B, L, d_s]``.
        attention_mask: ``[B, L]`` of 0/1.
    """
    _check_option("loss", loss, PAIR_LOSSES)
    _check_option("metric", metric, METRICS)
    temperature, centred = check_temperature(temperature, loss), check_centred(centred)
    threads = check_threads(threads)
    valid = check_layer_pairs(teacher_states, student_states, attention_mask, "ltr_pair_loss", 2)
    with kernel_threads(threads, valid.device), full_precision(valid.device):
        g_t = teacher_ltr_gram(teacher_states, valid, centred)

    def kernels(student: list[Tensor]) -> tuple[Tensor]:
        g_s = ltr_gram(ltr_states(student, valid, centred), valid)
        total, count = ltr_pair_sum(g_t, g_s, valid, loss, metric, temperature)
        return (total / count.clamp(min=1),)

    return run_scoped(kernels, student_states, threads, valid.device)[0]


def ltr_triplet_loss(
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    attention_mask: Tensor,
    *,
    loss: str = "mse",
    centred: bool = False,
    threads: int | None = KERNEL_THREADS,
) -> Tensor:
    """Layer-transforming triplet-wise (angle) loss.

    ``psi(l, m, k) = cos(h_i^m - h_i^l, h_i^k - h_i^l)`` over the n >= 3 mapped layers of each valid
    token i, m != l, k != l, m != k; the loss is the mean over (sequence, token, l, m, k) of
    ``(psi_t - psi_s)^2`` (``loss="mse"``) or smooth L1 with beta = 1 (``loss="huber"``).
    ``centred``: on ``h_i^l - mu^l`` as in :func:`ltr_pair_loss` (these angles do change).
    """
    _check_option("loss", loss, TRIPLET_LOSSES)
    centred, threads = check_centred(centred), check_threads(threads)
    valid = check_layer_pairs(teacher_states, student_states, attention_mask, "ltr_triplet_loss", 3)
    with kernel_threads(threads, valid.device), full_precision(valid.device):
        g_t = teacher_ltr_gram(teacher_states, valid, centred)

    def kernels(student: list[Tensor]) -> tuple[Tensor]:
        total, count = ltr_triplet_sum(g_t, ltr_gram(ltr_states(student, valid, centred), valid), valid, loss)
        return (total / count.clamp(min=1),)

    return run_scoped(kernels, student_states, threads, valid.device)[0]
