"""The pair temperature and centred options of CKD against slow loop references, values and gradients.

The references are torch float64 loops written from the definitions (anchors, partners, layers one
at a time, cos(x, y) = x.y / (max(|x|, eps) max(|y|, eps))) and share no code with ckdlab; their
gradients come from autograd through those loops.
"""
import itertools

import pytest
import torch

from ckdlab.objectives.ckd import CKDLoss, ltr_pair_loss, ltr_triplet_loss, wr_pair_loss, wr_triplet_loss

EPS = 1e-12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- references


def cos(x, y):
    return (x @ y) / (torch.clamp(x.norm(), min=EPS) * torch.clamp(y.norm(), min=EPS))


def huber(diff):
    return 0.5 * diff * diff if diff.abs() < 1.0 else diff.abs() - 0.5


def pointwise(diff, loss):
    return diff * diff if loss == "mse" else huber(diff)


def centre(states, mask):
    """Each layer's states minus that layer's mean over the sequence's valid tokens (padding kept)."""
    out = []
    for h in states:
        rows = []
        for b in range(h.shape[0]):
            valid = [i for i in range(h.shape[1]) if mask[b, i]]
            mu = h[b, valid].mean(dim=0) if valid else torch.zeros_like(h[b, 0])
            rows.append(torch.stack([h[b, i] - mu if mask[b, i] else h[b, i] for i in range(h.shape[1])]))
        out.append(torch.stack(rows))
    return out


def relations(vectors, metric):
    n = len(vectors)
    if metric == "cos":
        return {(i, j): cos(vectors[i], vectors[j]) for i in range(n) for j in range(n) if i != j}
    dist = {(i, j): (vectors[i] - vectors[j]).norm() for i in range(n) for j in range(n) if i != j}
    mean = sum(dist.values()) / len(dist)
    return {k: v / torch.clamp(mean, min=EPS) for k, v in dist.items()}


def pair_terms(rt, rs, n, loss, metric, temperature):
    total, count = 0.0, 0
    sign = 1.0 if metric == "cos" else -1.0
    for i in range(n):
        js = [j for j in range(n) if j != i]
        if not js:
            continue
        if loss == "kl":
            p = torch.softmax(torch.stack([sign * rt[i, j] / temperature for j in js]), dim=0)
            log_q = torch.log_softmax(torch.stack([sign * rs[i, j] / temperature for j in js]), dim=0)
            total = total + (p * (p.log() - log_q)).sum()
            count += 1
        else:
            for j in js:
                total = total + pointwise(rs[i, j] - rt[i, j], loss)
                count += 1
    return total, count


def ref_wr_pair(teacher, student, mask, loss="kl", metric="cos", temperature=1.0, centred=False):
    if centred:
        teacher, student = centre(teacher, mask), centre(student, mask)
    total, count = 0.0, 0
    for t, s in zip(teacher, student):
        for b in range(mask.shape[0]):
            V = [i for i in range(mask.shape[1]) if mask[b, i]]
            if len(V) < 2:
                continue
            part, n = pair_terms(relations([t[b, i] for i in V], metric), relations([s[b, i] for i in V], metric),
                                 len(V), loss, metric, temperature)
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
                total = total + pointwise(psi_s - psi_t, loss)
                count += 1
    return total / max(count, 1)


def ref_ltr_pair(teacher, student, mask, loss="kl", metric="cos", temperature=1.0, centred=False):
    if centred:
        teacher, student = centre(teacher, mask), centre(student, mask)
    total, count = 0.0, 0
    n = len(teacher)
    for b, i in mask.nonzero().tolist():
        rt = relations([teacher[l][b, i] for l in range(n)], metric)
        rs = relations([student[l][b, i] for l in range(n)], metric)
        part, k = pair_terms(rt, rs, n, loss, metric, temperature)
        total, count = total + part, count + k
    return total / max(count, 1)


