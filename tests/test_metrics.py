"""GLUE metrics against hand-computed values and against scipy / scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn import metrics as skm

from ckdlab.data.metrics import (
    accuracy,
    average_ranks,
    binary_f1,
    compute_metrics,
    glue_score,
    matthews_corrcoef,
    pearson_corr,
    spearman_corr,
)

# preds vs labels: TP at 0 and 4, FP at 1, TN at 2, FN at 3.
PREDS = [1, 1, 0, 0, 1]
GOLD = [1, 0, 0, 1, 1]


def test_binary_metrics_by_hand():
    assert accuracy(PREDS, GOLD) == pytest.approx(3 / 5)
    assert binary_f1(PREDS, GOLD) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (2 - 1) / sqrt(3*3*2*2)
    assert matthews_corrcoef(PREDS, GOLD) == pytest.approx(1 / 6)


def test_correlations_by_hand():
    # x - mean = (-1, 0, 1), y - mean = (-1, 1, 0): r = 1 / sqrt(2 * 2)
    assert pearson_corr([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert average_ranks([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([3, 1, 3, 3, 2]).tolist() == [4.0, 1.0, 4.0, 4.0, 2.0]
    # ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): cov 4.5, variances 4.5 and 5
    assert spearman_corr([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))


def test_degenerate_inputs():
    assert matthews_corrcoef([1, 1, 1], [0, 1, 1]) == 0.0  # a constant predictor
    assert binary_f1([0, 0], [0, 0]) == 0.0  # no positives anywhere
    assert math.isnan(pearson_corr([1, 1, 1], [1, 2, 3]))
    assert matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 0, 1], [0, 1, 1, 0]) == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", range(5))
def test_against_sklearn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    preds, gold = rng.integers(0, 2, n), rng.integers(0, 2, n)
    assert accuracy(preds, gold) == pytest.approx(skm.accuracy_score(gold, preds))
    assert binary_f1(preds, gold) == pytest.approx(skm.f1_score(gold, preds, zero_division=0))
    assert matthews_corrcoef(preds, gold) == pytest.approx(skm.matthews_corrcoef(gold, preds))
    preds3, gold3 = rng.integers(0, 3, n), rng.integers(0, 3, n)
    assert matthews_corrcoef(preds3, gold3) == pytest.approx(skm.matthews_corrcoef(gold3, preds3))

    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    assert pearson_corr(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman_corr(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    ties_x, ties_y = rng.integers(0, 4, n).astype(float), np.round(rng.uniform(0, 5, n) * 2) / 2
    assert average_ranks(ties_x) == pytest.approx(stats.rankdata(ties_x))
    if np.ptp(ties_x) > 0 and np.ptp(ties_y) > 0:
        assert spearman_corr(ties_x, ties_y) == pytest.approx(stats.spearmanr(ties_x, ties_y)[0])


def test_compute_metrics_reports_each_tasks_metrics():
    logits = np.array([[0.1, 2.0], [0.3, 0.9], [2.0, -1.0], [1.0, 0.0], [-1.0, 1.0]])  # argmax = PREDS
    assert compute_metrics("mrpc", logits, GOLD) == pytest.approx({"f1": 2 / 3, "accuracy": 0.6})
    assert list(compute_metrics("qqp", PREDS, GOLD)) == ["f1", "accuracy"]
    assert compute_metrics("CoLA", PREDS, GOLD) == pytest.approx({"mcc": 1 / 6})
    assert compute_metrics("sst2", torch.tensor(PREDS), torch.tensor(GOLD)) == pytest.approx({"accuracy": 0.6})
    mnli_logits = np.eye(3)[[0, 1, 2, 2]]
    assert compute_metrics("mnli", mnli_logits, [0, 1, 2, 0]) == pytest.approx({"accuracy": 0.75})
    stsb = compute_metrics("stsb", np.array([[1.0], [2.0], [3.0]]), [1.0, 3.0, 2.0])
    assert stsb == pytest.approx({"pearson": 0.5, "spearman": 0.5})
    assert compute_metrics("rte", np.array([1.0, 0.0]), [1, 0]) == {"accuracy": 1.0}  # integral floats


@pytest.mark.parametrize("task,predictions,labels,match", [
    ("rte", np.zeros((3, 3)), [0, 1, 0], r"expected \[N, 2\]"),
    ("rte", [0, 1], [0, 1, 0], "2 rows but labels have 3"),
    ("rte", [0, 2, 1], [0, 1, 0], r"class ids in 0\.\.1"),
    ("rte", [0.5, 1.0], [0, 1], "integer class ids"),
    ("rte", np.array([[np.nan, 0.0]]), [0], "NaN"),
    ("rte", [], [], "zero examples"),
    ("stsb", np.zeros((2, 2)), [1.0, 2.0], r"\[N\] or \[N, 1\]"),
    ("stsb", [1.0, np.inf], [1.0, 2.0], "NaN or inf"),
    ("mnli", [0, 1], [[0, 1]], r"labels must have shape \[N\]"),
])
def test_compute_metrics_rejects_bad_input(task, predictions, labels, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(task, predictions, labels)


def test_glue_score():
    assert glue_score({"f1": 0.8, "accuracy": 0.7}) == pytest.approx(0.75)
    assert glue_score({"pearson": 0.9, "spearman": 0.8}, task="stsb") == pytest.approx(0.85)
    assert glue_score({"mcc": 0.5, "loss": 3.0}, task="cola") == pytest.approx(0.5)
    assert glue_score({"mnli_m": 0.84, "mnli_mm": 0.82}) == pytest.approx(0.83)
    with pytest.raises(ValueError, match=r"metrics lack \['accuracy'\]"):
        glue_score({"f1": 0.8}, task="mrpc")
    with pytest.raises(ValueError, match="empty"):
        glue_score({})
