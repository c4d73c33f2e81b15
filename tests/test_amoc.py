"""AMoC's mathematics: treatment effects, domain distance, stepwise AIC, leave-one-pair-out, baselines."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from ckdlab.models.layer_removal import candidate_sets
from ckdlab.studies.amoc import (
    AMOC_FEATURES,
    METHODS,
    N_REMOVED,
    PAIR,
    REMOVED,
    TARGET_SCORE,
    average_treatment_effect,
    average_treatment_effect_regression,
    baseline_scores,
    candidate_record,
    class_probabilities,
    domain_distance,
    format_removed,
    leave_one_pair_out,
    main_table,
    parse_removed,
    stepwise_aic,
)

# --------------------------------------------------------------------------- treatment effects


def slow_ate(p, q):
    total = 0.0
    for row_p, row_q in zip(p, q):
        total += 0.5 * sum(abs(float(a) - float(b)) for a, b in zip(row_p, row_q))
    return total / len(p)


def test_ate_hand_values():
    p = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    assert average_treatment_effect(p, p) == 0.0
    one_hot = np.eye(3)
    assert average_treatment_effect(one_hot, one_hot[[1, 2, 0]]) == 1.0  # every prediction moves entirely
    # Row 1: ½(|0.2-0.5| + 0 + |0.5-0.2|) = 0.3; row 2: ½(0.4 + 0.4 + 0) = 0.4 -> mean 0.35.
    q = np.array([[0.5, 0.3, 0.2], [0.6, 0.4, 0.0]])
    assert average_treatment_effect(p, q) == pytest.approx(0.35, abs=1e-15)
    assert average_treatment_effect(q, p) == average_treatment_effect(p, q)


def test_ate_against_a_slow_reference_and_for_torch_inputs():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(4), size=50), rng.dirichlet(np.ones(4), size=50)
    assert average_treatment_effect(p, q) == pytest.approx(slow_ate(p, q), rel=1e-14)
    logits_p, logits_q = torch.randn(8, 2), torch.randn(8, 2)
    value = average_treatment_effect(torch.softmax(logits_p, -1), torch.softmax(logits_q, -1))
    expected = slow_ate(torch.softmax(logits_p.double(), -1).numpy(), torch.softmax(logits_q.double(), -1).numpy())
    assert value == pytest.approx(expected, abs=1e-6)


def test_class_probabilities_is_a_stable_softmax():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    probabilities = class_probabilities(logits)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(probabilities[0], e / e.sum(), rtol=1e-15)
    np.testing.assert_allclose(probabilities[1], [1.0, 0.0, 0.0], atol=1e-300)
    assert average_treatment_effect(probabilities, probabilities) == 0.0


@pytest.mark.parametrize(
    "p, q, message",
    [
        (np.full((2, 2), 0.5), np.full((3, 2), 0.5), "same shape"),
        (np.full(2, 0.5), np.full(2, 0.5), r"\[N, C\]"),
        (np.array([[2.0, -1.0]]), np.array([[0.5, 0.5]]), "negative probability"),
        (np.array([[0.3, 0.3]]), np.array([[0.5, 0.5]]), "sums to 0.6"),
        (np.array([[np.nan, 1.0]]), np.array([[0.5, 0.5]]), "NaN"),
        (np.ones((1, 1)), np.ones((1, 1)), "C >= 2"),
    ],
)
def test_ate_rejects_bad_input(p, q, message):
    with pytest.raises(ValueError, match=message):
        average_treatment_effect(p, q)


def test_regression_ate():
    assert average_treatment_effect_regression([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert average_treatment_effect_regression([1.0, 2.0, 3.0], [1.5, 1.0, 3.0]) == pytest.approx(0.5)
    assert average_treatment_effect_regression(np.array([[0.0], [4.0]]), torch.tensor([1.0, 1.0])) == 2.0
    with pytest.raises(ValueError, match="same examples"):
        average_treatment_effect_regression([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match=r"\[N\] or \[N, 1\]"):
        average_treatment_effect_regression(np.zeros((2, 2)), np.zeros((2, 2)))


def test_domain_distance():
    rng = np.random.default_rng(0)
    same_a, same_b = rng.normal(size=(300, 8)), rng.normal(size=(200, 8))
    near_chance = domain_distance(same_a, same_b, seed=0)
    assert 0.35 < near_chance < 0.65
    far = domain_distance(rng.normal(size=(100, 8)), rng.normal(loc=5.0, size=(150, 8)), seed=0)
    assert far == 1.0
    assert domain_distance(same_a, same_b, seed=0) == near_chance  # seeded
    with pytest.raises(ValueError, match="dimensions"):
        domain_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError, match="at least folds=5"):
        domain_distance(np.zeros((3, 2)), np.zeros((10, 2)))


# --------------------------------------------------------------------------- stepwise AIC


@pytest.fixture
def synthetic():
    rng = np.random.default_rng(42)
    n = 200
    frame = pd.DataFrame({name: rng.normal(size=n) for name in ("x1", "x2", "noise1", "noise2", "noise3", "noise4")})
    frame["y"] = 1.0 + 2.0 * frame["x1"] - 3.0 * frame["x2"] + rng.normal(scale=0.5, size=n)
    return frame


def hand_aic(frame, target, features):
    """AIC = n log(2π RSS/n) + n + 2k of the least-squares fit, k = coefficients incl. the intercept."""
    x = np.column_stack([np.ones(len(frame)), *(frame[f].to_numpy() for f in features)])
    y = frame[target].to_numpy()
    coefficients, *_ = np.linalg.lstsq(x, y, rcond=None)
    rss = float(np.sum((y - x @ coefficients) ** 2))
    n = len(y)
    return n * math.log(2 * math.pi * rss / n) + n + 2 * x.shape[1]


def test_stepwise_selects_the_informative_features_only(synthetic):
    candidates = ["noise1", "x1", "noise2", "x2", "noise3", "noise4"]
    fit = stepwise_aic(synthetic, "y", candidates)
    assert fit.selected == ["x2", "x1"]  # the stronger effect enters first
    assert fit.result.params["x1"] == pytest.approx(2.0, abs=0.15)
    assert fit.result.params["x2"] == pytest.approx(-3.0, abs=0.15)
    assert fit.result.aic == pytest.approx(hand_aic(synthetic, "y", ["x2", "x1"]), rel=1e-10)
    # The stopping rule: no remaining feature lowers AIC.
    for feature in ("noise1", "noise2", "noise3", "noise4"):
        assert hand_aic(synthetic, "y", ["x2", "x1", feature]) >= fit.result.aic


def test_stepwise_starts_from_the_intercept_and_skips_collinear_features(synthetic):
    frame = synthetic.assign(x1_twice=2 * synthetic["x1"], constant=3.0)
    fit = stepwise_aic(frame, "y", ["x1", "x1_twice", "x2", "constant"])
    assert sorted(fit.selected) == ["x1", "x2"] or sorted(fit.selected) == ["x1_twice", "x2"]
    assert "constant" not in fit.selected
    # One candidate: it enters exactly when it lowers AIC below the intercept-only model's.
    for feature in ("noise1", "noise2", "noise3", "noise4"):
        single = stepwise_aic(frame, "y", [feature])
        enters = hand_aic(frame, "y", [feature]) < hand_aic(frame, "y", [])
        assert single.selected == ([feature] if enters else [])
        if not enters:
            assert single.result.params.index.tolist() == ["const"]
            assert single.result.params["const"] == pytest.approx(frame["y"].mean())


def test_stepwise_rejects_bad_input(synthetic):
    with pytest.raises(ValueError, match="lacks column"):
        stepwise_aic(synthetic, "y", ["x9"])
    with pytest.raises(ValueError, match="other than the target"):
        stepwise_aic(synthetic, "y", ["x1", "y"])
    broken = synthetic.copy()
    broken.loc[3, "x1"] = np.nan
    with pytest.raises(ValueError, match="missing value"):
        stepwise_aic(broken, "y", ["x1"])


# --------------------------------------------------------------------------- leave-one-pair-out


def synthetic_candidates(n_pairs=4, n_layers=6, seed=0):
    """A candidates table whose target score depends on ATE and source score, plus noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_pairs):
        pair, distance = f"s{p}->t{p}", 0.6 + 0.1 * p
        rows.append(candidate_record(pair, (), n_layers, target_score=0.85 - 0.05 * p, source_dev_score=0.9,
                                     ate_target=0.0, ate_source=0.0, params=1000, domain_distance=distance))
        for removed in candidate_sets(n_layers, 3):
            ate_t, ate_s = rng.uniform(0, 0.4), rng.uniform(0, 0.3)
            source = 0.9 - 0.5 * ate_s + rng.normal(scale=0.01)
            target = 0.85 - 0.05 * p - 0.8 * ate_t + rng.normal(scale=0.01)
            rows.append(candidate_record(pair, removed, n_layers, target_score=target, source_dev_score=source,
                                         ate_target=ate_t, ate_source=ate_s, params=1000 - 100 * len(removed),
                                         domain_distance=distance))
    return pd.DataFrame(rows)


