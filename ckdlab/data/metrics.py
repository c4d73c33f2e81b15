"""GLUE metrics, written out in numpy (no ``evaluate``: it fetches metric code from the hub).

Each task reports the metrics GLUE's leaderboard shows for it (``TaskSpec.metrics``):
CoLA ``mcc``; MRPC and QQP ``f1`` and ``accuracy``; STS-B ``pearson`` and ``spearman``;
every other task ``accuracy`` (MNLI: one call per dev split, matched and mismatched).
Values are fractions in [0, 1] (correlations in [-1, 1]), not GLUE's percentages.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from numpy.typing import ArrayLike

from .tasks import TaskSpec, get_task


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Accuracy = (1/N) * sum_i [pred_i == label_i]."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float(np.mean(predictions == labels))


def binary_f1(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of the positive class: F1 = 2TP / (2TP + FP + FN); 0.0 when there is no positive
    prediction and no positive label (the denominator is 0; sklearn's ``zero_division=0``)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    tp = int(np.sum((predictions == positive) & (labels == positive)))
    fp = int(np.sum((predictions == positive) & (labels != positive)))
    fn = int(np.sum((predictions != positive) & (labels == positive)))
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 0.0


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Matthews correlation coefficient, multi-class form (Gorodkin 2004), which for two classes
    equals (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)):

        MCC = (c*s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2) (s^2 - sum_k t_k^2))

    with s samples, c correct, p_k = times class k was predicted, t_k = times it occurred.
    0.0 when the denominator is 0 (all predictions or all labels one class), as sklearn does.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    classes, encoded = np.unique(np.concatenate([predictions, labels]), return_inverse=True)
    pred_ids, label_ids = encoded[: len(predictions)], encoded[len(predictions):]
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    np.add.at(confusion, (label_ids, pred_ids), 1.0)
    t_k, p_k = confusion.sum(axis=1), confusion.sum(axis=0)
    correct, samples = np.trace(confusion), confusion.sum()
    numerator = correct * samples - p_k @ t_k
    denominator = math.sqrt((samples**2 - p_k @ p_k) * (samples**2 - t_k @ t_k))
    return float(numerator / denominator) if denominator else 0.0


def pearson_corr(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson r = sum (x-mx)(y-my) / sqrt(sum (x-mx)^2 * sum (y-my)^2); NaN if either input is
    constant (r is undefined there; scipy returns NaN too)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy / denominator) if denominator else math.nan


def average_ranks(x: ArrayLike) -> np.ndarray:
    """1-based ranks of ``x``, ties sharing the mean of the ranks they span
    (``scipy.stats.rankdata(method='average')``): [10, 20, 20, 30] -> [1, 2.5, 2.5, 4]."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts_group = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    group_of_sorted = np.cumsum(starts_group) - 1
    bounds = np.concatenate([np.flatnonzero(starts_group), [len(x)]])
    # A group spanning sorted positions [a, b) holds ranks a+1 .. b, whose mean is (a + b + 1) / 2.
    group_rank = (bounds[:-1] + bounds[1:] + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = group_rank[group_of_sorted]
    return ranks


def spearman_corr(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rho = Pearson r of the average ranks (ties get the mean rank)."""
    return pearson_corr(average_ranks(x), average_ranks(y))


def _class_ids(predictions: np.ndarray, spec: TaskSpec) -> np.ndarray:
    if predictions.ndim == 2:
        if predictions.shape[1] != spec.num_labels:
            raise ValueError(
                f"predictions for {spec.name} are logits of shape {predictions.shape}; expected "
                f"[N, {spec.num_labels}] (one column per class) or class ids of shape [N]"
            )
        if not np.all(np.isfinite(predictions)):
            raise ValueError(f"predictions for {spec.name} contain NaN or inf logits")
        return predictions.argmax(axis=1)
    if predictions.ndim != 1:
        raise ValueError(f"predictions must be logits [N, C] or class ids [N], got shape {predictions.shape}")
    return _checked_ids(predictions, spec, "predictions")


def _checked_ids(values: np.ndarray, spec: TaskSpec, what: str) -> np.ndarray:
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ValueError(f"{what} for {spec.name} must be integer class ids, got non-integer floats")
        values = values.astype(np.int64)
    elif values.dtype.kind not in "iub":
        raise ValueError(f"{what} for {spec.name} must be integer class ids, got dtype {values.dtype}")
    if values.size and (values.min() < 0 or values.max() >= spec.num_labels):
        raise ValueError(
            f"{what} for {spec.name} must be class ids in 0..{spec.num_labels - 1}, "
            f"got values in {values.min()}..{values.max()}"
        )
    return values.astype(np.int64)


def _scores(values: np.ndarray, spec: TaskSpec, what: str) -> np.ndarray:
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{what} for {spec.name} must be scores of shape [N] or [N, 1], got {values.shape}")
    if values.dtype.kind not in "fiu":
        raise ValueError(f"{what} for {spec.name} must be numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{what} for {spec.name} contain NaN or inf")
    return values


def compute_metrics(task: str | TaskSpec, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """The metrics GLUE reports for ``task``, keyed ``accuracy``/``f1``/``mcc``/``pearson``/``spearman``
    (only those the task reports, in ``TaskSpec.metrics`` order).

    ``predictions``: logits ``[N, C]`` (argmax is taken) or class ids ``[N]``; for STS-B, predicted
    scores ``[N]`` or ``[N, 1]``. ``labels``: class ids ``[N]`` (scores for STS-B). Torch tensors
    on the CPU work (they convert through ``np.asarray``).
    """
    spec = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must have shape [N], got {labels.shape}")
    if len(labels) == 0:
        raise ValueError("cannot compute metrics on zero examples (labels is empty)")
    if len(predictions) != len(labels):
        raise ValueError(f"predictions have {len(predictions)} rows but labels have {len(labels)}")

    if spec.is_regression:
        scores, gold = _scores(predictions, spec, "predictions"), _scores(labels, spec, "labels")
        values = {"pearson": pearson_corr(scores, gold), "spearman": spearman_corr(scores, gold)}
    else:
        ids, gold = _class_ids(predictions, spec), _checked_ids(labels, spec, "labels")
        # All three are cheap; the task's TaskSpec.metrics picks the ones GLUE reports.
        values = {
            "accuracy": accuracy(ids, gold),
            "f1": binary_f1(ids, gold, positive=1),
            "mcc": matthews_corrcoef(ids, gold),
        }
    return {name: float(values[name]) for name in spec.metrics}


def glue_score(metrics: Mapping[str, float], task: str | TaskSpec | None = None) -> float:
    """A task's GLUE score: the unweighted mean of its reported metrics, as the GLUE leaderboard
    scores tasks with more than one metric (Wang et al., 2018): MRPC and QQP (F1 + acc) / 2,
    STS-B (Pearson + Spearman) / 2; single-metric tasks score that metric.

    With ``task`` given only that task's metrics are averaged (and all must be present); without
    it every value in ``metrics`` is averaged, e.g. ``{'mnli_m': .84, 'mnli_mm': .83}``.
    The result is on the metrics' own scale (fractions here, not GLUE's percentages).
    """
    if task is None:
        values = list(metrics.values())
    else:
        spec = get_task(task)
        missing = [name for name in spec.metrics if name not in metrics]
        if missing:
            raise ValueError(
                f"metrics lack {missing!r}, which {spec.name}'s GLUE score averages; "
                f"pass the dict compute_metrics({spec.name!r}, ...) returns"
            )
        values = [metrics[name] for name in spec.metrics]
    if not values:
        raise ValueError("metrics is empty; nothing to average")
    return float(np.mean([float(v) for v in values]))
