"""CKDLoss on real BERT outputs, the matmul angle expansion, and the teacher Gram memo."""
import numpy as np
import pytest
import torch

from ckdlab.objectives.ckd import CKDLoss, ltr_pair_loss, ltr_triplet_loss, wr_pair_loss, wr_triplet_loss
from test_ckd_references import LOSSES, make_batch, np_list


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