def test_candidate_record_and_removed_strings():
    row = candidate_record("a->b", (4, 1), 6, target_score=0.5, source_dev_score=0.6, ate_target=0.1,
                           ate_source=0.2, params=10, domain_distance=0.7)
    assert row[REMOVED] == "1,4" and row[N_REMOVED] == 2
    assert row["mean_removed_depth"] == pytest.approx((2 / 6 + 5 / 6) / 2)
    assert parse_removed(format_removed((3, 0))) == (0, 3) and parse_removed("") == ()
    with pytest.raises(ValueError, match="distinct layer indices"):
        candidate_record("a->b", (6,), 6, target_score=0.5, source_dev_score=0.6, ate_target=0.1,
                         ate_source=0.2, params=10, domain_distance=0.7)


def test_leave_one_pair_out_never_sees_the_held_out_pair():
    frame = synthetic_candidates()
    seen = []

    def spy(train, target, candidates):
        seen.append(train.copy())
        return stepwise_aic(train, target, candidates)

    choices = leave_one_pair_out(frame, fitter=spy)
    pairs = list(dict.fromkeys(frame[PAIR]))
    assert len(seen) == len(pairs)
    for held_out, train in zip(pairs, seen):
        assert held_out not in set(train[PAIR])
        assert set(train[PAIR]) == set(pairs) - {held_out}
        assert (train[N_REMOVED] >= 1).all()  # full-model rows are not candidates
        assert len(train) == 41 * (len(pairs) - 1)
    assert len(choices) == len(pairs) * 3 and set(choices[N_REMOVED]) == {1, 2, 3}


