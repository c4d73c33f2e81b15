"""Balanced loss weights: the formulas, what the distiller sets, and that measuring changes nothing else."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ckdlab import api
from ckdlab.engine.balance import MAX_BALANCED_WEIGHT, balanced_weights, check_scheme, gradient_norm, measure

NARROW = "config:L2-H32-A2-I64"
CKD_TERMS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")


def test_gradient_norm_against_a_hand_computation():
    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor([3.0], requires_grad=True)
    loss = (a**2).sum() + 4 * b.sum()  # grads 2a = (2, 4), 4
    assert gradient_norm(loss, [a, b]) == pytest.approx(math.sqrt(4 + 16 + 16))
    unused = torch.tensor([1.0], requires_grad=True)
    assert gradient_norm(loss, [unused, b]) == pytest.approx(4.0)


def test_measure_and_weights_on_synthetic_terms():
    x = torch.tensor([1.0, 1.0], requires_grad=True)

    def terms(batch):
        return {"kd": 3 * x.sum(), "wr_pair": 0.5 * (x**2).sum(), "ce": x.sum()}

    measured = measure(terms, [{}, {}], {"kd": 2.0, "ce": 1.0, "wr_pair": 1.0}, ["wr_pair"], ["kd", "ce"], [x], "grad")
    # reference = 2·3·sum + 1·sum -> gradient (7, 7); wr_pair gradient = x = (1, 1)
    assert measured["reference"]["grad"] == pytest.approx(7 * math.sqrt(2))
    assert measured["wr_pair"]["grad"] == pytest.approx(math.sqrt(2))
    assert measured["wr_pair"]["loss"] == pytest.approx(1.0) and measured["reference"]["loss"] == pytest.approx(14.0)
    assert balanced_weights(measured, "grad", 0.25) == {"wr_pair": pytest.approx(0.25 * 7)}
    assert balanced_weights(measured, "loss", 0.5) == {"wr_pair": pytest.approx(0.5 * 14)}
    # A term that starts (almost) matched does not get an exploding weight; one at exactly 0 keeps the fraction.
    nearly = {"reference": {"grad": 1.0, "loss": 0.7}, "ltr_pair": {"grad": 0.0, "loss": 1e-9}}
    assert balanced_weights(nearly, "loss", 0.25) == {"ltr_pair": MAX_BALANCED_WEIGHT}
    assert balanced_weights(nearly, "grad", 0.25) == {"ltr_pair": 0.25}
    with pytest.raises(ValueError, match="balance="):
        check_scheme("gradnorm", 0.25)
    with pytest.raises(ValueError, match="balance_fraction"):
        check_scheme("grad", 0.0)


def test_balanced_run_sets_ckd_weights_and_keeps_the_rest(tmp_path):
    distiller = api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke", balance="grad",
                                   balance_fraction=0.5, weights={"ltr_triplet": 3.0}, out_dir=tmp_path / "run", max_steps=2)
    distiller.train()
    report = distiller.balance_report
    assert report["scheme"] == "grad" and set(report["weights"]) == {"wr_pair", "wr_triplet", "ltr_pair"}
    assert distiller.weights["ltr_triplet"] == 3.0 and distiller.weights["kd"] == 1.0  # explicit and reference kept
    for term, weight in report["weights"].items():
        # each balanced term now pushes the encoder with half the KD push, on the measured batches
        assert weight * report["measured"][term]["grad"] == pytest.approx(0.5 * report["measured"]["reference"]["grad"])
        assert distiller.weights[term] == weight
    events = pd.read_json(tmp_path / "run" / "events.jsonl", lines=True)
    assert "balanced_weights" in set(events["event"])


def test_measuring_does_not_move_the_run(tmp_path):
    """A balanced run equals a run given the balanced weights explicitly: measuring used its own RNG."""
    balanced = api.make_distiller("rte", student=NARROW, objective="ckd+kd", profile="smoke", balance="grad",
                                  out_dir=tmp_path / "a", max_steps=3)
    balanced.train()
    explicit = api.make_distiller("rte", student=NARROW, objective="ckd+kd", profile="smoke", balance="none",
                                  weights={t: balanced.weights[t] for t in CKD_TERMS}, out_dir=tmp_path / "b", max_steps=3)
    explicit.train()
    a = pd.read_csv(tmp_path / "a" / "train_log.csv")
    b = pd.read_csv(tmp_path / "b" / "train_log.csv")
    assert list(a["name"]) == list(b["name"])
    assert a["value"].to_numpy() == pytest.approx(b["value"].to_numpy(), rel=1e-6, abs=1e-9)


def test_official_weights_are_a_named_weighting(tmp_path):
    """weights="official" passes validation and becomes the paper's weights converted for this run."""
    distiller = api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke", weights="official",
                                   out_dir=tmp_path / "run", max_steps=1)
    assert set(CKD_TERMS) <= set(distiller.weights)
    assert all(distiller.weights[t] > 0 for t in CKD_TERMS)
    with pytest.raises(ValueError, match="official"):
        api.make_distiller("sst2", student=NARROW, objective="ckd+kd", profile="smoke", weights="paper",
                           out_dir=tmp_path / "bad", max_steps=1)