def ref_ltr_triplet(teacher, student, mask, loss="mse", centred=False):
    if centred:
        teacher, student = centre(teacher, mask), centre(student, mask)
    total, count = 0.0, 0
    n = len(teacher)
    for b, i in mask.nonzero().tolist():
        ht = [teacher[l][b, i] for l in range(n)]
        hs = [student[l][b, i] for l in range(n)]
        for l, m, k in itertools.permutations(range(n), 3):
            psi_t = cos(ht[m] - ht[l], ht[k] - ht[l])
            psi_s = cos(hs[m] - hs[l], hs[k] - hs[l])
            total = total + pointwise(psi_s - psi_t, loss)
            count += 1
    return total / max(count, 1)


# --------------------------------------------------------------------------- data


def make_batch(seed, lengths=(6, 4, 1, 0), max_len=6, n_layers=3, dt=5, ds=4, garbage=1e3):
    gen = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(lengths), max_len, dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    pad = (mask == 0).unsqueeze(-1)

    def states(width):
        # a shared offset per layer, as hidden states have: centring removes it
        h = torch.randn(len(lengths), max_len, width, generator=gen, dtype=torch.float64)
        h = h + 2.0 * torch.randn(width, generator=gen, dtype=torch.float64)
        return torch.where(pad, garbage * torch.randn(h.shape, generator=gen, dtype=torch.float64), h)

    return [states(dt) for _ in range(n_layers)], [states(ds) for _ in range(n_layers)], mask


def value_and_grad(fn, teacher, student, mask):
    student = [s.clone().requires_grad_(True) for s in student]
    value = fn(teacher, student, mask)
    grads = torch.autograd.grad(value, student)
    return value.detach(), torch.cat([g.flatten() for g in grads])


CASES = [
    ("wr_pair", dict(loss="kl", metric="cos", temperature=0.1, centred=True)),
    ("wr_pair", dict(loss="kl", metric="cos", temperature=0.25, centred=False)),
    ("wr_pair", dict(loss="kl", metric="l2", temperature=0.5, centred=True)),
    ("wr_pair", dict(loss="mse", metric="cos", centred=True)),
    ("wr_pair", dict(loss="huber", metric="cos", centred=True)),
    ("ltr_pair", dict(loss="kl", metric="cos", temperature=0.2, centred=True)),
    ("ltr_pair", dict(loss="kl", metric="l2", temperature=3.0, centred=False)),
    ("ltr_pair", dict(loss="mse", metric="cos", centred=True)),
    ("ltr_triplet", dict(loss="mse", centred=True)),
    ("ltr_triplet", dict(loss="huber", centred=True)),
]
FUNCTIONS = {
    "wr_pair": (wr_pair_loss, ref_wr_pair),
    "ltr_pair": (ltr_pair_loss, ref_ltr_pair),
    "ltr_triplet": (ltr_triplet_loss, ref_ltr_triplet),
}


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o in CASES])
def test_options_match_loop_reference(name, options):
    fn, ref = FUNCTIONS[name]
    teacher, student, mask = make_batch(seed=1)
    got = value_and_grad(lambda t, s, m: fn(t, s, m, **options), teacher, student, mask)
    expected = value_and_grad(lambda t, s, m: ref(t, s, m, **options), teacher, student, mask)
    assert got[0].item() > 0
    assert got[0].item() == pytest.approx(expected[0].item(), rel=1e-9, abs=1e-13)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("triplet_loss", ["mse", "huber"])