def test_held_out_targets_cannot_change_the_held_out_choice():
    frame = synthetic_candidates()
    choices = leave_one_pair_out(frame)
    tampered = frame.copy()
    held = tampered[PAIR] == "s0->t0"
    tampered.loc[held, TARGET_SCORE] = np.random.default_rng(9).uniform(size=int(held.sum()))
    again = leave_one_pair_out(tampered)
    before, after = choices[choices[PAIR] == "s0->t0"], again[again[PAIR] == "s0->t0"]
    assert before[REMOVED].tolist() == after[REMOVED].tolist()
    np.testing.assert_allclose(before["predicted_score"], after["predicted_score"], rtol=1e-12)
    # ...while the other pairs' regressions, which did see those rows, change.
    others_before = choices.loc[choices[PAIR] != "s0->t0", "predicted_score"].to_numpy()
    others_after = again.loc[again[PAIR] != "s0->t0", "predicted_score"].to_numpy()
    assert not np.allclose(others_before, others_after)


def test_leave_one_pair_out_picks_the_highest_prediction_per_level():
    frame = synthetic_candidates()
    choices = leave_one_pair_out(frame)
    assert all("ate_target" in selected.split("+") for selected in choices["selected"])
    for _, choice in choices.iterrows():
        rows = frame[(frame[PAIR] == choice[PAIR]) & (frame[N_REMOVED] == choice[N_REMOVED])]
        fit = stepwise_aic(frame[(frame[PAIR] != choice[PAIR]) & (frame[N_REMOVED] >= 1)], TARGET_SCORE, AMOC_FEATURES)
        design = rows[fit.selected].assign(const=1.0)[["const", *fit.selected]]
        predicted = design.to_numpy() @ fit.result.params.to_numpy()
        assert choice[REMOVED] == rows[REMOVED].iloc[int(np.argmax(predicted))]
    # With target score driven by the ATE, AMoC beats a random choice on every pair and level.
    scores = baseline_scores(frame).merge(choices, on=[PAIR, N_REMOVED])
    assert (scores[TARGET_SCORE] > scores["random"]).all()


def test_leave_one_pair_out_needs_two_pairs():
    frame = synthetic_candidates(n_pairs=1)
    with pytest.raises(ValueError, match="at least 2 domain pairs"):
        leave_one_pair_out(frame)


# --------------------------------------------------------------------------- baselines and the main table


