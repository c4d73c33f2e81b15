"""CKD ablations as data: which runs a grid means, running them, and the numbers behind the figures.

The grid lives in ``ckdlab/configs/profiles/ablations.yaml``: a ``base`` configuration (CKD + KD,
all four relation terms, uniform layer map, all triplets, cosine pairs), named ``groups`` of
variants (each a change to ``base``), a λ(WR) x λ(LTR) log-grid ``sweep``, and per profile a
``reduced`` and a ``full`` grid (tasks, seeds, groups, training overrides) plus DynaBERT settings.

:func:`expand_grid` turns a grid into :class:`AblationRun` s, one per (group, variant, task, seed);
variants that come out identical share one ``label`` (and so one distillation run).
:func:`run_ablations` runs each distinct configuration once through :func:`ckdlab.api.distill`
and returns a tidy frame with one row per (group, variant, task, seed).

Statistics for honest conclusions: :func:`summarise` (mean, std, n, 95% t-interval over seeds) and
:func:`compare` (paired difference over shared seeds with its 95% t-interval; "not
distinguishable" when the interval contains 0).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
import yaml

CONFIG_PATH = Path(__file__).resolve().parent / "configs" / "profiles" / "ablations.yaml"
SWEEP_GROUP = "λ sweep"
GRIDS = ("reduced", "full")


def load_settings(path: str | Path = CONFIG_PATH) -> dict[str, Any]:
    with Path(path).open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def profile_settings(profile: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ablation section of ``profile`` (smoke | quick | paper)."""
    settings = settings or load_settings()
    known = [k for k in settings if k not in ("base", "groups", "sweep_values")]
    if profile not in known:
        raise ValueError(f"ablations.yaml has no section for profile '{profile}'; known: {known}")
    return settings[profile]