def test_ckdloss_options_match_loop_reference(triplet_loss):
    """All four terms through CKDLoss (padding, a window, T and centring), values and the gradient of the total."""
    teacher, student, mask = make_batch(seed=2, lengths=(6, 5, 2), n_layers=4)
    weights = {"wr_pair": 1.0, "wr_triplet": 0.5, "ltr_pair": 2.0, "ltr_triplet": 0.25}
    options = dict(pair_temperature=0.3, centred=True, window=2, triplet_loss=triplet_loss)
    ckd = CKDLoss(weights, layer_map=[(1, 1), (2, 2), (3, 3)], **options)
    hidden_t = tuple(teacher)
    s = [x.clone().requires_grad_(True) for x in student]
    terms = ckd(hidden_t, tuple(s), mask)
    grad = torch.autograd.grad(ckd.total(terms), s[1:])

    r = [x.clone().requires_grad_(True) for x in student[1:]]
    t = teacher[1:]
    expected = {
        "wr_pair": ref_wr_pair(t, r, mask, temperature=0.3, centred=True),
        "wr_triplet": ref_wr_triplet(t, r, mask, loss=triplet_loss, window=2),
        "ltr_pair": ref_ltr_pair(t, r, mask, temperature=0.3, centred=True),
        "ltr_triplet": ref_ltr_triplet(t, r, mask, loss=triplet_loss, centred=True),
    }
    expected_grad = torch.autograd.grad(sum(weights[k] * v for k, v in expected.items()), r)
    for term, value in expected.items():
        assert terms[term].item() == pytest.approx(value.item(), rel=1e-9, abs=1e-13), term
    torch.testing.assert_close(torch.cat([g.flatten() for g in grad]),
                               torch.cat([g.flatten() for g in expected_grad]), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name,options", [
    ("wr_pair", dict(temperature=0.2, centred=True)),
    ("ltr_pair", dict(temperature=0.5, centred=True, metric="l2")),
    ("ltr_triplet", dict(centred=True, loss="huber")),
])
def test_options_gradcheck(name, options):
    fn = FUNCTIONS[name][0]
    teacher, student, mask = make_batch(seed=3, lengths=(4, 3), max_len=4, dt=3, ds=3, garbage=10.0)
    inputs = tuple(s.clone().requires_grad_(True) for s in student)
    assert torch.autograd.gradcheck(lambda *s: fn(teacher, list(s), mask, **options), inputs, eps=1e-6, atol=1e-7)


def test_temperature_one_is_the_default_and_centring_leaves_angles_and_distances_alone():
    teacher, student, mask = make_batch(seed=4)
    assert wr_pair_loss(teacher, student, mask, temperature=1.0).item() == wr_pair_loss(teacher, student, mask).item()
    torch.testing.assert_close(wr_pair_loss(teacher, student, mask, metric="l2", centred=True),
                               wr_pair_loss(teacher, student, mask, metric="l2"), rtol=1e-12, atol=0)
    plain, centred = CKDLoss(layer_map="uniform"), CKDLoss(layer_map="uniform", centred=True)
    hidden_t, hidden_s = tuple(teacher), tuple(student)
    torch.testing.assert_close(centred(hidden_t, hidden_s, mask)["wr_triplet"],
                               plain(hidden_t, hidden_s, mask)["wr_triplet"], rtol=1e-12, atol=0)
    # a lower temperature sharpens the softmax: the KL between different relation rows grows
    assert wr_pair_loss(teacher, student, mask, temperature=0.1) > wr_pair_loss(teacher, student, mask)


def test_centred_pair_loss_sees_a_shift_that_angles_do_not():
    """A student = teacher shifted by one large vector: angles match exactly, raw cosines go to ~1.

    The centred WR pair loss is then 0 (it compares the same centred states), the raw one is not.
    """
    teacher, _, mask = make_batch(seed=5, lengths=(6, 5), n_layers=2, dt=4)
    shift = 50.0 * torch.ones(4, dtype=torch.float64)
    student = [t + shift for t in teacher]
    assert abs(wr_triplet_loss(teacher, student, mask).item()) < 1e-12
    assert abs(wr_pair_loss(teacher, student, mask, centred=True).item()) < 1e-12
    assert wr_pair_loss(teacher, student, mask).item() > 1e-3
    rows = [student[0][b, : int(mask[b].sum())] for b in range(2)]
    raw_cos = [torch.nn.functional.cosine_similarity(r[:, None], r[None, :], dim=-1) for r in rows]
    assert min(c.min().item() for c in raw_cos) > 0.99  # collapsed in raw cosine terms


