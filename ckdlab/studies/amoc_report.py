"""Notebook 07's analysis of an AMoC candidates table: the regression, AMoC's choices, the main table, a
verdict; and per-example effects for the picture of an ATE.

The regression is fitted per *family* (one task, one metric, one scale of the ATE): accuracy and
Spearman, or a total-variation ATE and an ATE in STS-B points, do not belong in one least-squares
fit. Everything here is a pure function of the candidates table (:mod:`ckdlab.studies.amoc`).

Our choices, stated where they are used: the leave-one-pair-out error is the mean absolute error
of the held-out pairs' predicted target scores, set against an intercept-only regression fitted on
the same pairs (does the regression know more than "the average candidate"?); the verdict compares
AMoC with each baseline by paired differences over pairs with a 95 % t-interval.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ckdlab.data import TaskSpec
from ckdlab.results import t_interval
from ckdlab.studies.amoc import (
    AMOC_FEATURES,
    BASELINES,
    N_REMOVED,
    PAIR,
    REMOVED,
    SOURCE_DEV_SCORE,
    TARGET_SCORE,
    baseline_scores,
    class_probabilities,
    format_removed,
    leave_one_pair_out,
    main_table,
    stepwise_aic,
)
from ckdlab.models.layer_removal import evenly_spaced_layers, top_layers

FAMILY = "family"
METHOD_LABELS = {
    "amoc": "AMoC", "top": "top layers", "evenly_spaced": "evenly spaced", "random": "random (mean)",
    "in_domain": "best on source dev", "oracle": "oracle (target test)", "full": "full model",
}
COMPARED = ("top", "evenly_spaced", "random", "in_domain")  # the baselines AMoC must beat (not oracle, not full)
COLLAPSE_SHARE = 0.95  # a classifier giving one class to >= 95 % of the target test set has collapsed
WEAK_BASE_SCORE = 0.5  # a base model below this on its own source dev set (accuracy, Spearman) did not learn the task


def _families(frame: pd.DataFrame) -> list[str]:
    if FAMILY not in frame.columns:
        raise ValueError("frame lacks the 'family' column; pass AmocResult.candidates")
    return list(dict.fromkeys(frame[FAMILY]))


def _design(frame: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    design = frame.loc[:, list(features)].astype(np.float64)
    design.insert(0, "const", 1.0)
    return design


def choices(frame: pd.DataFrame, features: Sequence[str] = AMOC_FEATURES) -> pd.DataFrame:
    """AMoC's choice per (pair, compression level), by :func:`~ckdlab.studies.amoc.leave_one_pair_out`
    within each family; a ``family`` column added."""
    parts = [leave_one_pair_out(frame[frame[FAMILY] == f], candidates=features).assign(**{FAMILY: f}) for f in _families(frame)]
    return pd.concat(parts, ignore_index=True)


def main_tables(frame: pd.DataFrame, chosen: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """:func:`~ckdlab.studies.amoc.main_table` per family, and over all pairs (key ``"all pairs"``)
    when there are several families (their metrics then mix: read it as an average of scores)."""
    tables = {f: main_table(frame[frame[FAMILY] == f], chosen[chosen[FAMILY] == f]) for f in _families(frame)}
    if len(tables) > 1:
        tables["all pairs"] = main_table(frame, chosen)
    return tables


def format_main_table(table: pd.DataFrame, scale: float = 100.0, digits: int = 1) -> pd.DataFrame:
    """``mean ± std`` (× ``scale``) per compression level and method, methods labelled in words;
    the last column says over how many pairs."""
    out = pd.DataFrame(index=table.index)
    for method in table.columns.get_level_values("method").unique():
        mean, std = table[(method, "mean")] * scale, table[(method, "std")] * scale
        out[METHOD_LABELS.get(method, method)] = [
            f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}" for m, s in zip(mean, std)
        ]
    out["pairs"] = table[("amoc", "n")].astype(int)
    out.index.name = "layers removed"
    return out


def _spearman(a: pd.Series, b: pd.Series) -> float:
    """Rank correlation, NaN when either side is constant (undefined, not an error)."""
    if a.nunique() < 2 or b.nunique() < 2:
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def ate_correlations(frame: pd.DataFrame, ate: str = "ate_target") -> pd.DataFrame:
    """Per pair, the rank correlation between the candidates' ATE and their target score (negative:
    removals that move the predictions more score lower), and how many candidates it is over."""
    rows = frame[frame[N_REMOVED] >= 1]
    out = [{FAMILY: family, PAIR: pair, "candidates": len(group), f"Spearman({ate}, target score)": _spearman(group[ate], group[TARGET_SCORE])}
           for (family, pair), group in rows.groupby([FAMILY, PAIR], sort=False)]
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- pictures of the ATE


def example_effects(task: TaskSpec, full_logits: np.ndarray, removed_logits: np.ndarray) -> np.ndarray:
    """The per-example effects whose mean is :func:`ckdlab.studies.amoc_runs.treatment_effect`: ``½ Σ_c |p_full - p_removed|``
    per row, or ``|ŷ_full - ŷ_removed|`` for regression (for pictures; the ATE itself comes from
    :mod:`ckdlab.studies.amoc`)."""
    if task.is_regression:
        return np.abs(np.asarray(full_logits, np.float64)[:, 0] - np.asarray(removed_logits, np.float64)[:, 0])
    return 0.5 * np.abs(class_probabilities(full_logits) - class_probabilities(removed_logits)).sum(axis=1)


def displayed_prediction(task: TaskSpec, logits: np.ndarray) -> tuple[np.ndarray, str]:
    """One number per example to draw, and its axis label: the probability of the task's last class
    (``positive`` for sentiment) or the predicted score."""
    if task.is_regression:
        return np.asarray(logits, np.float64)[:, 0], "predicted similarity (0-5)"
    return class_probabilities(logits)[:, -1], f"P({task.label_names[-1]})"


# --------------------------------------------------------------------------- the regression


def lopo_predictions(frame: pd.DataFrame, features: Sequence[str] = AMOC_FEATURES) -> pd.DataFrame:
    """Every candidate's target score as predicted by the stepwise regression fitted on the OTHER
    pairs of its family, next to the intercept-only prediction (the mean of those pairs' candidates).
    Columns: family, pair, removed, n_removed, target_score, predicted, constant, selected."""
    out = []
    for family in _families(frame):
        rows = frame[(frame[FAMILY] == family) & (frame[N_REMOVED] >= 1)]
        for pair in dict.fromkeys(rows[PAIR]):
            train, held_out = rows[rows[PAIR] != pair], rows[rows[PAIR] == pair]
            fit = stepwise_aic(train, TARGET_SCORE, list(features))
            out.append(held_out[[FAMILY, PAIR, REMOVED, N_REMOVED, TARGET_SCORE]].assign(
                predicted=np.asarray(fit.result.predict(_design(held_out, fit.selected)), dtype=np.float64),
                constant=float(train[TARGET_SCORE].mean()), selected="+".join(fit.selected) or "(intercept only)",
            ))
    return pd.concat(out, ignore_index=True)


def regression_summary(frame: pd.DataFrame, features: Sequence[str] = AMOC_FEATURES) -> dict[str, dict[str, Any]]:
    """Per family: the stepwise fit on ALL its pairs (for reading: ``selected``, ``coefficients``
    with standard errors and p-values, ``r2``, ``adj_r2``, ``n``) and its leave-one-pair-out quality
    (``lopo_mae``, ``constant_mae``, ``within_pair_spearman``: the mean over pairs of the rank
    correlation between held-out predictions and true target scores)."""
    held_out = lopo_predictions(frame, features)
    summary = {}
    for family in _families(frame):
        rows = frame[(frame[FAMILY] == family) & (frame[N_REMOVED] >= 1)]
        fit = stepwise_aic(rows, TARGET_SCORE, list(features))
        result = fit.result
        coefficients = pd.DataFrame({"coef": result.params, "std err": result.bse, "p": result.pvalues})
        part = held_out[held_out[FAMILY] == family]
        rhos = [r for _, g in part.groupby(PAIR, sort=False) if not math.isnan(r := _spearman(g["predicted"], g[TARGET_SCORE]))]
        summary[family] = {
            "selected": list(fit.selected), "coefficients": coefficients, "r2": float(result.rsquared),
            "adj_r2": float(result.rsquared_adj), "n": int(result.nobs), "pairs": int(rows[PAIR].nunique()),
            "lopo_mae": float((part["predicted"] - part[TARGET_SCORE]).abs().mean()),
            "constant_mae": float((part["constant"] - part[TARGET_SCORE]).abs().mean()),
            "within_pair_spearman": float(np.mean(rhos)) if rhos else float("nan"),
        }
    return summary


# --------------------------------------------------------------------------- what the numbers support


def paired_differences(frame: pd.DataFrame, chosen: pd.DataFrame) -> pd.DataFrame:
    """Per (pair, level): AMoC's target score minus each baseline's (columns named after the baselines)."""
    scores = baseline_scores(frame).merge(chosen[[PAIR, N_REMOVED, TARGET_SCORE]], on=[PAIR, N_REMOVED], validate="one_to_one")
    out = scores[[PAIR, N_REMOVED]].copy()
    for baseline in BASELINES:
        out[baseline] = scores[TARGET_SCORE] - scores[baseline]
    return out


def _compare_sentence(diffs: pd.Series, name: str, scale: float) -> tuple[str, int]:
    """One clause and its sign (+1 AMoC better, -1 worse, 0 undecided) for AMoC minus ``name``."""
    mean, half, n = t_interval(diffs)
    wins, losses = int((diffs > 0).sum()), int((diffs < 0).sum())
    record = f"{wins} win(s), {losses} loss(es) over {n} pairs"
    if n < 2 or math.isnan(half):
        return f"{name}: {scale * mean:+.1f} points from one pair, no interval ({record})", 0
    if abs(mean) > half:
        word = "better than" if mean > 0 else "worse than"
        return f"**{word} {name}** by {scale * abs(mean):.1f} ± {scale * half:.1f} points ({record})", int(np.sign(mean))
    return f"not distinguishable from {name}: {scale * mean:+.1f} ± {scale * half:.1f} points ({record})", 0


def collapsed(frame: pd.DataFrame, share: float = COLLAPSE_SHARE) -> pd.DataFrame:
    """Candidates that give one class to at least ``share`` of the target test set (classification
    only; needs the ``target_majority_share`` column), with the fixed baselines they are (``top``,
    ``evenly_spaced`` or empty)."""
    if "target_majority_share" not in frame.columns:
        return frame.iloc[0:0].assign(baseline="")
    rows = frame[(frame[N_REMOVED] >= 1) & (frame["target_majority_share"] >= share)].copy()

    def baseline(row: pd.Series) -> str:
        n, k = int(row["n_layers"]), int(row[N_REMOVED])
        names = [name for name, layers in (("top", top_layers(n, k)), ("evenly_spaced", evenly_spaced_layers(n, k)))
                 if row[REMOVED] == format_removed(layers)]
        return "+".join(names)

    return rows.assign(baseline=rows.apply(baseline, axis=1) if len(rows) else "")


def weak_bases(frame: pd.DataFrame, floor: float = WEAK_BASE_SCORE) -> pd.Series:
    """Source dev score of each base model (the full-model rows) below ``floor``, indexed by source
    (needs the ``source`` column; empty without it)."""
    if "source" not in frame.columns:
        return pd.Series(dtype=float)
    scores = frame[frame[N_REMOVED] == 0].groupby("source")[SOURCE_DEV_SCORE].first()
    return scores[scores < floor]


def verdict(frame: pd.DataFrame, chosen: pd.DataFrame, regression: dict[str, dict[str, Any]] | None = None,
            scale: float = 100.0) -> list[str]:
    """Markdown lines that say only what the numbers support: per compression level, AMoC's choice
    against each baseline (paired differences over all pairs, 95 % t-interval, wins and losses), the
    share of the oracle's gain over a random choice it realises, and whether the regression beats a
    constant on held-out pairs. Pairs of different families are pooled (points of their own metric)."""
    diffs = paired_differences(frame, chosen)
    lines, signs = [], []
    for level, part in diffs.groupby(N_REMOVED, sort=True):
        clauses = []
        for baseline in COMPARED:
            clause, sign = _compare_sentence(part[baseline], METHOD_LABELS[baseline], scale)
            clauses.append(clause)
            signs.append((baseline, int(level), sign))
        # Share of the oracle's gain over a random choice that AMoC realises, on the means over pairs:
        # (AMoC - random) / (oracle - random), with oracle - random = (AMoC - random) - (AMoC - oracle).
        gain, reachable = part["random"].mean(), (part["random"] - part["oracle"]).mean()
        share = f"; it realises {100 * gain / reachable:.0f} % of the oracle's gain over a random choice" if reachable > 0 else ""
        lines.append(f"- **{level} layer(s) removed** — AMoC is " + "; ".join(clauses) + share + ".")
    better = sorted({(b, lv) for b, lv, s in signs if s > 0})
    worse = sorted({(b, lv) for b, lv, s in signs if s < 0})
    if not better and not worse:
        lines.append("- Overall: at no compression level is AMoC's choice distinguishable from any baseline with these pairs; "
                     "these numbers do not show that AMoC helps (nor that it hurts).")
    else:
        def named(items):
            return ", ".join(f"{METHOD_LABELS[b]} ({lv} removed)" for b, lv in items) or "no baseline"
        lines.append(f"- Overall: AMoC is better than {named(better)}; worse than {named(worse)}; every other "
                     "comparison is within the noise of these pairs.")
    broken = collapsed(frame)
    if len(broken):
        fixed = broken[broken["baseline"] != ""]
        where = ", ".join(f"{METHOD_LABELS[b]} in {p} ({k} removed)" for b, p, k in
                          zip(fixed["baseline"].str.split("+").str[0], fixed[PAIR], fixed[N_REMOVED]))
        lines.append(
            f"- {len(broken)} of {int((frame[N_REMOVED] >= 1).sum())} candidate rows give one class to at least "
            f"{100 * COLLAPSE_SHARE:.0f} % of the target test set: their brief fine-tuning did not recover from the removal"
            + (f" — among them the fixed baseline {where}; a win over such a baseline says more about the brief training "
               "than about AMoC" if where else "") + ".")
    weak = weak_bases(frame)
    if len(weak):
        pairs = sorted(frame.loc[frame["source"].isin(weak.index), PAIR].unique())
        lines.append(
            "- Base model(s) that did not learn their source task: " + ", ".join(
                f"{source} (source dev {scale * score:.1f})" for source, score in weak.items())
            + f", below {scale * WEAK_BASE_SCORE:.0f}; the rows of {', '.join(pairs)} compare removals from a model "
            "that predicts little, so they say little about AMoC.")
    for family, fit in (regression or {}).items():
        relation = "below" if fit["lopo_mae"] < fit["constant_mae"] else "not below"
        rho = fit["within_pair_spearman"]
        ranking = "undefined (no pair's scores vary)" if math.isnan(rho) else f"{rho:.2f}"
        lines.append(
            f"- Regression ({family}): held-out error {scale * fit['lopo_mae']:.1f} points, {relation} the "
            f"{scale * fit['constant_mae']:.1f} of a constant prediction; within-pair rank correlation of predicted "
            f"and true scores {ranking}; fitted on {fit['pairs']} pairs, in-sample R² {fit['r2']:.2f}."
        )
    return lines
