"""Loss weights that mean the same thing for every teacher, student and task.

A fixed weight of 1 means something different for every (teacher, student, task): measured on
SST-2, the LTR-triplet term's gradient on a narrow student's encoder was ~45x the KD term's, so
"weight 1" trained layer angles and not the task. Balancing sets the weight of each *balanced*
term (the registry marks CKD's four terms) from what it does at the start of training, relative
to the *reference* terms (logit KD and cross-entropy, with their own weights):

``scheme="grad"``: on the first ``batches`` training batches, with the student as initialised,

    g_t   = mean over batches of || d term_t / d theta ||          (theta: the student's encoder)
    g_ref = mean over batches of || d sum_r w_r term_r / d theta ||
    w_t   = fraction * g_ref / g_t

so each balanced term starts out pushing the encoder with ``fraction`` of the task/KD push.

``scheme="loss"``: the same with loss values instead of gradient norms,
``w_t = fraction * L_ref / L_t`` (no extra backward pass; blind to how steep a term is).

The package default is ``loss`` at ``fraction=0.25`` (:class:`~ckdlab.engine.config.DistillConfig`),
chosen from ``experiments/weighting`` (logit KD, weights 1, the paper's weights, ``grad`` and ``loss`` on
SST-2 with three seeds and both quick students). The weights are then fixed for the run (logged as an event, saved in checkpoints and in the
run's record). Weights the user gave explicitly are never changed; a resumed run keeps the
weights it started with.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

SCHEMES = ("none", "grad", "loss")
# Batches measured at the start (the first rows of the training set, in order).
BALANCE_BATCHES = 4


def check_scheme(scheme: str, fraction: float) -> tuple[str, float]:
    if scheme not in SCHEMES:
        raise ValueError(f"balance={scheme!r} is not known; use one of {', '.join(SCHEMES)}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (0 < fraction < math.inf):
        raise ValueError(f"balance_fraction={fraction!r} must be a positive number (e.g. 0.25)")
    return scheme, float(fraction)


def gradient_norm(loss: Tensor, params: Sequence[nn.Parameter]) -> float:
    """``|| d loss / d params ||_2`` over all of ``params`` (unused ones count 0); the graph is kept."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
    return float(torch.stack(squares).sum().sqrt()) if squares else 0.0


def measure(compute_terms: Callable[[dict[str, Tensor]], dict[str, Tensor]], batches: Iterable[dict[str, Tensor]],
            weights: Mapping[str, float], balanced: Sequence[str], reference: Sequence[str],
            params: Sequence[nn.Parameter], scheme: str) -> dict[str, dict[str, float]]:
    """Per term (and ``"reference"``): the mean over ``batches`` of its gradient norm on ``params``
    (``"grad"``) and of its value (``"loss"``; both schemes report both when cheap)."""
    sums: dict[str, dict[str, float]] = {t: {"grad": 0.0, "loss": 0.0} for t in [*balanced, "reference"]}
    count = 0
    for batch in batches:
        terms = compute_terms(batch)
        ref = sum(weights[r] * terms[r] for r in reference if r in terms)
        for name, value in [*((t, terms[t]) for t in balanced if t in terms), ("reference", ref)]:
            sums[name]["loss"] += float(value.detach())
            if scheme == "grad":
                sums[name]["grad"] += gradient_norm(value, params)
        count += 1
    if count == 0:
        raise ValueError("balancing needs at least one training batch")
    return {name: {k: v / count for k, v in values.items()} for name, values in sums.items()}


# A term that starts out (almost) matched — a student copied from the teacher, a tiny model — measures
# near 0, and the ratio would give it a weight that explodes as soon as the student moves. Real runs
# measured weights of 0.16-51 (experiments/weighting); the cap only stops such degenerate ratios.
MAX_BALANCED_WEIGHT = 1000.0


def balanced_weights(measured: Mapping[str, Mapping[str, float]], scheme: str, fraction: float) -> dict[str, float]:
    """``w_t = min(fraction * m_ref / m_t, MAX_BALANCED_WEIGHT)`` with m the gradient norm (``grad``) or
    the loss (``loss``); a term that measures 0 (nothing to match yet) keeps weight ``fraction``."""
    key = "grad" if scheme == "grad" else "loss"
    ref = measured["reference"][key]
    return {t: (min(fraction * ref / m[key], MAX_BALANCED_WEIGHT) if m[key] > 0 else fraction)
            for t, m in measured.items() if t != "reference"}
