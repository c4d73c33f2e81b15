"""CKD losses against slow loop references written from the definitions (see test_ckd_references):
values, gradients, invariances.
"""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_ckd_references import (
    ALL_CASES,
    CASE_IDS,
    LOSSES,
    PAIR_OPTIONS,
    assert_close,
    make_batch,
    np_list,
    ref_wr_pair,
    ref_wr_triplet,
)

from ckdlab.objectives.ckd import wr_pair_loss, wr_triplet_loss
from ckdlab.objectives.relations import ltr_pair_relation, wr_pair_relation, wr_triplet_relation


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: on a shared CPU a second OpenMP thread only adds stalls (3x wall time)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)



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