def test_centred_float32_with_a_large_common_offset_matches_float64():
    gen = torch.Generator().manual_seed(8)
    offset = 40.0 * torch.randn(64, generator=gen, dtype=torch.float64)
    teacher = [offset + torch.randn(3, 12, 64, generator=gen, dtype=torch.float64) for _ in range(3)]
    student = [0.5 * offset + torch.randn(3, 12, 64, generator=gen, dtype=torch.float64) for _ in range(3)]
    mask = (torch.arange(12)[None] < torch.tensor([[12], [9], [4]])).long()
    for fn in (wr_pair_loss, ltr_pair_loss):
        exact = fn(teacher, student, mask, temperature=0.1, centred=True)
        single = fn([t.float() for t in teacher], [s.float() for s in student], mask, temperature=0.1, centred=True)
        assert single.dtype == torch.float32
        assert single.item() == pytest.approx(exact.item(), rel=1e-4)


def test_option_errors():
    teacher, student, mask = make_batch(seed=6, lengths=(3, 2), max_len=3)
    with pytest.raises(ValueError, match=r"temperature=0 must be a finite number > 0"):
        wr_pair_loss(teacher, student, mask, temperature=0)
    with pytest.raises(ValueError, match=r"temperature=nan"):
        ltr_pair_loss(teacher, student, mask, temperature=float("nan"))
    with pytest.raises(ValueError, match=r"pair_temperature=0.5 scales the softmax.*'mse'.*leave pair_temperature"):
        CKDLoss(pair_loss="mse", pair_temperature=0.5)
    with pytest.raises(ValueError, match=r"pair_temperature=True"):
        CKDLoss(pair_temperature=True)
    with pytest.raises(ValueError, match=r"centred='yes' must be True or False"):
        CKDLoss(centred="yes")
    with pytest.raises(ValueError, match=r"centred=1 must be True or False"):
        ltr_triplet_loss(teacher, student, mask, centred=1)
    assert CKDLoss(pair_loss="huber", pair_temperature=1.0).pair_temperature == 1.0


def test_teacher_memo_with_centred_ltr_matches_afresh():
    teacher, student, mask = make_batch(seed=7, lengths=(6, 4, 5), n_layers=4)
    rows = torch.tensor([10, 11, 12])
    plain = CKDLoss(layer_map=[(1, 1), (2, 2), (3, 3)], centred=True, pair_temperature=0.5)
    memo = CKDLoss(layer_map=[(1, 1), (2, 2), (3, 3)], centred=True, pair_temperature=0.5, memoize_teacher=True)
    for _ in range(2):  # the second call reads the memo
        expected = plain(tuple(teacher), tuple(student), mask, rows=rows)
        got = memo(tuple(teacher), tuple(student), mask, rows=rows)
        for term in expected:
            assert got[term].item() == pytest.approx(expected[term].item(), rel=1e-10, abs=1e-13), term
    assert len(memo.teacher_memo) == 6  # WR and LTR Grams of three examples


def test_centred_wr_pair_relation_matches_definition():
    from ckdlab.objectives.relations import wr_pair_relation

    teacher, _, mask = make_batch(seed=9, lengths=(6, 3))
    h = teacher[0]
    got = wr_pair_relation(h, mask, centred=True)
    c = centre([h], mask)[0]
    for b in range(2):
        for i in range(6):
            for j in range(6):
                if mask[b, i] and mask[b, j]:
                    assert got[b, i, j].item() == pytest.approx(cos(c[b, i], c[b, j]).item(), rel=1e-10, abs=1e-14)
                else:
                    assert torch.isnan(got[b, i, j])
    with pytest.raises(ValueError, match=r"centred=None must be True or False"):
        wr_pair_relation(h, mask, centred=None)
