"""CKD losses on degenerate inputs and in reduced precision, the relation functions, argument errors."""
import itertools
import math

import pytest
import torch
from test_ckd_references import (
    ALL_CASES,
    LOSSES,
    assert_close,
    cos,
    make_batch,
    np_list,
    pair_values,
)

from ckdlab.objectives.ckd import ltr_pair_loss, ltr_triplet_loss, wr_pair_loss, wr_triplet_loss
from ckdlab.objectives.relations import (
    ltr_pair_relation,
    ltr_triplet_relation,
    wr_pair_relation,
    wr_triplet_relation,
)


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
