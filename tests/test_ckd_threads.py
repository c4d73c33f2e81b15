"""The CKD thread scope (forward and backward on the kernels' own threads) and per-call weights."""
import pytest
import torch

from ckdlab.objectives.ckd import CKDLoss, kernel_threads, wr_pair_loss, wr_triplet_loss
from ckdlab.objectives.ckd.threads import run_scoped


@pytest.fixture
def two_threads():
    """torch's own setting at 2, as on the 2-core development machine by default."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def states(seed, n_layers=3, batch=2, length=5, width=4):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, length, width, generator=gen, dtype=torch.float64) for _ in range(n_layers + 1)]


def test_kernel_threads_lowers_and_restores(two_threads):
    cpu = torch.device("cpu")
    with kernel_threads(1, cpu):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with kernel_threads(4, cpu):  # never raises torch's setting
        assert torch.get_num_threads() == 2
    with kernel_threads(None, cpu):
        assert torch.get_num_threads() == 2
    with kernel_threads(1, torch.device("meta")):  # accelerators are left alone
        assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="boom"), kernel_threads(1, cpu):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("threads,inside", [(1, 1), (None, 2)])
def test_forward_and_backward_run_in_the_scope(two_threads, threads, inside):
    seen = []

    def kernels(student):
        seen.append(("forward", torch.get_num_threads()))
        y = student[0] * student[1]
        y.register_hook(lambda grad: seen.append(("backward", torch.get_num_threads())))
        return (y.sum(), (student[0] ** 2).sum())

    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    first, second = run_scoped(kernels, [a, b], threads, torch.device("cpu"))
    assert torch.get_num_threads() == 2
    (2.0 * first + 3.0 * second).backward()
    assert torch.get_num_threads() == 2
    assert seen == [("forward", inside), ("backward", inside)]
    torch.testing.assert_close(a.grad, 2.0 * b.detach() + 6.0 * a.detach())
    torch.testing.assert_close(b.grad, 2.0 * a.detach())


def test_second_backward_through_a_retained_graph_rebuilds_the_kernels(two_threads):
    teacher, student = states(1), states(2)
    mask = torch.ones(2, 5)
    s = [x.clone().requires_grad_(True) for x in student[1:]]
    value = wr_triplet_loss(teacher[1:], s, mask)
    first = torch.autograd.grad(value, s, retain_graph=True)
    second = torch.autograd.grad(value, s)
    for g1, g2 in zip(first, second):
        torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_no_grad_and_frozen_students_skip_the_autograd_node(two_threads):
    teacher, student = states(3), states(4)
    mask = torch.ones(2, 5)
    with torch.no_grad():
        value = wr_pair_loss(teacher[1:], [s.requires_grad_(True) for s in student[1:]], mask)
    assert not value.requires_grad and value.grad_fn is None
    assert not wr_pair_loss(teacher[1:], [s.detach() for s in student[1:]], mask).requires_grad
    assert torch.get_num_threads() == 2


def test_threads_argument_errors():
    teacher, student = states(5), states(6)
    mask = torch.ones(2, 5)
    with pytest.raises(ValueError, match=r"threads=0 must be a positive int.*None"):
        wr_pair_loss(teacher, student, mask, threads=0)
    with pytest.raises(ValueError, match=r"threads=True"):
        CKDLoss(threads=True)


def test_threads_do_not_change_the_numbers():
    teacher, student = states(7, n_layers=4, length=9), states(8, n_layers=4, length=9)
    mask = torch.ones(2, 9)
    results = []
    for threads in (1, None):
        s = [x.clone().requires_grad_(True) for x in student]
        ckd = CKDLoss(threads=threads)
        terms = ckd(tuple(teacher), tuple(s), mask)
        ckd.total(terms).backward()
        results.append((terms, torch.cat([x.grad.flatten() for x in s[1:]])))
    for term in results[0][0]:
        torch.testing.assert_close(results[0][0][term], results[1][0][term], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------- per-call weights


def test_weights_per_call_decide_the_terms_and_are_not_stored():
    teacher, student = states(9, n_layers=4), states(10, n_layers=4)
    mask = torch.ones(2, 5)
    ckd = CKDLoss({"wr_pair": 1.0})
    before = dict(ckd.weights)
    call = {"wr_triplet": 2.0, "ltr_pair": 0.5, "ltr_triplet": 0.0}
    terms = ckd(tuple(teacher), tuple(student), mask, weights=call)
    assert set(terms) == {"wr_triplet", "ltr_pair"}  # exactly the non-zero weights of this call
    assert ckd.weights == before
    torch.testing.assert_close(ckd.total(terms, weights=call), 2.0 * terms["wr_triplet"] + 0.5 * terms["ltr_pair"])
    torch.testing.assert_close(ckd.total(terms), torch.zeros((), dtype=torch.float64))  # constructor: wr_pair only
    assert set(ckd(tuple(teacher), tuple(student), mask)) == {"wr_pair"}
    assert ckd(tuple(teacher), tuple(student), mask, weights={}) == {}


def test_weights_per_call_errors():
    teacher, student = states(11, n_layers=2), states(12, n_layers=2)
    mask = torch.ones(2, 5)
    ckd = CKDLoss(layer_map="last")
    with pytest.raises(ValueError, match=r"weights has unknown term\(s\) \['kd'\]"):
        ckd(tuple(teacher), tuple(student), mask, weights={"kd": 1.0, "wr_pair": 1.0})
    with pytest.raises(ValueError, match=r"weights\['wr_pair'\]=None must be a real number"):
        ckd.total({}, weights={"wr_pair": None})
    with pytest.raises(ValueError, match=r"ltr_pair needs at least 2 mapped layers"):
        ckd(tuple(teacher), tuple(student), mask, weights={"ltr_pair": 1.0})
    # the same map is fine when the call's weights leave LTR out
    assert set(ckd(tuple(teacher), tuple(student), mask, weights={"wr_pair": 1.0})) == {"wr_pair"}
