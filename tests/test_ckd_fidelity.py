"""relation_fidelity on hand-made states with known answers, and against CKDLoss."""
import math

import pytest
import torch

from ckdlab.objectives import relation_fidelity
from ckdlab.objectives.ckd import CKDLoss

KEYS = {"teacher_layer", "student_layer", "wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet", "cos_gap_raw",
        "cos_gap_centred", "teacher_cos_raw", "student_cos_raw", "teacher_cos_centred", "student_cos_centred"}


def hidden(seed, n_layers=3, batch=2, length=6, width=5, lengths=(6, 4)):
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.arange(length)[None] < torch.tensor(lengths)[:, None]).long()
    states = tuple(torch.randn(batch, length, width, generator=gen, dtype=torch.float64) + 1.0
                   for _ in range(n_layers + 1))
    return states, mask


def test_identical_states_give_zero_everywhere():
    states, mask = hidden(1)
    rows = relation_fidelity(states, tuple(s.clone() for s in states), mask, "uniform", window=2, centred=True,
                             pair_temperature=0.5)
    assert [(r["teacher_layer"], r["student_layer"]) for r in rows] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    for row in rows:
        assert set(row) == KEYS
        for key in ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet", "cos_gap_raw", "cos_gap_centred"):
            assert abs(row[key]) < 1e-12, key
        assert row["teacher_cos_raw"] == pytest.approx(row["student_cos_raw"], abs=1e-14)
        assert row["teacher_cos_centred"] == pytest.approx(row["student_cos_centred"], abs=1e-14)


def test_hand_made_cosines_and_a_collapsed_student():
    """Teacher tokens e1, e2, -e1 (2-d); the student's tokens all coincide."""
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [9.0, 9.0]]], dtype=torch.float64)
    student = torch.tensor([[[3.0, 4.0]] * 3 + [[-7.0, 2.0]]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0]])  # the fourth token is padding and must not count
    (row,) = relation_fidelity((teacher, teacher), (student, student), mask, "last")
    # raw: cos(e1, e2) = 0, cos(e1, -e1) = -1, cos(e2, -e1) = 0
    assert row["teacher_cos_raw"] == pytest.approx(-1 / 3, abs=1e-14)
    # centred on mu = (0, 1/3): c = (1, -1/3), (0, 2/3), (-1, -1/3)
    centred = (-1 / math.sqrt(10) - 0.8 - 1 / math.sqrt(10)) / 3
    assert row["teacher_cos_centred"] == pytest.approx(centred, abs=1e-14)
    assert row["student_cos_raw"] == pytest.approx(1.0, abs=1e-14)  # collapsed
    assert row["student_cos_centred"] == 0.0  # all centred states are zero: cos 0 by definition
    assert row["cos_gap_raw"] == pytest.approx((1 + 2 + 1) / 3, abs=1e-14)  # |0 - 1|, |-1 - 1|, |0 - 1|
    assert row["cos_gap_centred"] == pytest.approx(-centred, abs=1e-14)
    assert math.isnan(row["ltr_pair"]) and math.isnan(row["ltr_triplet"])  # one layer pair: no LTR


@pytest.mark.parametrize("options", [
    dict(),
    dict(pair_temperature=0.2, centred=True, window=1),
    dict(pair_loss="huber", pair_metric="l2", triplet_loss="huber", centred=True),
])
def test_terms_are_those_of_ckdloss(options):
    teacher, mask = hidden(2, n_layers=4)
    student, _ = hidden(3, n_layers=2, width=3)
    rows = relation_fidelity(teacher, student, mask, "uniform", **options)
    terms = CKDLoss(layer_map="uniform", **options)(teacher, student, mask)
    assert len(rows) == 3
    for term in ("wr_pair", "wr_triplet"):
        assert sum(r[term] for r in rows) / len(rows) == pytest.approx(terms[term].item(), rel=1e-12)
    for term in ("ltr_pair", "ltr_triplet"):
        assert all(r[term] == pytest.approx(terms[term].item(), rel=1e-12) for r in rows)


def test_padding_garbage_changes_nothing():
    states, mask = hidden(4, lengths=(6, 3))
    student, _ = hidden(5, width=4, lengths=(6, 3))
    noisy = tuple(torch.where(mask.bool()[..., None], s, 1e4 * torch.ones_like(s)) for s in student)
    clean_rows = relation_fidelity(states, student, mask, centred=True)
    noisy_rows = relation_fidelity(states, noisy, mask, centred=True)
    for a, b in zip(clean_rows, noisy_rows):
        for key in KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-10, abs=1e-13), key


def test_errors():
    states, mask = hidden(6)
    with pytest.raises(ValueError, match=r"pair_temperature=2.0 scales the softmax"):
        relation_fidelity(states, states, mask, pair_loss="mse", pair_temperature=2.0)
    with pytest.raises(ValueError, match=r"output_hidden_states=True"):
        relation_fidelity(object(), states, mask)
