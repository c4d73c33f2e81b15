"""Slow loop references for the CKD losses, and the test data they are checked on.

The references use numpy float64 and plain Python loops over anchors / partners / layers, with
cos(x, y) = x.y / (max(|x|, eps) max(|y|, eps)) exactly as specified; they share no code with
ckdlab.objectives. (A helper module of tests/test_ckd*.py; it holds no tests itself.)
"""
import itertools
import math

import numpy as np
import pytest
import torch

from ckdlab.objectives.ckd import ltr_pair_loss, ltr_triplet_loss, wr_pair_loss, wr_triplet_loss

EPS = 1e-12


# --------------------------------------------------------------------------- references


def cos(x, y):
    return float(x @ y) / (max(np.linalg.norm(x), EPS) * max(np.linalg.norm(y), EPS))


def pointwise(diff, loss):
    if loss == "mse":
        return diff * diff
    return 0.5 * diff * diff if abs(diff) < 1.0 else abs(diff) - 0.5


def softmax(v):
    e = np.exp(np.asarray(v) - max(v))
    return e / e.sum()


def pair_values(vectors, metric):
    """Relation r(i, j) for the given list of vectors (all valid): cosine or distance / mean distance."""
    n = len(vectors)
    if metric == "cos":
        return {(i, j): cos(vectors[i], vectors[j]) for i in range(n) for j in range(n) if i != j}
    dist = {(i, j): float(np.linalg.norm(vectors[i] - vectors[j])) for i in range(n) for j in range(n) if i != j}
    mean = sum(dist.values()) / len(dist)
    return {k: v / max(mean, EPS) for k, v in dist.items()}


def pair_terms(rt, rs, n, loss, metric):
    """(sum, count) of the pair loss over anchors 0..n-1 of relation dicts rt, rs."""
    total, count = 0.0, 0
    for i in range(n):
        js = [j for j in range(n) if j != i]
        if not js:
            continue
        if loss == "kl":
            sign = 1.0 if metric == "cos" else -1.0
            p = softmax([sign * rt[i, j] for j in js])
            q = softmax([sign * rs[i, j] for j in js])
            total += float(np.sum(p * (np.log(p) - np.log(q))))
            count += 1
        else:
            for j in js:
                total += pointwise(rs[i, j] - rt[i, j], loss)
                count += 1
    return total, count


def ref_wr_pair(teacher, student, mask, loss="kl", metric="cos"):
    total, count = 0.0, 0
    for t, s in zip(teacher, student):
        for b in range(mask.shape[0]):
            V = [i for i in range(mask.shape[1]) if mask[b, i]]
            if len(V) < 2:
                continue
            rt = pair_values([t[b, i] for i in V], metric)
            rs = pair_values([s[b, i] for i in V], metric)
            part, n = pair_terms(rt, rs, len(V), loss, metric)
            total, count = total + part, count + n
    return total / max(count, 1)


def ref_wr_triplet(teacher, student, mask, loss="mse", window=None):
    total, count = 0.0, 0
    for t, s in zip(teacher, student):
        for b in range(mask.shape[0]):
            V = [i for i in range(mask.shape[1]) if mask[b, i]]
            for a, p, c in itertools.permutations(V, 3):
                if window is not None and (abs(p - a) > window or abs(c - a) > window):
                    continue
                psi_t = cos(t[b, p] - t[b, a], t[b, c] - t[b, a])
                psi_s = cos(s[b, p] - s[b, a], s[b, c] - s[b, a])
                total += pointwise(psi_s - psi_t, loss)
                count += 1
    return total / max(count, 1)


def ref_ltr_pair(teacher, student, mask, loss="kl", metric="cos"):
    total, count = 0.0, 0
    n = len(teacher)
    for b, i in zip(*np.nonzero(mask)):
        rt = pair_values([teacher[l][b, i] for l in range(n)], metric)
        rs = pair_values([student[l][b, i] for l in range(n)], metric)
        part, k = pair_terms(rt, rs, n, loss, metric)
        total, count = total + part, count + k
    return total / max(count, 1)


def ref_ltr_triplet(teacher, student, mask, loss="mse"):
    total, count = 0.0, 0
    n = len(teacher)
    for b, i in zip(*np.nonzero(mask)):
        ht = [teacher[l][b, i] for l in range(n)]
        hs = [student[l][b, i] for l in range(n)]
        for l, m, k in itertools.permutations(range(n), 3):
            psi_t = cos(ht[m] - ht[l], ht[k] - ht[l])
            psi_s = cos(hs[m] - hs[l], hs[k] - hs[l])
            total += pointwise(psi_s - psi_t, loss)
            count += 1
    return total / max(count, 1)


# --------------------------------------------------------------------------- data


def make_batch(seed, lengths=(7, 4, 1, 0), max_len=7, n_layers=3, dt=6, ds=4, dtype=torch.float64, garbage=1e3):
    """Random teacher/student states with large random garbage at padded positions."""
    gen = torch.Generator().manual_seed(seed)
    batch = len(lengths)
    mask = torch.zeros(batch, max_len, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    pad = (mask == 0).unsqueeze(-1)

    def states(width):
        h = torch.randn(batch, max_len, width, generator=gen, dtype=dtype) + 0.5
        return torch.where(pad, garbage * torch.randn(batch, max_len, width, generator=gen, dtype=dtype), h)

    teacher = [states(dt) for _ in range(n_layers)]
    student = [states(ds) for _ in range(n_layers)]
    return teacher, student, mask


def np_list(states):
    return [s.detach().numpy() for s in states]


def assert_close(value, expected, rtol=1e-9, atol=1e-12, context=""):
    assert math.isfinite(float(value)), context
    assert float(value) == pytest.approx(expected, rel=rtol, abs=atol), context


LOSSES = {
    "wr_pair": (wr_pair_loss, ref_wr_pair),
    "wr_triplet": (wr_triplet_loss, ref_wr_triplet),
    "ltr_pair": (ltr_pair_loss, ref_ltr_pair),
    "ltr_triplet": (ltr_triplet_loss, ref_ltr_triplet),
}
PAIR_OPTIONS = [dict(loss=l, metric=m) for l in ("kl", "mse", "huber") for m in ("cos", "l2")]
ALL_CASES = (
    [("wr_pair", o) for o in PAIR_OPTIONS]
    + [("ltr_pair", o) for o in PAIR_OPTIONS]
    + [("wr_triplet", dict(loss=l, window=w)) for l in ("mse", "huber") for w in (None, 1, 2, 10)]
    + [("ltr_triplet", dict(loss=l)) for l in ("mse", "huber")]
)
CASE_IDS = [f"{name}-{'-'.join(map(str, opts.values()))}" for name, opts in ALL_CASES]
