"""CKD losses and relations against slow loop references written from the definitions.

The references below use numpy float64 and plain Python loops over anchors / partners /
layers, with cos(x, y) = x.y / (max(|x|, eps) max(|y|, eps)) exactly as specified; they share
no code with ckdlab.objectives.
"""
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ckdlab.objectives.ckd import CKDLoss, ltr_pair_loss, ltr_triplet_loss, wr_pair_loss, wr_triplet_loss
from ckdlab.objectives.relations import (
    ltr_pair_relation,
    ltr_triplet_relation,
    wr_pair_relation,
    wr_triplet_relation,
)

EPS = 1e-12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: on a shared CPU a second OpenMP thread only adds stalls (3x wall time)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


# --------------------------------------------------------------------------- against the references


@pytest.mark.parametrize("name,options", ALL_CASES, ids=CASE_IDS)
def test_matches_reference(name, options):
    fn, ref = LOSSES[name]
    teacher, student, mask = make_batch(seed=1)
    got = fn(teacher, student, mask, **options)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert_close(got, ref(np_list(teacher), np_list(student), mask.numpy(), **options))


@pytest.mark.parametrize("name", ["wr_pair", "ltr_pair"])
def test_huber_linear_branch_matches_reference(name):
    """Normalised distances of unrelated teacher/student differ by more than 1 (beta) in places."""
    fn, ref = LOSSES[name]
    teacher, student, mask = make_batch(seed=2, lengths=(7, 7), n_layers=3)
    student = [s ** 3 for s in student]  # heavy-tailed distances: some normalised ones far above 1
    got = fn(teacher, student, mask, loss="huber", metric="l2")
    assert_close(got, ref(np_list(teacher), np_list(student), mask.numpy(), loss="huber", metric="l2"))
    if name == "wr_pair":
        diffs = [wr_pair_relation(s, mask, "l2") - wr_pair_relation(t, mask, "l2") for t, s in zip(teacher, student)]
    else:
        diffs = [ltr_pair_relation(student, mask, i, "l2") - ltr_pair_relation(teacher, mask, i, "l2")
                 for i in range(7)]
    assert any((d.abs() > 1).any() for d in diffs), "no entry in the linear branch; the test data is too tame"


@settings(max_examples=15, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    window=st.sampled_from([None, 1, 2, 3]),
    loss=st.sampled_from(["mse", "huber"]),
    block=st.sampled_from([1, 7, 64, 10_000]),
    seed=st.integers(0, 2**16),
)
def test_wr_triplet_property(lengths, window, loss, block, seed):
    """Random masks, windows and block sizes (the block walk must cover each triplet once)."""
    teacher, student, mask = make_batch(seed, lengths=tuple(lengths), max_len=6, n_layers=2, dt=3, ds=5)
    got = wr_triplet_loss(teacher, student, mask, loss=loss, window=window, block_elements=block)
    expected = ref_wr_triplet(np_list(teacher), np_list(student), mask.numpy(), loss=loss, window=window)
    assert_close(got, expected)


@settings(max_examples=10, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=3),
    options=st.sampled_from(PAIR_OPTIONS),
    seed=st.integers(0, 2**16),
)
def test_wr_pair_property(lengths, options, seed):
    teacher, student, mask = make_batch(seed, lengths=tuple(lengths), max_len=6, n_layers=1, dt=3, ds=2)
    got = wr_pair_loss(teacher, student, mask, **options)
    assert_close(got, ref_wr_pair(np_list(teacher), np_list(student), mask.numpy(), **options))


