"""Distillation baselines against slow references written straight from the papers' formulas.

Fake model outputs are float64 with random padding, and padded positions hold large garbage so a loss that
forgets the mask is visibly wrong.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel

from ckdlab.models.capture import capture_qkv
from ckdlab.objectives.distilbert import DistilBERTCosine
from ckdlab.objectives.kd import CrossEntropy, LogitKD, mix_kd_ce
from ckdlab.objectives.minilm import MiniLM
from ckdlab.objectives.pkd import PKD
from ckdlab.objectives.tinybert import TinyBERT

DT = torch.float64


# ----------------------------------------------------------------------------- fixtures


def random_mask(gen: torch.Generator, b: int, l: int) -> torch.Tensor:
    """Right-padded mask with random lengths in [1, l]; at least one row is padded."""
    lengths = torch.randint(1, l + 1, (b,), generator=gen)
    lengths[0] = max(1, l - 2)
    return (torch.arange(l)[None, :] < lengths[:, None]).long()


def with_garbage(x: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    garbage = 1e3 * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    return torch.where(mask.bool()[..., None], x, garbage)


def fake_output(gen, mask, d, n_layers, n_labels=3, requires_grad=False):
    b, l = mask.shape
    hidden = tuple(with_garbage(torch.randn(b, l, d, generator=gen, dtype=DT), mask, gen) for _ in range(n_layers + 1))
    qkv = [
        tuple(with_garbage(torch.randn(b, l, d, generator=gen, dtype=DT), mask, gen) for _ in range(3))
        for _ in range(n_layers)
    ]
    logits = torch.randn(b, n_labels, generator=gen, dtype=DT)
    if requires_grad:
        hidden = tuple(h.requires_grad_() for h in hidden)
        qkv = [tuple(t.requires_grad_() for t in layer) for layer in qkv]
        logits.requires_grad_()
    return SimpleNamespace(logits=logits, hidden_states=hidden, qkv=qkv)


def pad_more(out, mask, extra, gen):
    """Append ``extra`` padded positions full of garbage to every sequence tensor."""
    b, l = mask.shape

    def grow(x):
        return torch.cat([x, 1e3 * torch.randn(b, extra, x.shape[-1], generator=gen, dtype=x.dtype)], dim=1)

    new = SimpleNamespace(
        logits=out.logits,
        hidden_states=tuple(grow(h) for h in out.hidden_states),
        qkv=[tuple(grow(t) for t in layer) for layer in out.qkv],
    )
    return new, torch.cat([mask, torch.zeros(b, extra, dtype=mask.dtype)], dim=1)


def valid_positions(mask):
    return [(b, i) for b in range(mask.shape[0]) for i in range(mask.shape[1]) if mask[b, i]]


# ----------------------------------------------------------------------------- slow references


def ref_softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    s = sum(e)
    return [v / s for v in e]


def ref_kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0)


def ref_kd(z_t, z_s, temperature):
    total = 0.0
    for zt, zs in zip(z_t.tolist(), z_s.tolist()):
        p_t = ref_softmax([v / temperature for v in zt])
        p_s = ref_softmax([v / temperature for v in zs])
        total += ref_kl(p_t, p_s)
    return temperature**2 * total / len(z_t)


def ref_pkd(hs_t, hs_s, pairs):
    total = 0.0
    for t, s in pairs:
        for b in range(hs_t[0].shape[0]):
            u, v = hs_s[s][b, 0].tolist(), hs_t[t][b, 0].tolist()
            nu, nv = math.sqrt(sum(x * x for x in u)), math.sqrt(sum(x * x for x in v))
            total += sum((a / nu - c / nv) ** 2 for a, c in zip(u, v)) / hs_t[0].shape[0]
    return total


def ref_token_mse(pred_fn, hs_target, mask):
    pos = valid_positions(mask)
    d = hs_target.shape[-1]
    total = 0.0
    for b, i in pos:
        pred = pred_fn(b, i)
        total += sum((pred[c] - hs_target[b, i, c].item()) ** 2 for c in range(d))
    return total / (len(pos) * d)


def ref_linear(module, vec):
    if isinstance(module, torch.nn.Identity):
        return vec.tolist()
    w, bias = module.weight.detach(), module.bias.detach()
    return [
        sum(w[o, c].item() * vec[c].item() for c in range(vec.shape[0])) + bias[o].item() for o in range(w.shape[0])
    ]


def ref_score(q, k, b, i, j, head, d_head):
    sl = slice(head * d_head, (head + 1) * d_head)
    return sum(x * y for x, y in zip(q[b, i, sl].tolist(), k[b, j, sl].tolist())) / math.sqrt(d_head)


def ref_tinybert(teacher, student, mask, pairs, module, n_heads):
    hs_t, hs_s = teacher.hidden_states, student.hidden_states
    emb = ref_token_mse(lambda b, i: ref_linear(module.proj_emb, hs_s[0][b, i]), hs_t[0], mask)
    hidden = sum(
        ref_token_mse(lambda b, i, s=s: ref_linear(module.proj_hidden, hs_s[s][b, i]), hs_t[t], mask)
        for t, s in pairs
    )
    pos = valid_positions(mask)
    attn = 0.0
    for t, s in pairs:
        (q_t, k_t, _), (q_s, k_s, _) = teacher.qkv[t - 1], student.qkv[s - 1]
        dh_t, dh_s = q_t.shape[-1] // n_heads, q_s.shape[-1] // n_heads
        sq, count = 0.0, 0
        for b, i in pos:
            for j in range(mask.shape[1]):
                if not mask[b, j]:
                    continue
                for h in range(n_heads):
                    diff = ref_score(q_s, k_s, b, i, j, h, dh_s) - ref_score(q_t, k_t, b, i, j, h, dh_t)
                    sq += diff * diff
                    count += 1
        attn += sq / count
    return {"tinybert_hidden": hidden, "tinybert_attn": attn, "tinybert_emb": emb}


def ref_relation_kl(x_t, y_t, x_s, y_s, mask, n_rel):
    dr_t, dr_s = x_t.shape[-1] // n_rel, x_s.shape[-1] // n_rel
    total, rows = 0.0, 0
    for b, i in valid_positions(mask):
        keys = [j for j in range(mask.shape[1]) if mask[b, j]]
        for r in range(n_rel):
            p_t = ref_softmax([ref_score(x_t, y_t, b, i, j, r, dr_t) for j in keys])
            p_s = ref_softmax([ref_score(x_s, y_s, b, i, j, r, dr_s) for j in keys])
            total += ref_kl(p_t, p_s)
            rows += 1
    return total / rows


def ref_cosine(hs_t, hs_s, mask, pairs):
    pos = valid_positions(mask)
    total = 0.0
    for t, s in pairs:
        for b, i in pos:
            u, v = hs_s[s][b, i].tolist(), hs_t[t][b, i].tolist()
            dot = sum(x * y for x, y in zip(u, v))
            total += (1 - dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))) / len(pos)
    return total


# ----------------------------------------------------------------------------- cross-entropy and KD


def test_cross_entropy_classification_and_regression():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=gen, dtype=DT)
    labels = torch.tensor([0, 2, 1, 2])
    out = CrossEntropy()(None, SimpleNamespace(logits=logits), {"labels": labels})
    expected = -sum(math.log(ref_softmax(row)[y]) for row, y in zip(logits.tolist(), labels.tolist())) / 4
    assert out["ce"].item() == pytest.approx(expected, rel=1e-12)

    reg = torch.randn(4, 1, generator=gen, dtype=DT)
    y = torch.randn(4, generator=gen, dtype=DT)
    out = CrossEntropy()(None, SimpleNamespace(logits=reg), {"labels": y})
    assert out["ce"].item() == pytest.approx(sum((a - c) ** 2 for a, c in zip(reg[:, 0].tolist(), y.tolist())) / 4)

    with pytest.raises(ValueError, match="num_labels=1"):
        CrossEntropy()(None, SimpleNamespace(logits=logits), {"labels": y})
    with pytest.raises(ValueError, match="integer class labels"):
        CrossEntropy(regression=False)(None, SimpleNamespace(logits=logits), {"labels": y})
    with pytest.raises(ValueError, match="labels"):
        CrossEntropy()(None, SimpleNamespace(logits=logits), {})


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_logit_kd_matches_reference(temperature):
    gen = torch.Generator().manual_seed(1)
    z_t, z_s = 3 * torch.randn(5, 4, generator=gen, dtype=DT), 3 * torch.randn(5, 4, generator=gen, dtype=DT)
    kd = LogitKD(temperature=temperature)
    got = kd(SimpleNamespace(logits=z_t), SimpleNamespace(logits=z_s), {})["kd"]
    assert got.item() == pytest.approx(ref_kd(z_t, z_s, temperature), rel=1e-10)


def test_logit_kd_gradient_carries_t_squared():
    gen = torch.Generator().manual_seed(2)
    b, n = 3, 5
    z_t = torch.randn(b, n, generator=gen, dtype=DT)
    z_s = torch.randn(b, n, generator=gen, dtype=DT)
    # Exact: d kd / d z_s = T · (softmax(z_s/T) − softmax(z_t/T)) / B.
    for temperature in (1.0, 3.0):
        zs = z_s.clone().requires_grad_()
        LogitKD(temperature)(SimpleNamespace(logits=z_t), SimpleNamespace(logits=zs), {})["kd"].backward()
        expected = temperature * (torch.softmax(z_s / temperature, -1) - torch.softmax(z_t / temperature, -1)) / b
        torch.testing.assert_close(zs.grad, expected, rtol=1e-10, atol=1e-12)
    # High-T limit (Hinton §2.1): with zero-mean logits the gradient tends to (z_s − z_t) / (N·B), independent
    # of T; without the T² factor it would be 10⁶ times smaller here.
    z_t0, z_s0 = z_t - z_t.mean(-1, keepdim=True), z_s - z_s.mean(-1, keepdim=True)
    zs = z_s0.clone().requires_grad_()
    LogitKD(1000.0)(SimpleNamespace(logits=z_t0), SimpleNamespace(logits=zs), {})["kd"].backward()
    torch.testing.assert_close(zs.grad, (z_s0 - z_t0) / (n * b), rtol=1e-2, atol=1e-6)


def test_logit_kd_temperature_is_live_and_validated():
    gen = torch.Generator().manual_seed(3)
    z_t, z_s = torch.randn(2, 3, generator=gen, dtype=DT), torch.randn(2, 3, generator=gen, dtype=DT)
    kd = LogitKD(temperature=1.0)
    kd.temperature = 2.5
    got = kd(SimpleNamespace(logits=z_t), SimpleNamespace(logits=z_s), {})["kd"]
    assert got.item() == pytest.approx(ref_kd(z_t, z_s, 2.5), rel=1e-10)
    kd.temperature = 0.0
    with pytest.raises(ValueError, match="temperature"):
        kd(SimpleNamespace(logits=z_t), SimpleNamespace(logits=z_s), {})
    with pytest.raises(ValueError, match="temperature"):
        LogitKD(temperature=-1.0)
    with pytest.raises(ValueError, match="num_labels"):
        LogitKD()(SimpleNamespace(logits=z_t), SimpleNamespace(logits=z_s[:, :2]), {})


def test_logit_kd_regression_is_mse_and_large_logits_are_finite():
    gen = torch.Generator().manual_seed(4)
    z_t, z_s = torch.randn(6, 1, generator=gen, dtype=DT), torch.randn(6, 1, generator=gen, dtype=DT)
    got = LogitKD(temperature=7.0, regression=True)(SimpleNamespace(logits=z_t), SimpleNamespace(logits=z_s), {})
    expected = sum((a - c) ** 2 for a, c in zip(z_s[:, 0].tolist(), z_t[:, 0].tolist())) / 6
    assert got["kd"].item() == pytest.approx(expected)
    # A teacher probability that underflows to 0 must not give 0·log 0 = NaN.
    big_t = torch.tensor([[1000.0, -1000.0, 0.0]])
    zs = torch.tensor([[0.0, 1.0, 2.0]], requires_grad=True)
    kd = LogitKD(1.0)(SimpleNamespace(logits=big_t), SimpleNamespace(logits=zs), {})["kd"]
    kd.backward()
    assert torch.isfinite(kd) and torch.isfinite(zs.grad).all()


def test_mix_kd_ce():
    kd, ce = torch.tensor(2.0), torch.tensor(6.0)
    assert mix_kd_ce(kd, ce, 0.25).item() == pytest.approx(0.25 * 2 + 0.75 * 6)
    with pytest.raises(ValueError, match="alpha"):
        mix_kd_ce(kd, ce, 1.5)


# ----------------------------------------------------------------------------- hidden-state baselines


def test_pkd_matches_reference_and_validates():
    gen = torch.Generator().manual_seed(5)
    mask = random_mask(gen, 3, 6)
    teacher, student = fake_output(gen, mask, 8, 4), fake_output(gen, mask, 8, 2)
    pairs = [(0, 0), (2, 1), (4, 2)]
    got = PKD(pairs)(teacher, student, {"attention_mask": mask})["pkd"]
    assert got.item() == pytest.approx(ref_pkd(teacher.hidden_states, student.hidden_states, pairs[1:]), rel=1e-10)

    narrow = fake_output(gen, mask, 4, 2)
    with pytest.raises(ValueError, match="equal hidden widths"):
        PKD([(2, 1)])(teacher, narrow, {"attention_mask": mask})
    with pytest.raises(ValueError, match="out of range"):
        PKD([(5, 1)])(teacher, student, {"attention_mask": mask})
    with pytest.raises(ValueError, match="map 0 only to 0"):
        PKD([(0, 1)])
    with pytest.raises(ValueError, match="at least one transformer layer"):
        PKD([(0, 0)])
    with pytest.raises(ValueError, match="non-empty"):
        PKD([])


def test_distilbert_cosine_matches_reference():
    gen = torch.Generator().manual_seed(6)
    mask = random_mask(gen, 3, 6)
    teacher, student = fake_output(gen, mask, 8, 4), fake_output(gen, mask, 8, 2)
    pairs = [(2, 1), (4, 2)]
    got = DistilBERTCosine(pairs)(teacher, student, {"attention_mask": mask})["distilbert_cos"]
    expected = ref_cosine(teacher.hidden_states, student.hidden_states, mask, pairs)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    with pytest.raises(ValueError, match="equal hidden widths"):
        DistilBERTCosine(pairs)(teacher, fake_output(gen, mask, 4, 2), {"attention_mask": mask})
    with pytest.raises(ValueError, match="attention_mask"):
        DistilBERTCosine(pairs)(teacher, student, {"attention_mask": mask[:, :3]})


@pytest.mark.parametrize("d_student", [8, 6])
def test_tinybert_matches_reference(d_student):
    gen = torch.Generator().manual_seed(7)
    mask = random_mask(gen, 2, 5)
    teacher, student = fake_output(gen, mask, 8, 4), fake_output(gen, mask, d_student, 2)
    pairs = [(2, 1), (4, 2)]
    module = TinyBERT([(0, 0)] + pairs, d_teacher=8, d_student=d_student, n_heads_teacher=2, n_heads_student=2)
    module = module.to(DT)
    assert isinstance(module.proj_hidden, torch.nn.Identity) == (d_student == 8)
    got = module(teacher, student, {"attention_mask": mask})
    expected = ref_tinybert(teacher, student, mask, pairs, module, n_heads=2)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].item() == pytest.approx(value, rel=1e-9), name


def test_tinybert_projection_is_trained_and_teacher_is_not():
    gen = torch.Generator().manual_seed(8)
    mask = random_mask(gen, 2, 5)
    teacher = fake_output(gen, mask, 8, 2, requires_grad=True)
    student = fake_output(gen, mask, 4, 1, requires_grad=True)
    module = TinyBERT([(2, 1)], 8, 4, 2, 2).to(DT)
    sum(module(teacher, student, {"attention_mask": mask}).values()).backward()
    assert module.proj_hidden.weight.grad.abs().sum() > 0 and module.proj_emb.weight.grad.abs().sum() > 0
    assert student.qkv[0][0].grad.abs().sum() > 0
    assert all(h.grad is None for h in teacher.hidden_states)
    # Padded positions must receive no gradient.
    assert (student.hidden_states[1].grad[~mask.bool()] == 0).all()


def test_tinybert_rejects_invalid_configurations():
    gen = torch.Generator().manual_seed(9)
    mask = random_mask(gen, 2, 5)
    teacher, student = fake_output(gen, mask, 8, 2), fake_output(gen, mask, 8, 1)
    with pytest.raises(ValueError, match="equal head counts"):
        TinyBERT([(2, 1)], 8, 8, 4, 2)
    with pytest.raises(ValueError, match="not divisible"):
        TinyBERT([(2, 1)], 8, 6, 4, 4)
    with pytest.raises(ValueError, match="built for widths"):
        TinyBERT([(2, 1)], 16, 8, 2, 2)(teacher, student, {"attention_mask": mask})
    with pytest.raises(ValueError, match="capture_qkv"):
        no_qkv = SimpleNamespace(logits=None, hidden_states=student.hidden_states)
        TinyBERT([(2, 1)], 8, 8, 2, 2)(teacher, no_qkv, {"attention_mask": mask})
    partial = SimpleNamespace(logits=None, hidden_states=teacher.hidden_states, qkv=teacher.qkv[-1:])
    with pytest.raises(ValueError, match="every layer"):
        TinyBERT([(2, 1)], 8, 8, 2, 2)(partial, student, {"attention_mask": mask})
    with pytest.raises(ValueError, match="attention_mask"):
        TinyBERT([(2, 1)], 8, 8, 2, 2)(teacher, student, {})


# ----------------------------------------------------------------------------- MiniLM


@pytest.mark.parametrize("relations", [("qk", "vv"), ("qq", "kk", "vv")])
def test_minilm_different_head_counts_matches_reference(relations):
    # Teacher: 4 heads, d = 32; student: 2 heads, d = 16 — MiniLM never sees the head counts; 4 relation heads.
    gen = torch.Generator().manual_seed(10)
    mask = random_mask(gen, 2, 5)
    teacher, student = fake_output(gen, mask, 32, 2), fake_output(gen, mask, 16, 1)
    got = MiniLM(n_relation_heads=4, relations=relations)(teacher, student, {"attention_mask": mask})
    names = {"qk": "minilm_attn", "vv": "minilm_value", "qq": "minilm_qq", "kk": "minilm_kk"}
    assert set(got) == {names[r] for r in relations}
    pos = {"q": 0, "k": 1, "v": 2}
    for rel in relations:
        (t, s), (i, j) = (teacher.qkv[-1], student.qkv[-1]), (pos[rel[0]], pos[rel[1]])
        expected = ref_relation_kl(t[i], t[j], s[i], s[j], mask, 4)
        assert got[names[rel]].item() == pytest.approx(expected, rel=1e-9), rel


def test_minilm_layer_choice_and_errors():
    gen = torch.Generator().manual_seed(11)
    mask = random_mask(gen, 2, 5)
    teacher, student = fake_output(gen, mask, 8, 3), fake_output(gen, mask, 4, 2)
    got = MiniLM(2, teacher_layer=1, student_layer=0, relations=("vv",))(teacher, student, {"attention_mask": mask})
    t, s = teacher.qkv[1], student.qkv[0]
    assert got["minilm_value"].item() == pytest.approx(ref_relation_kl(t[2], t[2], s[2], s[2], mask, 2), rel=1e-9)

    with pytest.raises(ValueError, match="not divisible"):
        MiniLM(3)(teacher, student, {"attention_mask": mask})
    with pytest.raises(ValueError, match="out of range"):
        MiniLM(2, teacher_layer=3)(teacher, student, {"attention_mask": mask})
    with pytest.raises(ValueError, match="relations"):
        MiniLM(2, relations=("qv",))
    with pytest.raises(ValueError, match="string"):
        MiniLM(2, relations="qk")
    with pytest.raises(ValueError, match="n_relation_heads"):
        MiniLM(0)


def test_minilm_fully_padded_sequence_gives_no_nan():
    gen = torch.Generator().manual_seed(12)
    mask = random_mask(gen, 3, 4)
    mask[2] = 0
    teacher, student = fake_output(gen, mask, 8, 1), fake_output(gen, mask, 8, 1, requires_grad=True)
    got = MiniLM(2)(teacher, student, {"attention_mask": mask})
    sum(got.values()).backward()
    assert all(torch.isfinite(v) for v in got.values())
    assert all(torch.isfinite(t.grad).all() for t in student.qkv[0])
    (q_t, k_t, _), (q_s, k_s, _) = teacher.qkv[0], student.qkv[0]
    expected = ref_relation_kl(q_t, k_t, q_s.detach(), k_s.detach(), mask, 2)
    assert got["minilm_attn"].item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="no valid token"):
        MiniLM(2)(teacher, student, {"attention_mask": torch.zeros_like(mask)})


# ----------------------------------------------------------------------------- properties shared by all terms


def all_objectives(d_t, d_s, heads):
    return [
        LogitKD(temperature=2.0),
        PKD([(2, 1), (4, 2)]),
        TinyBERT([(0, 0), (2, 1), (4, 2)], d_t, d_s, heads, heads).to(DT),
        MiniLM(n_relation_heads=2, relations=("qk", "vv", "qq", "kk")),
        DistilBERTCosine([(4, 2)]),
    ]


def test_teacher_equal_to_student_gives_zero_for_every_term():
    gen = torch.Generator().manual_seed(13)
    mask = random_mask(gen, 3, 6)
    out = fake_output(gen, mask, 8, 4)
    # The student is the teacher with the mapped layers at the student's indices.
    student = SimpleNamespace(logits=out.logits, hidden_states=out.hidden_states[::2], qkv=out.qkv[1::2])
    batch = {"attention_mask": mask}
    for objective in all_objectives(8, 8, 2):
        for name, value in objective(out, student, batch).items():
            assert abs(value.item()) < 1e-12, (type(objective).__name__, name, value.item())


@pytest.mark.parametrize("seed", [14, 15])
def test_padding_invariance(seed):
    gen = torch.Generator().manual_seed(seed)
    mask = random_mask(gen, 3, 5)
    teacher, student = fake_output(gen, mask, 8, 4), fake_output(gen, mask, 8, 2)
    longer_t, longer_mask = pad_more(teacher, mask, 3, gen)
    longer_s, _ = pad_more(student, mask, 3, gen)
    for objective in all_objectives(8, 8, 2):
        short = objective(teacher, student, {"attention_mask": mask})
        long = objective(longer_t, longer_s, {"attention_mask": longer_mask})
        for name in short:
            assert long[name].item() == pytest.approx(short[name].item(), rel=1e-10, abs=1e-12), name


# ----------------------------------------------------------------------------- capture_qkv on a real BERT


def tiny_config(**overrides):
    kw = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100)
    kw.update(overrides)
    return BertConfig(**kw)


def capture_hooks(model):
    """Hooks on the modules capture_qkv touches (transformers installs its own, persistent ones elsewhere)."""
    encoder = model.base_model.encoder
    modules = [encoder] + [getattr(l.attention.self, p) for l in encoder.layer for p in ("query", "key", "value")]
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules)


def test_capture_qkv_matches_projections_and_removes_hooks():
    torch.manual_seed(0)
    model = BertModel(tiny_config()).eval()
    ids = torch.randint(0, 100, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    before = capture_hooks(model)
    assert before == 0
    with capture_qkv(model) as qkv:
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        assert capture_hooks(model) > before
    assert capture_hooks(model) == before
    assert len(qkv) == 2
    for i, layer in enumerate(model.encoder.layer):
        attn = layer.attention.self
        hidden_in = out.hidden_states[i]
        for got, proj in zip(qkv[i], (attn.query, attn.key, attn.value)):
            torch.testing.assert_close(got, proj(hidden_in))

    with capture_qkv(model, layers=[-1]) as last:
        model(input_ids=ids, attention_mask=mask)
        model(input_ids=ids[:1], attention_mask=mask[:1])
    assert len(last) == 1 and last[0][0].shape == (1, 6, 32)


def test_capture_qkv_removes_hooks_on_error_and_validates():
    model = BertModel(tiny_config()).eval()
    before = capture_hooks(model)
    assert before == 0
    with pytest.raises(RuntimeError, match="boom"):
        with capture_qkv(model):
            raise RuntimeError("boom")
    assert capture_hooks(model) == before
    with pytest.raises(ValueError, match="layers"):
        with capture_qkv(model, layers=[2]):
            pass
    with pytest.raises(ValueError, match="distinct"):
        with capture_qkv(model, layers=[1, -1]):
            pass
    with pytest.raises(ValueError, match="encoder.layer"):
        with capture_qkv(torch.nn.Linear(2, 2)):
            pass
    model.train()
    model.activation_checkpointing_enable()
    with pytest.raises(ValueError, match="gradient checkpointing"):
        with capture_qkv(model):
            model(input_ids=torch.randint(0, 100, (1, 4)))
    assert capture_hooks(model) == before


def test_capture_feeds_objectives_end_to_end_with_gradients():
    torch.manual_seed(1)
    teacher = BertForSequenceClassification(tiny_config(num_labels=3)).eval()
    student = BertForSequenceClassification(tiny_config(hidden_size=16, num_attention_heads=2, num_hidden_layers=1,
                                                         intermediate_size=32, num_labels=3))
    ids = torch.randint(0, 100, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, 3:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2])}
    with torch.no_grad(), capture_qkv(teacher) as qkv_t:
        out_t = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    with capture_qkv(student) as qkv_s:
        out_s = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    t = SimpleNamespace(logits=out_t.logits, hidden_states=out_t.hidden_states, qkv=qkv_t)
    s = SimpleNamespace(logits=out_s.logits, hidden_states=out_s.hidden_states, qkv=qkv_s)
    terms = {}
    for objective in (CrossEntropy(), LogitKD(2.0), MiniLM(4)):
        terms.update(objective(t, s, batch))
    assert set(terms) == {"ce", "kd", "minilm_attn", "minilm_value"}
    sum(terms.values()).backward()
    query = student.bert.encoder.layer[0].attention.self.query
    assert query.weight.grad is not None and query.weight.grad.abs().sum() > 0
    # MiniLM alone also reaches the query weights through the captured tensors.
    student.zero_grad()
    with capture_qkv(student) as qkv_s:
        out_s = student(input_ids=ids, attention_mask=mask)
    MiniLM(4, relations=("qq",))(t, SimpleNamespace(qkv=qkv_s), batch)["minilm_qq"].backward()
    assert query.weight.grad.abs().sum() > 0
    assert student.bert.encoder.layer[0].attention.self.value.weight.grad is None


def test_tinybert_hidden_only_reads_a_cached_teacher_without_its_embeddings():
    """The teacher cache keeps only mapped layers (None elsewhere): with only ``tinybert_hidden`` on,
    TinyBERT must not need the teacher's embedding output."""
    gen = torch.Generator().manual_seed(10)
    mask = random_mask(gen, 2, 5)
    teacher, student = fake_output(gen, mask, 8, 4), fake_output(gen, mask, 6, 2)
    pairs = [(2, 1), (4, 2)]
    module = TinyBERT(pairs, 8, 6, 2, 2).to(DT)
    full = module(teacher, student, {"attention_mask": mask}, weights={"tinybert_hidden": 1.0})
    cached = SimpleNamespace(logits=teacher.logits, qkv=None,
                             hidden_states=tuple(h if i in (2, 4) else None for i, h in enumerate(teacher.hidden_states)))
    got = module(cached, student, {"attention_mask": mask}, weights={"tinybert_hidden": 1.0})
    assert set(got) == {"tinybert_hidden"}
    assert got["tinybert_hidden"].item() == pytest.approx(full["tinybert_hidden"].item(), rel=1e-12)
