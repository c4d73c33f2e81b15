"""AMoC (Rotman, Feder & Reichart, TACL 2021): choose which layers to remove for a target domain.

Pure functions only -- no training, no model calls. The study (fine-tuning the candidates, computing
their predictions) lives with the engine; what it produces is a *candidates table* with one row per
(domain pair, model) and these columns (build rows with :func:`candidate_record`):

====================== =====================================================================
``pair``               ``"source->target"``: the unit that leave-one-pair-out holds out
``removed``            removed layers, 0-based, as ``"1,4"``; ``""`` for the full base model
``n_removed``          how many layers were removed (the compression level; 0 = full model)
``n_layers``           depth of the base model
``target_score``       score on the target domain's labelled test split (what AMoC predicts)
``source_dev_score``   score on the source domain's dev data (known at selection time)
``ate_target``         ATE of the removal on the target's unlabelled text
``ate_source``         ATE of the removal on the source's dev text
``mean_removed_depth`` mean of (index + 1) / n_layers over removed layers (0 for the full model)
``params``             parameter count of the candidate
``domain_distance``    how separable source and target are (:func:`domain_distance`), per pair
====================== =====================================================================

The paper fixes the idea -- estimate the treatment effect of removing layers and regress target
performance on it -- but the authors' public code stops at training the candidates. Everything
below that the paper leaves open is this workbench's choice and says so: the ATE as the mean total
variation distance between predicted distributions, the feature list, forward stepwise selection
by AIC, the baselines' definitions.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import statsmodels.api as sm
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ckdlab.models.layer_removal import evenly_spaced_layers, top_layers

PAIR, REMOVED, N_REMOVED, N_LAYERS = "pair", "removed", "n_removed", "n_layers"
TARGET_SCORE, SOURCE_DEV_SCORE = "target_score", "source_dev_score"
ATE_TARGET, ATE_SOURCE, MEAN_REMOVED_DEPTH = "ate_target", "ate_source", "mean_removed_depth"
PARAMS, DOMAIN_DISTANCE = "params", "domain_distance"
AMOC_FEATURES = (ATE_TARGET, ATE_SOURCE, SOURCE_DEV_SCORE, N_REMOVED, MEAN_REMOVED_DEPTH, PARAMS, DOMAIN_DISTANCE)
TABLE_COLUMNS = (PAIR, REMOVED, N_LAYERS, TARGET_SCORE, *AMOC_FEATURES)
BASELINES = ("top", "evenly_spaced", "random", "in_domain", "oracle", "full")
METHODS = ("amoc", *BASELINES)
ROW_SUM_TOLERANCE = 1e-4  # float32 softmax rows sum to 1 within ~1e-6; looser only for rounding on disk


# --------------------------------------------------------------------------- treatment effects


def _float64_array(values: Any, argument: str) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, possibly on a GPU or requiring grad
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{argument} must be numeric (an array or tensor), got {type(values).__name__}") from err
    if array.size and not np.isfinite(array).all():
        raise ValueError(f"{argument} holds NaN or infinite values; pass probabilities or predictions of finite logits")
    return array


def class_probabilities(logits: Any) -> np.ndarray:
    """softmax(logits) row by row in float64, ``[N, C] -> [N, C]`` (max subtracted for stability)."""
    z = _float64_array(logits, "logits")
    if z.ndim != 2:
        raise ValueError(f"logits must be 2-D [examples, classes], got shape {z.shape}")
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _check_distributions(p: np.ndarray, argument: str) -> None:
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"{argument} must be [N, C] with N >= 1 examples and C >= 2 classes, got shape {p.shape}")
    if (p < 0).any():
        row = int(np.flatnonzero((p < 0).any(axis=1))[0])
        raise ValueError(f"{argument} row {row} has a negative probability; pass softmax outputs, not logits")
    sums = p.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if bad.size:
        raise ValueError(
            f"{argument} row {int(bad[0])} sums to {sums[bad[0]]:.6g}, not 1: rows must be class distributions "
            "(apply class_probabilities() to logits)"
        )


def average_treatment_effect(p_full: Any, p_removed: Any) -> float:
    """ATE of removing layers on the predicted class distribution (AMoC's effect, in our fixed form)::

        ATE = (1/N) Σ_i ½ Σ_c |p_full[i, c] - p_removed[i, c]|

    the mean over the N examples of the total-variation distance between the full model's and the
    candidate's predicted distributions; 0 when nothing changes, 1 when every prediction moves all
    its mass to other classes. ``p_full`` and ``p_removed`` are ``[N, C]`` probabilities (numpy or torch).
    """
    full, removed = _float64_array(p_full, "p_full"), _float64_array(p_removed, "p_removed")
    _check_distributions(full, "p_full")
    _check_distributions(removed, "p_removed")
    if full.shape != removed.shape:
        raise ValueError(f"p_full {full.shape} and p_removed {removed.shape} must have the same shape (same examples, same classes)")
    return float(np.mean(0.5 * np.abs(full - removed).sum(axis=1)))


def average_treatment_effect_regression(y_full: Any, y_removed: Any) -> float:
    """ATE of removing layers for a regression head (STS-B), on the label's scale::

        ATE = (1/N) Σ_i |ŷ_full[i] - ŷ_removed[i]|

    ``y_full`` and ``y_removed`` are ``[N]`` or ``[N, 1]`` predictions.
    """
    full, removed = _float64_array(y_full, "y_full"), _float64_array(y_removed, "y_removed")
    for array, argument in ((full, "y_full"), (removed, "y_removed")):
        if not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)) or array.shape[0] == 0:
            raise ValueError(f"{argument} must be [N] or [N, 1] regression predictions with N >= 1, got shape {array.shape}")
    full, removed = full.reshape(-1), removed.reshape(-1)
    if full.shape != removed.shape:
        raise ValueError(f"y_full has {full.shape[0]} predictions but y_removed has {removed.shape[0]}; pass the same examples")
    return float(np.mean(np.abs(full - removed)))


def domain_distance(source_vectors: Any, target_vectors: Any, seed: int = 0, folds: int = 5) -> float:
    """How well a linear classifier tells source from target sentences: cross-validated accuracy.

    A logistic regression (features standardised) is trained to separate the base model's sentence
    vectors of the two domains; the mean accuracy over ``folds`` stratified, shuffled folds is
    returned: ~0.5 for indistinguishable domains, 1.0 for perfectly separable ones. The larger set is
    first subsampled (seeded) to the size of the smaller, so chance is exactly 0.5 whatever the
    sizes. Same ``seed``, same number.
    """
    source, target = _float64_array(source_vectors, "source_vectors"), _float64_array(target_vectors, "target_vectors")
    for array, argument in ((source, "source_vectors"), (target, "target_vectors")):
        if array.ndim != 2:
            raise ValueError(f"{argument} must be 2-D [sentences, dimensions], got shape {array.shape}")
    if source.shape[1] != target.shape[1]:
        raise ValueError(f"source_vectors have {source.shape[1]} dimensions but target_vectors {target.shape[1]}; use one model for both")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds must be an int >= 2, got {folds!r}")
    n = min(len(source), len(target))
    if n < folds:
        raise ValueError(f"domain_distance needs at least folds={folds} vectors per domain, got {len(source)} and {len(target)}")
    rng = np.random.default_rng(seed)
    source = source[np.sort(rng.permutation(len(source))[:n])]
    target = target[np.sort(rng.permutation(len(target))[:n])]
    x = np.concatenate([source, target])
    y = np.concatenate([np.zeros(n, dtype=int), np.ones(n, dtype=int)])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(classifier, x, y, cv=splitter, scoring="accuracy")))


# --------------------------------------------------------------------------- the candidates table


def format_removed(layers: Iterable[int]) -> str:
    """``(4, 1) -> "1,4"``; ``() -> ""`` (the full model)."""
    return ",".join(str(int(i)) for i in sorted(layers))


def parse_removed(text: str) -> tuple[int, ...]:
    """``"1,4" -> (1, 4)``; ``"" -> ()``."""
    return tuple(int(part) for part in str(text).split(",") if part.strip())


def candidate_record(
    pair: str,
    removed: Iterable[int],
    n_layers: int,
    *,
    target_score: float,
    source_dev_score: float,
    ate_target: float,
    ate_source: float,
    params: int,
    domain_distance: float,
) -> dict[str, Any]:
    """One row of the candidates table (see the module docstring); the layer features are derived here."""
    if isinstance(n_layers, bool) or not isinstance(n_layers, (int, np.integer)) or n_layers < 1:
        raise ValueError(f"n_layers must be the base model's positive layer count, got {n_layers!r}")
    layers = sorted(int(i) for i in removed)
    if any(not 0 <= i < n_layers for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"removed={layers} must be distinct layer indices in 0..{n_layers - 1}")
    return {
        PAIR: str(pair),
        REMOVED: format_removed(layers),
        N_LAYERS: int(n_layers),
        TARGET_SCORE: float(target_score),
        ATE_TARGET: float(ate_target),
        ATE_SOURCE: float(ate_source),
        SOURCE_DEV_SCORE: float(source_dev_score),
        N_REMOVED: len(layers),
        MEAN_REMOVED_DEPTH: float(np.mean([(i + 1) / n_layers for i in layers])) if layers else 0.0,
        PARAMS: int(params),
        DOMAIN_DISTANCE: float(domain_distance),
    }


def _require_columns(frame: pd.DataFrame, columns: Iterable[str], argument: str = "frame") -> None:
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{argument} must be a pandas DataFrame (the candidates table), got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{argument} lacks column(s) {missing}; build its rows with candidate_record()")


def _require_numeric(frame: pd.DataFrame, columns: Iterable[str]) -> None:
    for column in columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"column {column!r} must be numeric, has dtype {frame[column].dtype}")
        n_missing = int(frame[column].isna().sum())
        if n_missing:
            raise ValueError(f"column {column!r} has {n_missing} missing value(s); fill them or drop those rows before fitting")


# --------------------------------------------------------------------------- stepwise regression


class StepwiseFit(NamedTuple):
    """The OLS fit on the selected features (statsmodels results) and those features, in order of entry."""

    result: Any
    selected: list[str]


def _design(frame: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    design = frame.loc[:, list(features)].astype(np.float64)
    design.insert(0, "const", 1.0)
    return design


def stepwise_aic(frame: pd.DataFrame, target: str, candidates: Sequence[str]) -> StepwiseFit:
    """Forward stepwise OLS by AIC: start from the intercept; at each step add the candidate feature
    that lowers AIC the most; stop when no remaining feature lowers it.

    AIC = 2k - 2 log L with k the number of estimated coefficients (statsmodels' ``aic``). A feature
    collinear with those already chosen (no gain in rank) is never added, and the model stays below
    saturation (at least one residual degree of freedom).
    """
    candidates = list(candidates)
    _require_columns(frame, [target, *candidates])
    if len(set(candidates)) != len(candidates) or target in candidates:
        raise ValueError(f"candidates must be distinct feature columns other than the target {target!r}, got {candidates}")
    _require_numeric(frame, [target, *candidates])
    if len(frame) < 3:
        raise ValueError(f"frame has {len(frame)} rows; stepwise regression needs at least 3")
    y = frame[target].astype(np.float64)

    def fit(features: Sequence[str]) -> Any:
        return sm.OLS(y, _design(frame, features)).fit()

    def full_rank(features: Sequence[str]) -> bool:
        design = _design(frame, features).to_numpy()
        return int(np.linalg.matrix_rank(design)) == design.shape[1]

    selected: list[str] = []
    best = fit(selected)
    while True:
        trials = []
        for feature in candidates:
            # A feature collinear with the chosen ones (or constant) adds nothing and is never tried.
            if feature in selected or len(selected) + 2 >= len(frame) or not full_rank([*selected, feature]):
                continue
            trial = fit([*selected, feature])
            trials.append((trial.aic, feature, trial))
        if not trials:
            break
        aic, feature, trial = min(trials, key=lambda item: item[0])
        if not aic < best.aic:
            break
        selected.append(feature)
        best = trial
    return StepwiseFit(best, selected)


def leave_one_pair_out(
    frame: pd.DataFrame,
    target: str = TARGET_SCORE,
    candidates: Sequence[str] = AMOC_FEATURES,
    *,
    fitter: Callable[[pd.DataFrame, str, Sequence[str]], StepwiseFit] = stepwise_aic,
) -> pd.DataFrame:
    """AMoC's choice for every domain pair, each made by a regression that never saw that pair.

    For each pair P: ``fitter`` (default :func:`stepwise_aic`) is fitted on the candidate rows
    (``n_removed >= 1``) of all OTHER pairs; it predicts ``target`` for P's candidates, and at each
    compression level the candidate with the highest prediction is AMoC's choice. Full-model rows
    (``n_removed == 0``) are neither fitted nor chosen. Returns one row per (pair, level): ``pair``,
    ``n_removed``, ``removed``, ``predicted_score``, ``target_score`` (the choice's true score) and
    ``selected`` (the features the regression kept, joined by ``+``).
    """
    _require_columns(frame, [PAIR, REMOVED, N_REMOVED, target, *candidates])
    rows = frame[frame[N_REMOVED] >= 1].reset_index(drop=True)  # unique labels for idxmax below
    pairs = list(dict.fromkeys(rows[PAIR]))
    if len(pairs) < 2:
        raise ValueError(f"leave-one-pair-out needs candidates of at least 2 domain pairs, got {pairs}")
    choices = []
    for pair in pairs:
        held_out = rows[rows[PAIR] == pair]
        fitted = fitter(rows[rows[PAIR] != pair], target, candidates)
        predicted = np.asarray(fitted.result.predict(_design(held_out, fitted.selected)), dtype=np.float64)
        held_out = held_out.assign(predicted_score=predicted)
        for level, group in held_out.groupby(N_REMOVED, sort=True):
            best = group.loc[group["predicted_score"].idxmax()]
            choices.append({
                PAIR: pair, N_REMOVED: int(level), REMOVED: best[REMOVED],
                "predicted_score": float(best["predicted_score"]), TARGET_SCORE: float(best[target]),
                "selected": "+".join(fitted.selected),
            })
    return pd.DataFrame(choices)


# --------------------------------------------------------------------------- baselines and the table


def baseline_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Target scores of the baselines, one row per (pair, compression level), one column each:

    - ``top``: remove the top layers (:func:`~ckdlab.models.layer_removal.top_layers`);
    - ``evenly_spaced``: remove evenly spaced layers (:func:`~ckdlab.models.layer_removal.evenly_spaced_layers`);
    - ``random``: the mean over all candidates of the level, i.e. the expected score of a random choice;
    - ``in_domain``: the candidate best on source dev (first in table order on ties);
    - ``oracle``: the best candidate on the target test -- an upper bound, never a method;
    - ``full``: the full base model, as reference (the pair's ``n_removed == 0`` row).
    """
    _require_columns(frame, [PAIR, REMOVED, N_REMOVED, N_LAYERS, TARGET_SCORE, SOURCE_DEV_SCORE])
    out = []
    for pair, rows in frame.reset_index(drop=True).groupby(PAIR, sort=False):
        depths = rows[N_LAYERS].unique()
        if len(depths) != 1:
            raise ValueError(f"pair {pair!r} has rows with different n_layers {sorted(depths)}; one base model per pair")
        n_layers = int(depths[0])
        full = rows[rows[N_REMOVED] == 0]
        if len(full) != 1:
            raise ValueError(
                f"pair {pair!r} has {len(full)} full-model rows (n_removed == 0); add exactly one, the base model's "
                "scores, with candidate_record(pair, (), n_layers, ...)"
            )
        for level, group in rows[rows[N_REMOVED] >= 1].groupby(N_REMOVED, sort=True):
            fixed = {}
            for name, layers in (("top", top_layers(n_layers, int(level))), ("evenly_spaced", evenly_spaced_layers(n_layers, int(level)))):
                match = group[group[REMOVED] == format_removed(layers)]
                if match.empty:
                    raise ValueError(
                        f"pair {pair!r}, {level} removed: no candidate removes {format_removed(layers)!r} (the {name} "
                        "baseline); generate the sets with candidate_sets(), which always includes it"
                    )
                fixed[name] = float(match[TARGET_SCORE].iloc[0])
            out.append({
                PAIR: pair, N_REMOVED: int(level), **fixed,
                "random": float(group[TARGET_SCORE].mean()),
                "in_domain": float(group.loc[group[SOURCE_DEV_SCORE].idxmax(), TARGET_SCORE]),
                "oracle": float(group[TARGET_SCORE].max()),
                "full": float(full[TARGET_SCORE].iloc[0]),
            })
    return pd.DataFrame(out)


def main_table(frame: pd.DataFrame, choices: pd.DataFrame) -> pd.DataFrame:
    """Per compression level, the target score of AMoC's choice and of each baseline, over pairs.

    ``choices`` is :func:`leave_one_pair_out`'s output for ``frame``. Rows: ``n_removed``; columns:
    ``(method, stat)`` for method in :data:`METHODS` and stat in ``mean``, ``std`` (sample standard
    deviation over pairs, NaN for a single pair) and ``n`` (number of pairs).
    """
    _require_columns(choices, [PAIR, N_REMOVED, TARGET_SCORE], "choices")
    scores = baseline_scores(frame)
    amoc = choices[[PAIR, N_REMOVED, TARGET_SCORE]].rename(columns={TARGET_SCORE: "amoc"})
    merged = scores.merge(amoc, on=[PAIR, N_REMOVED], how="left", validate="one_to_one")
    if merged["amoc"].isna().any():
        missing = merged.loc[merged["amoc"].isna(), [PAIR, N_REMOVED]].to_records(index=False).tolist()
        raise ValueError(f"choices lack AMoC's pick for (pair, level) {missing}; pass leave_one_pair_out(frame) of this frame")
    grouped = merged.groupby(N_REMOVED, sort=True)
    columns = {}
    for method in METHODS:
        columns[(method, "mean")] = grouped[method].mean()
        columns[(method, "std")] = grouped[method].std(ddof=1)
        columns[(method, "n")] = grouped[method].count()
    table = pd.DataFrame(columns)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["method", "stat"])
    return table