def test_block_sizes_give_identical_value_and_gradient():
    # Only the huber loss walks over blocks (mse is computed by matrix products).
    teacher, student, mask = make_batch(seed=3, lengths=(7, 5, 6), n_layers=2)
    student = [3.0 * x for x in student]  # some angle differences in huber's linear branch
    results = []
    for block in (1, 50, 300, None):
        for window in (None, 2):
            s = [x.clone().requires_grad_(True) for x in student]
            value = wr_triplet_loss(teacher, s, mask, loss="huber", window=window, block_elements=block)
            value.backward()
            results.append((window, value.item(), torch.cat([x.grad.flatten() for x in s])))
    for window in (None, 2):
        same = [r for r in results if r[0] == window]
        for _, value, grad in same[1:]:
            assert value == pytest.approx(same[0][1], rel=1e-12)
            torch.testing.assert_close(grad, same[0][2], rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(
    "name,options",
    [
        ("wr_pair", dict(loss="kl", metric="cos")),
        ("wr_pair", dict(loss="kl", metric="l2")),
        ("wr_pair", dict(loss="huber", metric="cos")),
        ("wr_triplet", dict(loss="mse")),
        ("wr_triplet", dict(loss="huber", window=1)),
        ("ltr_pair", dict(loss="kl", metric="cos")),
        ("ltr_pair", dict(loss="mse", metric="l2")),
        ("ltr_triplet", dict(loss="mse")),
        ("ltr_triplet", dict(loss="huber")),
    ],
)
def test_gradcheck(name, options):
    fn = LOSSES[name][0]
    teacher, student, mask = make_batch(seed=4, lengths=(4, 3), max_len=4, n_layers=3, dt=3, ds=3, garbage=10.0)
    inputs = tuple(s.clone().requires_grad_(True) for s in student)
    assert torch.autograd.gradcheck(lambda *s: fn(teacher, list(s), mask, **options), inputs, eps=1e-6, atol=1e-7)


def test_huber_triplet_gradcheck_in_linear_region():
    # Hand-placed 2-d points whose angles at anchor 0 differ by more than 1 in places.
    mask = torch.ones(1, 5)
    student = [torch.tensor([[[0.0, 0.0], [1.0, 0.1], [-1.0, 0.2], [0.1, 1.0], [0.2, -1.3]]], dtype=torch.float64)]
    teacher = [torch.tensor([[[0.0, 0.0], [1.0, 0.0], [1.1, 0.3], [0.0, 1.0], [0.1, 0.9]]], dtype=torch.float64)]
    psi_t = wr_triplet_relation(teacher[0], mask, 0)
    psi_s = wr_triplet_relation(student[0], mask, 0)
    assert torch.nanmean(((psi_s - psi_t).abs() > 1).double()) > 0
    inputs = (student[0].clone().requires_grad_(True),)
    assert torch.autograd.gradcheck(lambda s: wr_triplet_loss(teacher, [s], mask, loss="huber"), inputs)


def test_teacher_gets_no_gradient():
    teacher, student, mask = make_batch(seed=6, lengths=(5, 3), n_layers=3)
    teacher = [t.clone().requires_grad_(True) for t in teacher]
    student = [s.clone().requires_grad_(True) for s in student]
    for fn, _ in LOSSES.values():
        fn(teacher, student, mask).backward()
    assert all(t.grad is None for t in teacher)
    assert all(s.grad is not None and torch.isfinite(s.grad).all() for s in student)


def test_value_under_no_grad():
    teacher, student, mask = make_batch(seed=7, lengths=(7, 4))
    with torch.no_grad():
        value = wr_triplet_loss(teacher, student, mask)
    assert not value.requires_grad
    assert_close(value, ref_wr_triplet(np_list(teacher), np_list(student), mask.numpy()))


# --------------------------------------------------------------------------- invariances


def random_rotation(d, seed):
    q, r = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


@pytest.mark.parametrize("name,options", ALL_CASES, ids=CASE_IDS)
def test_rotation_and_scale_invariance(name, options):
    fn = LOSSES[name][0]
    teacher, student, mask = make_batch(seed=8)
    base = fn(teacher, student, mask, **options)
    qt, qs = random_rotation(teacher[0].shape[-1], 1), random_rotation(student[0].shape[-1], 2)
    rotated = fn([t @ qt for t in teacher], [s @ qs for s in student], mask, **options)
    scaled = fn([7.5 * t for t in teacher], [0.02 * s for s in student], mask, **options)
    torch.testing.assert_close(rotated, base, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(scaled, base, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name,options", ALL_CASES, ids=CASE_IDS)
def test_teacher_equal_student_gives_zero(name, options):
    fn = LOSSES[name][0]
    teacher, _, mask = make_batch(seed=9)
    value = fn(teacher, [t.clone() for t in teacher], mask, **options)
    assert abs(value.item()) < 1e-12


@pytest.mark.parametrize("name,options", ALL_CASES, ids=CASE_IDS)
def test_padding_invariance(name, options):
    fn = LOSSES[name][0]
    teacher, student, mask = make_batch(seed=10, lengths=(5, 3, 1), max_len=5)
    base = fn(teacher, student, mask, **options)
    gen = torch.Generator().manual_seed(0)

    def pad(x):
        return torch.cat([x, 1e4 * torch.randn(x.shape[0], 4, x.shape[2], generator=gen, dtype=x.dtype)], dim=1)

    padded_mask = torch.cat([mask, torch.zeros(mask.shape[0], 4, dtype=mask.dtype)], dim=1)
    padded = fn([pad(t) for t in teacher], [pad(s) for s in student], padded_mask, **options)
    torch.testing.assert_close(padded, base, rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------- degenerate inputs


def degenerate_inputs():
    gen = torch.Generator().manual_seed(99)

    def randn(*shape):
        return torch.randn(*shape, generator=gen)

    b, l = 3, 5
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    same = randn(1, 1, 4).expand(b, l, 4).contiguous()
    zeros = torch.zeros(b, l, 4)
    partly = randn(b, l, 3)
    partly[:, 1] = partly[:, 0]  # duplicated token next to distinct ones
    yield "identical", [same, 2 * same, same + 1], [same.clone(), same, same], mask
    yield "zeros", [zeros] * 3, [zeros.clone() for _ in range(3)], mask
    yield "identical-vs-random", [same] * 3, [randn(b, l, 4) for _ in range(3)], mask
    yield "duplicated-token", [partly, partly * 2, partly - 1], [randn(b, l, 2) for _ in range(3)], mask
    yield "one-token", [randn(2, 1, 4)] * 3, [randn(2, 1, 3) for _ in range(3)], torch.ones(2, 1)
    yield "all-padding", [randn(2, 3, 4)] * 3, [randn(2, 3, 3) for _ in range(3)], torch.zeros(2, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(degenerate_inputs()), ids=lambda c: c[0])
def test_degenerate_inputs_stay_finite(case, dtype):
    _, teacher, student, mask = case
    teacher = [t.to(dtype) for t in teacher]
    for name, options in ALL_CASES:
        s = [x.to(dtype).clone().requires_grad_(True) for x in student]
        value = LOSSES[name][0](teacher, s, mask, **options)
        value.backward()
        assert torch.isfinite(value), (name, options)
        assert all(torch.isfinite(x.grad).all() for x in s), (name, options)


def test_degenerate_values_match_reference():
    for label, teacher, student, mask in degenerate_inputs():
        teacher = [t.double() for t in teacher]
        student = [s.double() for s in student]
        for name, options in ALL_CASES:
            fn, ref = LOSSES[name]
            expected = ref(np_list(teacher), np_list(student), mask.numpy(), **options)
            assert_close(fn(teacher, student, mask, **options), expected, rtol=1e-6, atol=1e-9,
                         context=(label, name, options))


def test_fewer_than_two_valid_tokens_contribute_nothing():
    teacher, student, mask = make_batch(seed=11, lengths=(6, 1, 0), max_len=6)
    only_full = [x[:1] for x in teacher], [x[:1] for x in student], mask[:1]
    for name, options in ALL_CASES:
        if name.startswith("wr"):
            fn = LOSSES[name][0]
            torch.testing.assert_close(fn(teacher, student, mask, **options), fn(*only_full, **options))


# --------------------------------------------------------------------------- precision


def test_float32_with_large_common_offset_matches_float64_reference():
    """BERT-like states: a large shared component, small token-specific parts.

    Without centring, the float32 Gram form loses ~1e-3 on single angles here; with it, ~1e-6.
    """
    gen = torch.Generator().manual_seed(12)
    b, l, d = 2, 10, 64
    offset_t = 50.0 * torch.randn(d, generator=gen, dtype=torch.float64)
    offset_s = 30.0 * torch.randn(d, generator=gen, dtype=torch.float64)
    teacher = [offset_t + torch.randn(b, l, d, generator=gen, dtype=torch.float64) for _ in range(3)]
    student = [offset_s + torch.randn(b, l, d, generator=gen, dtype=torch.float64) for _ in range(3)]
    mask = torch.ones(b, l)
    mask[1, 7:] = 0
    h = teacher[0]
    errors = [wr_pair_relation(h.float(), mask, metric="l2").double() - wr_pair_relation(h, mask, metric="l2")]
    errors += [wr_triplet_relation(h.float(), mask, a).double() - wr_triplet_relation(h, mask, a) for a in range(l)]
    assert max(torch.nan_to_num(e).abs().max().item() for e in errors) < 1e-5
    for name, options in ALL_CASES:
        fn, ref = LOSSES[name]
        expected = ref(np_list(teacher), np_list(student), mask.numpy(), **options)
        got = fn([t.float() for t in teacher], [s.float() for s in student], mask, **options)
        assert got.dtype == torch.float32
        assert float(got) == pytest.approx(expected, rel=2e-4, abs=1e-7), (name, options)


@pytest.mark.parametrize("gap", [1e-7, 1e-6, 1e-5])
def test_near_duplicate_tokens_keep_float32_gradients_bounded(gap):
    """A token a hair away from another: in float32 the Gram-form distance is rounding noise, and
    without the zero-length floor the angle gradient explodes (by 100-1000x here)."""
    gen = torch.Generator().manual_seed(17)
    teacher = [torch.randn(2, 8, 64, generator=gen) for _ in range(3)]
    student = [torch.randn(2, 8, 64, generator=gen) + 3.0 for _ in range(3)]
    mask = torch.ones(2, 8)

    def max_grad(states):
        states = [x.clone().requires_grad_(True) for x in states]
        wr_triplet_loss(teacher, states, mask).backward()
        return max(x.grad.abs().max().item() for x in states)

    near = [x.clone() for x in student]
    for x in near:
        x[:, 1] = x[:, 0] + gap * torch.randn(2, 64, generator=gen)
    assert max_grad(near) < 10 * max_grad(student)


def test_bf16_autocast_computes_in_float32():
    teacher, student, mask = make_batch(seed=13, lengths=(7, 5), dtype=torch.float32)
    teacher = [t.bfloat16() for t in teacher]
    student = [s.bfloat16() for s in student]
    for name, options in ALL_CASES:
        fn = LOSSES[name][0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = fn(teacher, student, mask, **options)
        expected = fn([t.float() for t in teacher], [s.float() for s in student], mask, **options)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------------- relations


def test_relations_match_definitions_and_nan_where_undefined():
    teacher, _, mask = make_batch(seed=14, lengths=(6, 4), max_len=6, n_layers=4, dt=5)
    h = teacher[0]
    wr_cos = wr_pair_relation(h, mask)
    wr_l2 = wr_pair_relation(h, mask, metric="l2")
    for b in range(2):
        V = [i for i in range(6) if mask[b, i]]
        rel_l2 = pair_values([h[b, i].numpy() for i in V], "l2")
        for i in range(6):
            for j in range(6):
                if i in V and j in V:
                    assert wr_cos[b, i, j].item() == pytest.approx(cos(h[b, i].numpy(), h[b, j].numpy()), rel=1e-10)
                    if i != j:
                        assert wr_l2[b, i, j].item() == pytest.approx(rel_l2[V.index(i), V.index(j)], rel=1e-10)
                else:
                    assert math.isnan(wr_cos[b, i, j]) and math.isnan(wr_l2[b, i, j])

    anchor = 2
    psi = wr_triplet_relation(h, mask, anchor)
    for b, j, k in itertools.product(range(2), range(6), range(6)):
        defined = mask[b, j] and mask[b, k] and mask[b, anchor] and len({j, k, anchor}) == 3
        if defined:
            x = h[b].numpy()
            assert psi[b, j, k].item() == pytest.approx(cos(x[j] - x[anchor], x[k] - x[anchor]), rel=1e-9, abs=1e-12)
        else:
            assert math.isnan(psi[b, j, k])
    assert torch.isnan(wr_triplet_relation(h, mask, 5)[1]).all()  # anchor is padding in sequence 1

    token, layer = 3, 1
    lp = ltr_pair_relation(teacher, mask, token)
    lt = ltr_triplet_relation(teacher, mask, token, layer)
    for b in range(2):
        vec = [t[b, token].numpy() for t in teacher]
        if not mask[b, token]:
            assert torch.isnan(lp[b]).all() and torch.isnan(lt[b]).all()
            continue
        for m, k in itertools.product(range(4), range(4)):
            assert lp[b, m, k].item() == pytest.approx(cos(vec[m], vec[k]), rel=1e-10)
            if len({m, k, layer}) == 3:
                expected = cos(vec[m] - vec[layer], vec[k] - vec[layer])
                assert lt[b, m, k].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
            else:
                assert math.isnan(lt[b, m, k])


def test_relation_argument_errors():
    teacher, _, mask = make_batch(seed=15, lengths=(3,), max_len=3)
    with pytest.raises(ValueError, match=r"anchor=3 is out of range.*0\.\.2"):
        wr_triplet_relation(teacher[0], mask, 3)
    with pytest.raises(ValueError, match=r"token=-1 is out of range"):
        ltr_pair_relation(teacher, mask, -1)
    with pytest.raises(ValueError, match=r"anchor_layer=3 is out of range.*3 layers"):
        ltr_triplet_relation(teacher, mask, 0, 3)
    with pytest.raises(ValueError, match=r"metric='dot'.*'cos', 'l2'"):
        wr_pair_relation(teacher[0], mask, metric="dot")


# --------------------------------------------------------------------------- argument errors


def test_loss_argument_errors():
    teacher, student, mask = make_batch(seed=16, lengths=(3, 2), max_len=3)
    with pytest.raises(ValueError, match=r"loss='kl' is not supported; use one of 'mse', 'huber'"):
        wr_triplet_loss(teacher, student, mask, loss="kl")
    with pytest.raises(ValueError, match=r"loss='l1'.*'kl', 'mse', 'huber'"):
        wr_pair_loss(teacher, student, mask, loss="l1")
    with pytest.raises(ValueError, match=r"metric='cosine'"):
        ltr_pair_loss(teacher, student, mask, metric="cosine")
    with pytest.raises(ValueError, match=r"window=0 must be None.*w = 10"):
        wr_triplet_loss(teacher, student, mask, window=0)
    with pytest.raises(ValueError, match=r"block_elements=0"):
        wr_triplet_loss(teacher, student, mask, block_elements=0)
    with pytest.raises(ValueError, match=r"2 teacher and 3 student tensors"):
        wr_pair_loss(teacher[:2], student, mask)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 2\).*\[2, 3\]"):
        wr_triplet_loss(teacher, student, mask[:, :2])
    with pytest.raises(ValueError, match=r"only 0 and 1"):
        wr_pair_loss(teacher, student, mask * 2)
    with pytest.raises(ValueError, match=r"share \[B, L\]"):
        wr_pair_loss(teacher, [s[:, :2] for s in student], mask)
    with pytest.raises(ValueError, match=r"ltr_pair_loss needs at least 2 mapped layers, got 1"):
        ltr_pair_loss(teacher[:1], student[:1], mask)
    with pytest.raises(ValueError, match=r"ltr_triplet_loss needs at least 3 mapped layers, got 2"):
        ltr_triplet_loss(teacher[:2], student[:2], mask)
    with pytest.raises(ValueError, match=r"non-empty list"):
        wr_triplet_loss(teacher[0], student[0], mask)


# --------------------------------------------------------------------------- CKDLoss on real BERT outputs


@pytest.fixture(scope="module")
def bert_outputs():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)

    def model(hidden, layers, heads):
        config = BertConfig(
            vocab_size=60, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=2 * hidden, max_position_embeddings=16,
        )
        # float64 so the loop references can be matched tightly; float32 is covered above
        return BertModel(config).double().eval()

    teacher, student = model(32, 4, 4), model(16, 2, 2)
    input_ids = torch.randint(1, 60, (3, 9))
    attention_mask = torch.ones(3, 9, dtype=torch.long)
    attention_mask[1, 6:] = 0
    attention_mask[2, 3:] = 0
    with torch.no_grad():
        t_out = teacher(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    s_out = student(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return teacher, student, t_out, s_out, attention_mask


def test_ckdloss_on_bert_outputs(bert_outputs):
    teacher, student, t_out, s_out, mask = bert_outputs
    assert len(t_out.hidden_states) == 5 and len(s_out.hidden_states) == 3
    ckd = CKDLoss(layer_map="uniform", window=2)
    terms = ckd(t_out, s_out, mask)
    assert set(terms) == {"wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet"}

    mapped_t = [t_out.hidden_states[i] for i in (0, 2, 4)]
    mapped_s = [s_out.hidden_states[i] for i in (0, 1, 2)]
    expected = {
        "wr_pair": wr_pair_loss(mapped_t, mapped_s, mask),
        "wr_triplet": wr_triplet_loss(mapped_t, mapped_s, mask, window=2),
        "ltr_pair": ltr_pair_loss(mapped_t, mapped_s, mask),
        "ltr_triplet": ltr_triplet_loss(mapped_t, mapped_s, mask),
    }
    for name, value in terms.items():
        assert value.dtype == torch.float64 and torch.isfinite(value) and value > 0
        torch.testing.assert_close(value, expected[name])
        reference = LOSSES[name][1](np_list(mapped_t), np_list(mapped_s), mask.numpy(),
                                    **({"window": 2} if name == "wr_triplet" else {}))
        assert float(value.detach()) == pytest.approx(reference, rel=1e-8)

    total = ckd.total(terms)
    torch.testing.assert_close(total, sum(terms.values()))
    student.zero_grad()
    total.backward(retain_graph=True)
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)
    assert all(p.grad is None for p in teacher.parameters())


def test_ckdloss_weights_are_live(bert_outputs):
    _, _, t_out, s_out, mask = bert_outputs
    ckd = CKDLoss({"wr_pair": 1.0, "wr_triplet": 0.0, "ltr_pair": 2.0, "ltr_triplet": 0.5})
    terms = ckd(t_out, s_out, mask)
    assert set(terms) == {"wr_pair", "ltr_pair", "ltr_triplet"}  # zero weight: not computed
    before = ckd.total(terms)
    torch.testing.assert_close(before, terms["wr_pair"] + 2 * terms["ltr_pair"] + 0.5 * terms["ltr_triplet"])
    ckd.weights["ltr_pair"] = 10.0
    after = ckd.total(terms)
    torch.testing.assert_close(after - before, 8 * terms["ltr_pair"])
    ckd.weights["wr_pair"] = 0.0
    assert "wr_pair" not in ckd(t_out, s_out, mask)
    ckd.weights["wr_triplet"] = 3.0
    assert "wr_triplet" in ckd(t_out, s_out, mask)


def test_ckdloss_options_and_errors(bert_outputs):
    _, _, t_out, s_out, mask = bert_outputs
    ckd = CKDLoss(layer_map="0-0,4-2", pair_loss="mse", pair_metric="l2", triplet_loss="huber",
                  weights={"wr_pair": 1.0, "ltr_pair": 1.0})
    terms = ckd(t_out, s_out, mask)
    mapped_t = [t_out.hidden_states[0], t_out.hidden_states[4]]
    mapped_s = [s_out.hidden_states[0], s_out.hidden_states[2]]
    torch.testing.assert_close(terms["ltr_pair"], ltr_pair_loss(mapped_t, mapped_s, mask, loss="mse", metric="l2"))
    assert set(terms) == {"wr_pair", "ltr_pair"}
    # the hidden-states tuples themselves are accepted too
    torch.testing.assert_close(ckd(t_out.hidden_states, s_out.hidden_states, mask)["wr_pair"], terms["wr_pair"])

    with pytest.raises(ValueError, match=r"ltr_pair needs at least 2 mapped layers.*'last' gives 1 pair"):
        CKDLoss(layer_map="last")(t_out, s_out, mask)
    with pytest.raises(ValueError, match=r"unknown term\(s\) \['wr_angle'\]"):
        CKDLoss({"wr_angle": 1.0})
    with pytest.raises(ValueError, match=r"pair_loss='kld'"):
        CKDLoss(pair_loss="kld")
    with pytest.raises(ValueError, match=r"triplet_loss='kl'"):
        CKDLoss(triplet_loss="kl")
    with pytest.raises(ValueError, match=r"output_hidden_states=True"):
        CKDLoss()(type("Out", (), {"hidden_states": None})(), s_out, mask)
    with pytest.raises(ValueError, match=r"layer map 'skip' needs"):
        CKDLoss(layer_map="skip")(t_out.hidden_states[:4], s_out, mask)  # 3 teacher layers vs 2
    with pytest.raises(ValueError, match=r"weights\['wr_pair'\]='1' must be a real number"):
        CKDLoss({"wr_pair": "1"})
    assert CKDLoss({"wr_pair": np.float32(0.5)}).weights["wr_pair"] == 0.5
    bad = CKDLoss()
    bad.weights["typo"] = 1.0
    with pytest.raises(ValueError, match=r"unknown term"):
        bad(t_out, s_out, mask)
    assert float(CKDLoss().total({})) == 0.0


@pytest.mark.parametrize("window", [None, 3])
def test_matmul_expansion_matches_elementwise_triplets(window):
    """The mse path (inner products by matmuls) against the element-wise block walk, value and gradient."""
    from ckdlab.objectives.ckd.angle_blocks import AngleDivergence as _AngleDivergence
    from ckdlab.objectives.ckd.kernels import angle_squared_error as _angle_squared_error
    from ckdlab.objectives.relations import angle_inputs

    teacher, student, mask = make_batch(seed=11, lengths=(9, 4, 0, 1, 2, 8), max_len=9, n_layers=1, dt=6, ds=4)
    valid = mask.bool()
    pos = torch.arange(valid.shape[1])
    usable = valid[:, :, None] & valid[:, None, :] & (pos[:, None] != pos[None, :])
    if window is not None:
        usable &= (pos[:, None] - pos[None, :]).abs() <= window
    d2_t, inv_t = angle_inputs(teacher[0], usable, valid)
    grads = []
    for path in ("matmul", "blocks"):
        s = student[0].clone().requires_grad_(True)
        d2_s, inv_s = angle_inputs(s, usable, valid)
        if path == "matmul":
            value = _angle_squared_error(d2_s, inv_s, d2_t, inv_t)
        else:
            value = _AngleDivergence.apply(d2_s, d2_t, inv_s.detach(), inv_t, "mse", window, 7)
        value.backward()
        grads.append((value.item(), s.grad))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-12)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)


def test_matmul_triplets_float32_accuracy_with_a_large_common_offset():
    """float32 against float64 on BERT-like states (a large shared component, d = 384 vs 256)."""
    gen = torch.Generator().manual_seed(5)
    shared = 8.0 * torch.randn(1, 1, 384, generator=gen, dtype=torch.float64)
    teacher = shared + torch.randn(4, 40, 384, generator=gen, dtype=torch.float64)
    student = 0.5 * shared[..., :256] + torch.randn(4, 40, 256, generator=gen, dtype=torch.float64)
    student = teacher[..., :256] + 0.3 * student  # close to the teacher: the cancellation-prone case
    mask = (torch.arange(40)[None] < torch.tensor([[40], [31], [17], [3]])).long()
    exact = wr_triplet_loss([teacher], [student.requires_grad_(True)], mask)
    exact.backward()
    s32 = student.detach().float().requires_grad_(True)
    single = wr_triplet_loss([teacher.float()], [s32], mask)
    single.backward()
    assert single.item() == pytest.approx(exact.item(), rel=1e-4)
    grad_error = (s32.grad.double() - student.grad).norm() / student.grad.norm()
    assert grad_error < 1e-3


def test_teacher_memo_gives_the_same_terms_and_gradients():
    """Batches of other compositions and paddings (incl. a non-prefix mask) reuse memoised teacher Grams."""
    teacher_all, student_all, _ = make_batch(seed=21, lengths=(7, 4, 1, 0, 6, 5), max_len=9, n_layers=4, dt=6, ds=4)
    lengths = torch.tensor([7, 4, 1, 0, 6, 5])
    plain = CKDLoss(layer_map=[(0, 0), (1, 1), (2, 2), (3, 3)])
    memo = CKDLoss(layer_map=[(0, 0), (1, 1), (2, 2), (3, 3)], memoize_teacher=True)
    for rows, length in (([0, 1, 2], 9), ([4, 0, 3], 7), ([1, 4, 5, 0], 8), ([2, 5], 6)):
        index = torch.tensor(rows)
        mask = (torch.arange(length)[None] < lengths[index][:, None]).long()
        shift = length - int(lengths[index[1]]) if len(rows) == 4 else 0  # left-pad one sequence: not a prefix
        mask[1] = mask[1].roll(shift)

        def take(states):
            out = [s[index, :length].clone() for s in states]
            for o in out:
                o[1] = o[1].roll(shift, dims=0)
            return out

        teacher = take(teacher_all)
        results = []
        for loss in (plain, memo):
            student = [s.requires_grad_(True) for s in take(student_all)]
            terms = loss(tuple(teacher), tuple(student), mask, rows=index)
            sum(terms.values()).backward()
            results.append((terms, torch.cat([s.grad.flatten() for s in student])))
        for term in results[0][0]:
            assert results[1][0][term].item() == pytest.approx(results[0][0][term].item(), rel=1e-10, abs=1e-12), term
        torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-9, atol=1e-12)
    assert len(memo.teacher_memo) > 0


def test_teacher_memo_without_rows_computes_afresh():
    teacher, student, mask = make_batch(seed=1)
    memo = CKDLoss(memoize_teacher=True)
    got = memo(tuple(teacher), tuple(student), mask)
    expected = CKDLoss()(tuple(teacher), tuple(student), mask)
    assert {k: v.item() for k, v in got.items()} == {k: v.item() for k, v in expected.items()}
    assert len(memo.teacher_memo) == 0