def hand_table():
    """Two pairs of a 4-layer model, levels 1 and 2. top: (3,), (2,3); evenly spaced: (1,), (0,2)."""
    rows = []
    # pair, removed, target, source dev
    scores = {
        "a->b": {(): (0.90, 0.95), (0,): (0.70, 0.80), (1,): (0.75, 0.70), (2,): (0.80, 0.90), (3,): (0.60, 0.85),
                 (0, 1): (0.50, 0.60), (0, 2): (0.65, 0.55), (0, 3): (0.55, 0.75), (1, 2): (0.70, 0.65),
                 (1, 3): (0.45, 0.50), (2, 3): (0.40, 0.70)},
        "b->a": {(): (0.80, 0.85), (0,): (0.60, 0.70), (1,): (0.72, 0.60), (2,): (0.66, 0.65), (3,): (0.70, 0.75),
                 (0, 1): (0.40, 0.50), (0, 2): (0.55, 0.45), (0, 3): (0.50, 0.40), (1, 2): (0.62, 0.35),
                 (1, 3): (0.58, 0.55), (2, 3): (0.52, 0.30)},
    }
    for pair, table in scores.items():
        for removed, (target, source) in table.items():
            rows.append(candidate_record(pair, removed, 4, target_score=target, source_dev_score=source,
                                         ate_target=0.1, ate_source=0.1, params=100, domain_distance=0.5))
    return pd.DataFrame(rows)


def test_baselines_on_a_hand_table():
    scores = baseline_scores(hand_table()).set_index([PAIR, N_REMOVED])
    a1, a2, b1, b2 = scores.loc[("a->b", 1)], scores.loc[("a->b", 2)], scores.loc[("b->a", 1)], scores.loc[("b->a", 2)]
    assert (a1["top"], a1["evenly_spaced"], a1["in_domain"], a1["oracle"], a1["full"]) == (0.60, 0.75, 0.80, 0.80, 0.90)
    assert a1["random"] == pytest.approx((0.70 + 0.75 + 0.80 + 0.60) / 4)
    assert (a2["top"], a2["evenly_spaced"], a2["in_domain"], a2["oracle"]) == (0.40, 0.65, 0.55, 0.70)
    assert a2["random"] == pytest.approx((0.50 + 0.65 + 0.55 + 0.70 + 0.45 + 0.40) / 6)
    assert (b1["top"], b1["evenly_spaced"], b1["in_domain"], b1["oracle"], b1["full"]) == (0.70, 0.72, 0.70, 0.72, 0.80)
    assert (b2["top"], b2["evenly_spaced"], b2["in_domain"], b2["oracle"]) == (0.52, 0.55, 0.58, 0.62)


def test_main_table_averages_over_pairs_with_spread():
    frame = hand_table()
    choices = pd.DataFrame({PAIR: ["a->b", "a->b", "b->a", "b->a"], N_REMOVED: [1, 2, 1, 2],
                            REMOVED: ["2", "1,2", "1", "1,3"], TARGET_SCORE: [0.80, 0.70, 0.72, 0.58]})
    table = main_table(frame, choices)
    assert list(table.index) == [1, 2]
    assert list(dict.fromkeys(table.columns.get_level_values("method"))) == list(METHODS)
    assert table.loc[1, ("amoc", "mean")] == pytest.approx(0.76)
    assert table.loc[1, ("amoc", "std")] == pytest.approx(np.std([0.80, 0.72], ddof=1))
    assert table.loc[2, ("top", "mean")] == pytest.approx(0.46)
    assert table.loc[2, ("oracle", "n")] == 2
    assert table.loc[1, ("full", "mean")] == pytest.approx(0.85)
    with pytest.raises(ValueError, match="lack AMoC's pick"):
        main_table(frame, choices.iloc[:3])


def test_baselines_need_the_full_model_and_the_fixed_sets():
    frame = hand_table()
    with pytest.raises(ValueError, match="full-model rows"):
        baseline_scores(frame[frame[REMOVED] != ""])
    with pytest.raises(ValueError, match="top baseline"):
        baseline_scores(frame[frame[REMOVED] != "3"])


def test_tables_glued_from_per_pair_frames_give_the_same_choices():
    frame = synthetic_candidates()
    glued = pd.concat([rows.reset_index(drop=True) for _, rows in frame.groupby(PAIR, sort=False)])
    assert glued.index.has_duplicates
    pd.testing.assert_frame_equal(leave_one_pair_out(glued), leave_one_pair_out(frame))
    pd.testing.assert_frame_equal(baseline_scores(glued), baseline_scores(frame))
