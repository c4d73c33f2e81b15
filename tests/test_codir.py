"""CoDIR (Sun et al. 2020): InfoNCE, label-aware negatives, the memory bank and the objective module,
against slow references written from the formulas (float64 where values are compared)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from scipy.stats import chi2
from transformers import BertConfig, BertModel

from ckdlab.objectives import CoDIR, build_codir, in_batch_info_nce_loss, info_nce_loss, sample_negatives, update_memory_bank
from ckdlab.objectives.codir import codir_layers, summarize_layers
from ckdlab.objectives.registry import BuildContext

DT = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- InfoNCE


def slow_info_nce(anchor, positive, negatives, tau):
    """−log( e^{a·p/τ} / (e^{a·p/τ} + Σ_k e^{a·n_k/τ}) ), averaged over anchors, one scalar at a time."""
    total = 0.0
    for b in range(anchor.shape[0]):
        a = anchor[b] / anchor[b].norm()
        p = positive[b] / positive[b].norm()
        pos = torch.exp(torch.dot(a, p) / tau)
        denom = pos
        for k in range(negatives.shape[1]):
            n = negatives[b, k] / negatives[b, k].norm()
            denom = denom + torch.exp(torch.dot(a, n) / tau)
        total = total - torch.log(pos / denom)
    return total / anchor.shape[0]


@pytest.mark.parametrize("b,k,d,tau", [(1, 1, 3, 1.0), (4, 7, 5, 0.07), (6, 13, 8, 0.5), (3, 2, 16, 2.0)])
def test_info_nce_matches_slow_loop_values_and_gradients(b, k, d, tau):
    g = gen(b * 100 + k)
    inputs = [torch.randn(*shape, generator=g, dtype=DT, requires_grad=True) for shape in ((b, d), (b, d), (b, k, d))]
    fast = info_nce_loss(*inputs, temperature=tau)
    fast_grads = torch.autograd.grad(fast, inputs)
    slow = slow_info_nce(*inputs, tau)
    slow_grads = torch.autograd.grad(slow, inputs)
    assert fast.dtype == DT
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    for got, want in zip(fast_grads, slow_grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_info_nce_is_stable_at_tiny_temperature():
    g = gen(1)
    a, p, n = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.randn(5, 9, 4, generator=g)
    loss = info_nce_loss(a, p, n, temperature=1e-4)  # logits up to 1e4: exp would overflow
    assert torch.isfinite(loss)
    # An anchor identical to its positive, with negatives pointing away, has (almost) zero loss.
    assert info_nce_loss(p, p, -p[:, None].expand(5, 3, 4).clone(), temperature=0.07) < 1e-10


def test_info_nce_half_precision_inputs_are_computed_in_float32():
    g = gen(2)
    a, p, n = (torch.randn(*s, generator=g) for s in ((3, 8), (3, 8), (3, 5, 8)))
    got = info_nce_loss(a.bfloat16(), p.bfloat16(), n.bfloat16())
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, info_nce_loss(a.bfloat16().float(), p.bfloat16().float(), n.bfloat16().float()))


def test_info_nce_bad_input_is_a_clear_error():
    a = torch.randn(3, 4)
    with pytest.raises(ValueError, match="temperature"):
        info_nce_loss(a, a, a[:, None], temperature=0.0)
    with pytest.raises(ValueError, match="negatives of shape"):
        info_nce_loss(a, a, torch.randn(3, 0, 4))
    with pytest.raises(ValueError, match="same shape"):
        info_nce_loss(a, torch.randn(2, 4), a[:, None])


def test_in_batch_info_nce_equals_info_nce_with_the_other_examples_as_negatives():
    g = gen(3)
    a = torch.randn(5, 6, generator=g, dtype=DT, requires_grad=True)
    p = torch.randn(5, 6, generator=g, dtype=DT, requires_grad=True)
    fast = in_batch_info_nce_loss(a, p, 0.1)
    negatives = torch.stack([torch.cat([p[:b], p[b + 1 :]]) for b in range(5)])  # [B, B−1, d]
    slow = slow_info_nce(a, p, negatives, 0.1)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    for got, want in zip(torch.autograd.grad(fast, (a, p)), torch.autograd.grad(slow, (a, p))):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 examples"):
        in_batch_info_nce_loss(a[:1], p[:1])


# ----------------------------------------------------------------------------- negatives


def test_sample_negatives_never_the_anchor_nor_its_label():
    labels = torch.randint(0, 3, (60,), generator=gen(4))
    index = torch.arange(60)
    negatives = sample_negatives(labels, index, 50, gen(5))
    assert negatives.shape == (60, 50) and negatives.dtype == torch.long
    assert (labels[negatives] != labels[index][:, None]).all()
    assert (negatives != index[:, None]).all()


@pytest.mark.parametrize("anchor", [0, 12, 29])  # one anchor of each class: eligible rows before, around, after it
def test_sample_negatives_is_uniform_over_the_eligible_rows(anchor):
    labels = torch.tensor([2] * 8 + [0] * 10 + [1] * 12)[torch.randperm(30, generator=gen(6))]
    eligible = (labels != labels[anchor]).nonzero().flatten()
    draws = 400 * len(eligible)
    negatives = sample_negatives(labels, torch.tensor([anchor]), draws, gen(7)).flatten()
    counts = torch.bincount(negatives, minlength=30).double()
    assert counts[labels == labels[anchor]].sum() == 0
    expected = draws / len(eligible)
    statistic = float(((counts[eligible] - expected) ** 2 / expected).sum())
    assert statistic < chi2.ppf(0.999, len(eligible) - 1), statistic


def test_sample_negatives_returns_k_rows_when_few_are_eligible():
    labels = torch.tensor([0, 0, 0, 1, 0])
    negatives = sample_negatives(labels, torch.tensor([0, 4, 3]), 9, gen(8))
    assert negatives.shape == (3, 9)
    assert (negatives[:2] == 3).all()  # the single example of another label, drawn 9 times
    assert set(negatives[2].tolist()) <= {0, 1, 2, 4}


def test_sample_negatives_regression_uses_the_label_distance():
    labels = torch.tensor([0.0, 0.5, 1.2, 2.2, 3.2, 3.9, 4.2, 5.0], dtype=torch.float32)
    index = torch.arange(8)
    negatives = sample_negatives(labels, index, 400, gen(9), min_label_distance=1.0)
    for b in range(8):
        # Brute force in float64 with a rounding allowance: 3.2 − 2.2 is exactly 1 on the 0–5 scale.
        distance = (labels.double() - labels.double()[b]).abs()
        eligible = set((distance >= 1.0 - 1e-6).nonzero().flatten().tolist())
        assert set(negatives[b].tolist()) == eligible, b
    assert 3 in negatives[4].tolist() and 4 in negatives[3].tolist()
    with pytest.raises(ValueError, match="min_label_distance"):
        sample_negatives(labels, index, 3)
    with pytest.raises(ValueError, match="min_label_distance"):
        sample_negatives(labels, index, 3, min_label_distance=0.0)


def test_sample_negatives_errors_and_reproducibility():
    with pytest.raises(ValueError, match="no negative example for row 1"):
        sample_negatives(torch.tensor([1, 1, 1]), torch.tensor([1]), 4)
    with pytest.raises(ValueError, match="more than one label|lower min_label_distance"):
        sample_negatives(torch.tensor([1.0, 1.5, 1.2]), torch.tensor([0]), 4, min_label_distance=1.0)
    with pytest.raises(ValueError, match="outside the training set"):
        sample_negatives(torch.tensor([0, 1]), torch.tensor([2]), 4)
    with pytest.raises(ValueError, match="k"):
        sample_negatives(torch.tensor([0, 1]), torch.tensor([0]), 0)
    labels, index = torch.randint(0, 4, (100,), generator=gen(10)), torch.arange(10)
    assert torch.equal(sample_negatives(labels, index, 20, gen(11)), sample_negatives(labels, index, 20, gen(11)))
    assert not torch.equal(sample_negatives(labels, index, 20, gen(11)), sample_negatives(labels, index, 20, gen(12)))


# ----------------------------------------------------------------------------- memory bank


def test_update_memory_bank_by_hand():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=DT)
    rows = torch.tensor([0, 2, 0])  # row 0 twice: its first occurrence counts
    new = torch.tensor([[0.0, 1.0], [0.0, -1.0], [5.0, 5.0]], dtype=DT)
    update_memory_bank(bank, rows, new, momentum=0.5)
    s = 1 / math.sqrt(2)
    # row 0: normalize(0.5·(1, 0) + 0.5·(0, 1)); row 2: normalize(0.5·(0.6, 0.8) + 0.5·(0, −1)) = normalize(0.3, −0.1)
    want = torch.tensor([[s, s], [0.0, 1.0], [3 / math.sqrt(10), -1 / math.sqrt(10)]], dtype=DT)
    torch.testing.assert_close(bank, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="momentum"):
        update_memory_bank(bank, rows, new, momentum=1.0)


# ----------------------------------------------------------------------------- the module


def fake_outputs(g, b, length, width, n_states, requires_grad=False):
    mask = torch.ones(b, length, dtype=torch.long)
    mask[0, length - 2 :] = 0
    states = tuple(
        torch.randn(b, length, width, generator=g, dtype=DT).requires_grad_(requires_grad) for _ in range(n_states)
    )
    return SimpleNamespace(logits=None, hidden_states=states), mask


def make_codir(**kw):
    kw.setdefault("dim", 8)
    kw.setdefault("negatives", 6)
    return CoDIR([2, 4], [1, 2], 12, 10, **kw).double()


LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 0, 1, 2, 2, 0, 1, 1, 0])


def step_batch(seed, rows, requires_grad=False):
    g = gen(seed)
    teacher, mask = fake_outputs(g, len(rows), 7, 12, 5, requires_grad)
    student, _ = fake_outputs(g, len(rows), 7, 10, 3, requires_grad=True)
    return teacher, student, {"row": torch.tensor(rows), "attention_mask": mask, "labels": LABELS[rows]}


def test_summaries_cls_and_masked_mean():
    g = gen(13)
    out, mask = fake_outputs(g, 3, 5, 4, 3)
    cls = summarize_layers(out.hidden_states, [2, 0], mask, "cls", "student")
    torch.testing.assert_close(cls, torch.cat([out.hidden_states[2][:, 0], out.hidden_states[0][:, 0]], -1))
    mean = summarize_layers(out.hidden_states, [1], mask, "mean", "student")
    for b in range(3):
        valid = [out.hidden_states[1][b, i] for i in range(5) if mask[b, i]]
        torch.testing.assert_close(mean[b], sum(valid) / len(valid))
    with pytest.raises(ValueError, match="hidden state 1"):
        summarize_layers((out.hidden_states[0], None), [1], mask, "cls", "teacher")


def test_loss_is_info_nce_against_bank_rows_of_other_labels():
    codir = make_codir()
    codir.bind_training_set(LABELS, regression=False)
    teacher, student, batch = step_batch(14, [0, 5, 9])
    negatives = codir.draw_negatives(batch["row"])
    assert (LABELS[negatives] != LABELS[batch["row"]][:, None]).all()
    got = codir(teacher, student, batch)["codir"]
    z_s = codir.student_head(torch.cat([student.hidden_states[1][:, 0], student.hidden_states[2][:, 0]], -1))
    z_t = codir.teacher_head(torch.cat([teacher.hidden_states[2][:, 0], teacher.hidden_states[4][:, 0]], -1))
    torch.testing.assert_close(got, slow_info_nce(z_s, z_t, codir.bank[negatives], 0.07), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("symmetric", [False, True])
def test_gradient_reaches_student_and_heads_never_the_teacher(symmetric):
    codir = make_codir(symmetric=symmetric)
    codir.bind_training_set(LABELS, regression=False)
    teacher, student, batch = step_batch(15, [1, 2, 3, 4], requires_grad=True)
    codir(teacher, student, batch)["codir"].backward()
    for index in (1, 2):
        assert student.hidden_states[index].grad is not None and student.hidden_states[index].grad.abs().sum() > 0
    assert student.hidden_states[0].grad is None  # embeddings are not a mapped layer
    assert all(state.grad is None for state in teacher.hidden_states)
    for head in (codir.student_head, codir.teacher_head):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert not codir.bank.requires_grad


def test_after_step_applies_the_momentum_update_with_gathered_rows():
    codir = make_codir(symmetric=True)
    codir.bind_training_set(LABELS, regression=False)
    bank, student_bank = codir.bank.clone(), codir.student_bank.clone()
    teacher, student, batch = step_batch(16, [3, 7])
    codir(teacher, student, batch)
    _, z_t, z_s = codir._pending
    other_rows, other_z = torch.tensor([10, 3]), torch.randn(2, 8, generator=gen(17), dtype=DT)
    # A second process's batch, as accelerate's gather concatenates it (row 3 repeats: first one wins).
    codir.after_step(lambda t: torch.cat([t, other_rows if t.dtype == torch.long else other_z]))
    for row, new_t, new_s in ((3, z_t[0], z_s[0]), (7, z_t[1], z_s[1]), (10, other_z[0], other_z[0])):
        want_t = 0.5 * bank[row] + 0.5 * new_t
        want_s = 0.5 * student_bank[row] + 0.5 * new_s
        torch.testing.assert_close(codir.bank[row], want_t / want_t.norm(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(codir.student_bank[row], want_s / want_s.norm(), rtol=1e-12, atol=1e-12)
    untouched = [r for r in range(16) if r not in (3, 7, 10)]
    assert torch.equal(codir.bank[untouched], bank[untouched])
    codir.after_step()  # nothing pending: a no-op
    assert codir._pending is None


def run_steps(codir, seeds):
    losses = []
    for seed in seeds:
        rows = torch.randperm(16, generator=gen(seed))[:4].tolist()
        losses.append(codir(*step_batch(seed, rows))["codir"])
        codir.after_step()
    return losses


@pytest.mark.parametrize("bind_first", [False, True])
def test_state_dict_round_trip_restores_bank_and_sampling(bind_first, tmp_path):
    from safetensors.torch import load_file, save_file

    codir = make_codir(symmetric=True, seed=3)
    codir.bind_training_set(LABELS, regression=False)
    run_steps(codir, [20, 21, 22])
    save_file(codir.state_dict(), tmp_path / "codir.safetensors")  # the format accelerate checkpoints use
    fresh = make_codir(symmetric=True, seed=3)
    if bind_first:
        fresh.bind_training_set(LABELS, regression=False)
    fresh.load_state_dict(load_file(tmp_path / "codir.safetensors"))
    fresh.bind_training_set(LABELS, regression=False)  # binding the same labels again keeps the state
    assert int(fresh.draws) == 3
    rows = torch.tensor([0, 5, 11])
    assert torch.equal(fresh.draw_negatives(rows), codir.draw_negatives(rows))
    for a, b in zip(run_steps(codir, [23, 24]), run_steps(fresh, [23, 24])):
        assert torch.equal(a, b)
    assert torch.equal(fresh.bank, codir.bank) and torch.equal(fresh.student_bank, codir.student_bank)
    fresh.float().bind_training_set(LABELS, regression=False)  # a dtype cast does not make the labels look new
    assert int(fresh.draws) == 5 and torch.equal(fresh.bank, codir.bank.float())


def test_negatives_change_from_step_to_step_and_with_process_index():
    codir = make_codir()
    codir.bind_training_set(LABELS, regression=False)
    rows = torch.arange(16)
    first = codir.draw_negatives(rows)
    codir.process_index = 1
    assert not torch.equal(first, codir.draw_negatives(rows))
    codir.process_index = 0
    run_steps(codir, [25])
    assert not torch.equal(first, codir.draw_negatives(rows))


def test_eval_mode_and_zero_weight_change_no_state():
    codir = make_codir(symmetric=True)
    codir.bind_training_set(LABELS, regression=False)
    before = {k: v.clone() for k, v in codir.state_dict().items()}
    teacher, student, batch = step_batch(26, [0, 1, 2])
    assert codir(teacher, student, batch, weights={"codir": 0.0}) == {}
    codir.eval()
    first = codir(teacher, student, batch, weights={"codir": 0.1})["codir"]
    second = codir(teacher, student, batch)["codir"]
    codir.after_step()
    assert torch.equal(first, second) and codir._pending is None
    for key, value in codir.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_same_seed_same_module_and_the_global_rng_is_untouched():
    state = torch.random.get_rng_state()
    a, b = make_codir(seed=5), make_codir(seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    a.bind_training_set(LABELS, False)
    b.bind_training_set(LABELS, False)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key
    assert torch.allclose(a.bank.norm(dim=-1), torch.ones(16, dtype=DT))
    assert not torch.equal(make_codir(seed=6).student_head.weight, a.student_head.weight)


def test_regression_negatives_and_clear_errors():
    codir = make_codir()
    scores = torch.tensor([0.0, 0.4, 1.5, 2.2, 3.2, 4.8, 5.0, 2.9])
    codir.bind_training_set(scores, regression=True)
    negatives = codir.draw_negatives(torch.arange(8))
    assert ((scores[negatives] - scores[:, None]).abs() >= 1.0 - 1e-6).all()
    teacher, student, batch = step_batch(27, [0, 1])
    with pytest.raises(ValueError, match="bind_training_set"):
        make_codir()(teacher, student, batch)
    codir = make_codir()
    codir.bind_training_set(LABELS, False)
    with pytest.raises(ValueError, match=r"batch\['row'\]"):
        codir(teacher, student, {k: v for k, v in batch.items() if k != "row"})
    with pytest.raises(ValueError, match="min_label_distance"):
        make_codir().bind_training_set(scores, regression=False)
    with pytest.raises(ValueError, match="no negative example"):
        make_codir().bind_training_set(torch.zeros(5, dtype=torch.long), regression=False)
    for bad in ({"pooling": "max"}, {"form": "mlm"}, {"dim": 0}, {"momentum": 1.0}, {"nce_temperature": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make_codir(**bad)


def test_pretrain_form_in_batch_negatives_needs_no_labels():
    codir = make_codir(form="pretrain", symmetric=True)
    codir.bind_training_set(LABELS, False)  # a no-op: no bank
    assert codir.bank.shape[0] == 0
    teacher, student, batch = step_batch(28, [0, 1, 2])
    got = codir(teacher, student, {"attention_mask": batch["attention_mask"]})["codir"]
    z_s, z_t = codir.project(teacher, student, batch["attention_mask"])
    torch.testing.assert_close(got, 0.5 * (in_batch_info_nce_loss(z_s, z_t) + in_batch_info_nce_loss(z_t, z_s)))
    teacher, student, batch = step_batch(29, [0])
    with pytest.raises(ValueError, match="at least 2 examples"):
        codir(teacher, student, batch)


def tiny_config(layers, hidden):
    return BertConfig(vocab_size=40, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden)


def test_build_from_context_layer_choices():
    teacher_config, student_config = tiny_config(4, 12), tiny_config(2, 10)

    def ctx(**options):
        return BuildContext(teacher_config, student_config, [(0, 0), (2, 1), (4, 2)], regression=False, options=options)

    codir = build_codir(ctx(dim=16, window=3))  # another objective's option is ignored
    assert (codir.teacher_layers, codir.student_layers, codir.dim) == ((2, 4), (1, 2), 16)
    assert codir.teacher_head.in_features == 24 and codir.student_head.in_features == 20
    assert codir_layers([], {"layers": "1-1,3-2"}, 4, 2) == ((1, 3), (1, 2))
    assert codir_layers([], {"teacher_layers": range(1, 5), "student_layers": [1, 2]}, 4, 2) == ((1, 2, 3, 4), (1, 2))
    with pytest.raises(ValueError, match="not both"):
        build_codir(ctx(layers="1-1", teacher_layers=[1], student_layers=[1]))
    with pytest.raises(ValueError, match="past the teacher"):
        build_codir(ctx(teacher_layers=[5], student_layers=[1]))
    with pytest.raises(ValueError, match="student_layers too"):
        build_codir(ctx(teacher_layers=[1]))


def test_a_few_steps_of_a_tiny_student_lower_the_loss():
    torch.manual_seed(0)
    n, length = 24, 6
    labels = torch.arange(n) % 3
    ids = torch.randint(1, 40, (n, length), generator=gen(30))
    mask = torch.ones(n, length, dtype=torch.long)
    # Fixed teacher states that carry the examples' identities: a random projection of the token ids.
    table = torch.randn(40, 12, generator=gen(31))
    teacher_states = tuple(torch.tanh(table[ids] * (1 + i)) for i in range(5))
    student = BertModel(tiny_config(2, 10), add_pooling_layer=False)
    codir = CoDIR([2, 4], [1, 2], 12, 10, dim=8, negatives=10, seed=1)
    codir.bind_training_set(labels, regression=False)
    optimizer = torch.optim.Adam([*student.parameters(), *codir.parameters()], lr=3e-3)

    def loss_on(rows):
        out = student(input_ids=ids[rows], attention_mask=mask[rows], output_hidden_states=True)
        teacher = SimpleNamespace(hidden_states=tuple(h[rows] for h in teacher_states))
        return codir(teacher, out, {"row": rows, "attention_mask": mask[rows]})["codir"]

    every = torch.arange(n)
    student.eval(), codir.eval()
    with torch.no_grad():
        before = loss_on(every)
    student.train(), codir.train()
    for step in range(40):
        rows = torch.randperm(n, generator=gen(100 + step))[:8]
        loss = loss_on(rows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        codir.after_step()
    student.eval(), codir.eval()
    with torch.no_grad():
        after = loss_on(every)
    assert after < 0.5 * before, (float(before), float(after))


def test_mixed_precision_keeps_the_loss_and_the_bank_in_float32():
    codir = CoDIR([2, 4], [1, 2], 12, 10, dim=8, negatives=6, symmetric=True)
    codir.bind_training_set(LABELS, regression=False)
    teacher, student, batch = step_batch(32, [0, 1, 2, 3])
    teacher.hidden_states = tuple(h.float() for h in teacher.hidden_states)
    student.hidden_states = tuple(h.detach().float().requires_grad_() for h in student.hidden_states)
    codir.eval()
    full = codir(teacher, student, batch)["codir"]
    codir.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = codir(teacher, student, batch)["codir"]
    mixed.backward()
    codir.after_step()
    mixed, full = mixed.detach(), full.detach()
    assert mixed.dtype == torch.float32 and abs(mixed.item() - full.item()) < 0.05 * full.item()
    assert codir.bank.dtype == torch.float32 and codir.student_bank.dtype == torch.float32
    torch.testing.assert_close(codir.bank.norm(dim=-1), torch.ones(16))