def grid_settings(profile: str, grid: str = "reduced", settings: dict[str, Any] | None = None) -> dict[str, Any]:
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r}: use 'reduced' (inside make reproduce) or 'full' (make ablations)")
    return profile_settings(profile, settings)["grids"][grid]


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` applied: nested dicts merge key by key, other values replace."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class AblationRun:
    """One cell of the grid: a (group, variant) on a task with a seed.

    ``options`` are the :func:`ckdlab.api.distill` arguments of the configuration; ``label`` names
    the configuration (shared by identical variants) and becomes the run's ``method``.
    """

    group: str
    variant: str
    task: str
    seed: int
    label: str
    options: dict[str, Any] = field(hash=False)
    coords: dict[str, float] = field(default_factory=dict, hash=False)


def _fingerprint(options: dict[str, Any]) -> str:
    return json.dumps(options, sort_keys=True, default=str)


def variants(profile: str, grid: str = "reduced", settings: dict[str, Any] | None = None) -> list[tuple[str, str, dict[str, Any], dict[str, float]]]:
    """``(group, variant, distill options, coordinates)`` of the grid's configurations, in order."""
    settings = settings or load_settings()
    chosen = grid_settings(profile, grid, settings)
    base = settings["base"]
    groups = settings["groups"]
    names = list(groups) if chosen.get("groups") == "all" else list(chosen.get("groups") or [])
    unknown = [g for g in names if g not in groups]
    if unknown:
        raise ValueError(f"grid '{grid}' of profile '{profile}' names unknown group(s) {unknown}; known: {list(groups)}")
    out = [(group, variant, _valid(merge(base, change or {})), {}) for group in names for variant, change in groups[group].items()]
    if chosen.get("sweep"):
        for wr in chosen.get("sweep_values", settings["sweep_values"]):
            for ltr in chosen.get("sweep_values", settings["sweep_values"]):
                change = {"weights": {"wr_pair": wr, "wr_triplet": wr, "ltr_pair": ltr, "ltr_triplet": ltr}}
                out.append((SWEEP_GROUP, f"λWR={wr:g}, λLTR={ltr:g}", _valid(merge(base, change)), {"lambda_wr": wr, "lambda_ltr": ltr}))
    return out


def _valid(options: dict[str, Any]) -> dict[str, Any]:
    """Drop weights of terms the variant's objective does not have (e.g. ``kd`` once KD is removed)."""
    from ckdlab.objectives.registry import default_weights, parse_objective

    terms = default_weights(parse_objective(options["objective"]))
    options["weights"] = {k: v for k, v in (options.get("weights") or {}).items() if k in terms}
    return options


def expand_grid(profile: str, grid: str = "reduced", settings: dict[str, Any] | None = None,
                tasks: Iterable[str] | None = None, seeds: Iterable[int] | None = None) -> list[AblationRun]:
    """Every (group, variant, task, seed) of the grid; identical configurations share a label."""
    settings = settings or load_settings()
    chosen = grid_settings(profile, grid, settings)
    labels: dict[str, str] = {}
    configs = []
    for group, variant, options, coords in variants(profile, grid, settings):
        label = labels.setdefault(_fingerprint(options), f"{group}: {variant}")
        configs.append((group, variant, label, options, coords))
    return [
        AblationRun(group, variant, task, int(seed), label, options, coords)
        for task in (tasks or chosen["tasks"])
        for seed in (seeds if seeds is not None else chosen["seeds"])
        for group, variant, label, options, coords in configs
    ]


def distinct_runs(runs: Iterable[AblationRun]) -> list[AblationRun]:
    """One run per (task, seed, label): what actually has to be trained."""
    seen: dict[tuple[str, int, str], AblationRun] = {}
    for run in runs:
        seen.setdefault((run.task, run.seed, run.label), run)
    return list(seen.values())


def run_ablations(profile: str = "quick", grid: str = "reduced", tasks: Iterable[str] | None = None,
                  seeds: Iterable[int] | None = None, reuse: bool = True, **overrides: Any) -> pd.DataFrame:
    """Run (or, with ``reuse``, load from the registry) every distinct configuration of the grid.

    Returns one row per (group, variant, task, seed): score, params, latency_ms, label.
    ``overrides`` are training options on top of the grid's ``train`` section.
    """
    from ckdlab import api
    from ckdlab.results import load_runs

    chosen = grid_settings(profile, grid)
    student = profile_settings(profile)["student"]
    train = {**(chosen.get("train") or {}), **overrides}
    cells = expand_grid(profile, grid, tasks=tasks, seeds=seeds)
    done = load_runs(api.results_dir(), kind="distill", profile=profile, student=student["name"]) if reuse else pd.DataFrame()
    results: dict[tuple[str, int, str], dict[str, Any]] = {}
    for run in distinct_runs(cells):
        previous = done[(done["task"] == run.task) & (done["seed"] == run.seed) & (done["method"] == run.label)] if len(done) else done
        if len(previous):
            results[(run.task, run.seed, run.label)] = previous.iloc[-1].to_dict()
            continue
        results[(run.task, run.seed, run.label)] = api.distill(
            run.task, student=student["spec"], student_name=student["name"], method=run.label, profile=profile,
            seed=run.seed, **run.options, **train,
        )
    rows = []
    for run in cells:
        record = results[(run.task, run.seed, run.label)]
        rows.append({"group": run.group, "variant": run.variant, "task": run.task, "seed": run.seed, "label": run.label,
                     "score": float(record["score"]), "params": record.get("params"), "latency_ms": record.get("latency_ms"),
                     **run.coords})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- statistics


def t_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, int]:
    """``(mean, half width of the t-interval, n)``; the half width is nan for n < 2."""
    from scipy import stats

    array = np.asarray(list(values), dtype=float)
    n = len(array)
    if n == 0:
        raise ValueError("t_interval needs at least one value")
    if n < 2:
        return float(array.mean()), float("nan"), 1
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * array.std(ddof=1) / math.sqrt(n)
    return float(array.mean()), float(half), n


def summarise(frame: pd.DataFrame, by: Iterable[str] = ("group", "variant", "task"), value: str = "score") -> pd.DataFrame:
    """Mean, std (ddof 1), n and 95% t-interval half width of ``value`` over seeds per ``by``."""
    by = list(by)
    rows = []
    for key, part in frame.groupby(by, sort=False):
        mean, half, n = t_interval(part[value])
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "mean": mean, "std": float(part[value].std(ddof=1)) if n > 1 else float("nan"),
                     "n": n, "ci95": half})
    return pd.DataFrame(rows)


def compare(frame: pd.DataFrame, a: str, b: str, *, group: str | None = None, task: str | None = None,
            column: str = "variant", value: str = "score") -> dict[str, Any]:
    """Paired difference ``a − b`` of ``value`` over the seeds both have (per task, then averaged
    over tasks per seed), with its 95% t-interval. ``distinguishable`` is false when the interval
    contains 0 or when fewer than two seeds are shared."""
    part = frame if group is None else frame[frame["group"] == group]
    if task is not None:
        part = part[part["task"] == task]
    per_seed = part.pivot_table(index="seed", columns=[column, "task"], values=value, aggfunc="mean")
    missing = [name for name in (a, b) if name not in per_seed.columns.get_level_values(0)]
    if missing:
        raise ValueError(f"compare: {missing} not found in column '{column}'; available: {sorted(set(part[column]))}")
    diff = (per_seed[a] - per_seed[b]).mean(axis=1).dropna()
    if diff.empty:
        raise ValueError(f"compare: '{a}' and '{b}' share no seed and task")
    mean, half, n = t_interval(diff)
    distinguishable = n >= 2 and not math.isnan(half) and abs(mean) > half
    return {"a": a, "b": b, "diff": mean, "ci95": half, "n": n, "distinguishable": distinguishable}


def describe_comparison(result: dict[str, Any], scale: float = 100.0) -> str:
    """One sentence that says only what the numbers support."""
    a, b, n = result["a"], result["b"], result["n"]
    diff = result["diff"] * scale
    if n < 2 or math.isnan(result["ci95"]):
        return f"{a} vs {b}: {diff:+.1f} points from {n} seed(s); one seed gives no error bar, so no conclusion."
    half = result["ci95"] * scale
    if result["distinguishable"]:
        better, worse = (a, b) if diff > 0 else (b, a)
        return f"{better} beats {worse} by {abs(diff):.1f} ± {half:.1f} points (95% CI, {n} seeds)."
    return f"{a} vs {b}: {diff:+.1f} ± {half:.1f} points (95% CI, {n} seeds): not distinguishable."


def group_conclusions(frame: pd.DataFrame, group: str, reference: str | None = None, scale: float = 100.0) -> list[str]:
    """Each variant of ``group`` against ``reference`` (default: the group's first variant)."""
    part = frame[frame["group"] == group]
    names = list(dict.fromkeys(part["variant"]))
    reference = reference or names[0]
    return [describe_comparison(compare(part, name, reference), scale) for name in names if name != reference]


def sweep_matrix(frame: pd.DataFrame, task: str | None = None, value: str = "score") -> pd.DataFrame:
    """Mean ``value`` over seeds (and tasks, unless one is given) with λ(LTR) rows and λ(WR) columns."""
    part = frame[frame["group"] == SWEEP_GROUP]
    if task is not None:
        part = part[part["task"] == task]
    if part.empty:
        raise ValueError("no λ-sweep runs in this frame; run a grid with sweep: true (e.g. grid='full')")
    per_seed = part.groupby(["lambda_ltr", "lambda_wr", "seed"])[value].mean().reset_index()
    return per_seed.pivot_table(index="lambda_ltr", columns="lambda_wr", values=value, aggfunc="mean").sort_index(ascending=False)


def pareto_front(frame: pd.DataFrame, cost: str = "params", value: str = "score") -> pd.DataFrame:
    """Rows not dominated by another row (no other is at most as costly and strictly better, or
    strictly cheaper and at least as good), sorted by ``cost``."""
    points = frame[[cost, value]].to_numpy(dtype=float)
    keep = []
    for i, (c, v) in enumerate(points):
        dominated = any((c2 <= c and v2 > v) or (c2 < c and v2 >= v) for j, (c2, v2) in enumerate(points) if j != i)
        keep.append(not dominated)
    return frame[np.array(keep, dtype=bool)].sort_values(cost)


def size_frame(frame: pd.DataFrame, by: Iterable[str] = ("method", "student")) -> pd.DataFrame:
    """Mean score ± std over seeds with mean params and latency per ``by``: the Pareto plot's points."""
    by = list(by)
    grouped = frame.groupby(by, sort=False)
    out = grouped.agg(score=("score", "mean"), score_std=("score", "std"), n=("score", "count"),
                      params=("params", "mean"), latency_ms=("latency_ms", "mean")).reset_index()
    return out


# --------------------------------------------------------------------------- DynaBERT


def dynabert_settings(profile: str, grid: str = "reduced", settings: dict[str, Any] | None = None) -> dict[str, Any]:
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r}: use 'reduced' or 'full'")
    return profile_settings(profile, settings)["dynabert"][grid]


def run_dynabert_grid(profile: str = "quick", grid: str = "reduced", reuse: bool = True, **overrides: Any) -> pd.DataFrame:
    """Every task x loss x seed of the DynaBERT settings; one row per sub-network (loaded from the
    registry when ``reuse`` and all its sub-networks are recorded)."""
    from ckdlab import api
    from ckdlab.dynabert import DEPTHS, WIDTHS, run_dynabert
    from ckdlab.results import load_runs

    chosen = dynabert_settings(profile, grid)
    train = {**(chosen.get("train") or {}), **overrides}
    done = load_runs(api.results_dir(), kind="dynabert", profile=profile) if reuse else pd.DataFrame()
    rows = []
    for task in chosen["tasks"]:
        for loss in chosen["losses"]:
            method = "DynaBERT loss" if loss == "dynabert" else "CKD + KD"
            for seed in chosen["seeds"]:
                previous = done[(done["task"] == task) & (done["method"] == method) & (done["seed"] == seed)] if len(done) else done
                if len(previous) >= len(WIDTHS) * len(DEPTHS):
                    rows += previous.drop_duplicates("student", keep="last").to_dict("records")
                    continue
                rows += run_dynabert(task, profile=profile, loss=loss, seed=seed, method=method,
                                     importance_examples=chosen.get("importance_examples"), **train)
    keep = ["task", "method", "loss", "seed", "student", "width", "depth", "score", "params", "latency_ms"]
    return pd.DataFrame(rows)[keep]
