"""Notebook 05: CKD ablations as data — which runs a grid means, running them, the numbers behind the figures.

A profile's ``ablations`` section (merged over ``defaults.yaml``) holds a ``base`` configuration
(CKD + KD, all four relation terms, uniform layer map, all triplets, cosine pairs), named
``groups`` of variants (each a change to ``base``), a λ(WR) x λ(LTR) log-grid ``sweep_values``,
the ``student``, and two ``grids`` (``reduced`` inside ``make reproduce``, ``full`` with
``make ablations``): tasks, seeds, groups, training overrides.

:func:`expand_grid` turns a grid into :class:`AblationRun` s, one per (group, variant, task, seed);
variants that come out identical share one ``label`` (and so one distillation run).
:func:`run_ablations` runs each distinct configuration once through
:func:`ckdlab.studies.distillation.distill` and returns a tidy frame with one row per (group,
variant, task, seed). The statistics for the conclusions are in :mod:`ckdlab.results`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

from ckdlab.objectives.registry import REGISTRY, default_weights, parse_objective
from ckdlab.profiles import load_profile, merge, profile_section
from ckdlab.results import group_conclusions
from ckdlab.studies.distillation import distill, grid_bar

SWEEP_GROUP = "λ sweep"
GRIDS = ("reduced", "full", "weighting")


def grid_settings(profile: str | dict, grid: str = "reduced") -> dict[str, Any]:
    """The ``grid`` (``reduced`` | ``full``) of the profile's ablations."""
    grids = profile_section(profile, "ablations").get("grids", {})
    if grid not in grids:
        raise ValueError(f"grid={grid!r}: profile '{load_profile(profile)['name']}' has the ablation grids {list(grids)} "
                         "('reduced' runs inside make reproduce, 'full' with make ablations)")
    return grids[grid]


@dataclass(frozen=True)
class AblationRun:
    """One cell of the grid: a (group, variant) on a task with a seed.

    ``options`` are the :func:`ckdlab.studies.distillation.distill` arguments of the configuration; ``label`` names
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


def variants(profile: str | dict, grid: str = "reduced") -> list[tuple[str, str, dict[str, Any], dict[str, float]]]:
    """``(group, variant, distill options, coordinates)`` of the grid's configurations, in order."""
    settings = profile_section(profile, "ablations")
    chosen = grid_settings(profile, grid)
    base = settings["base"]
    groups = settings["groups"]
    names = list(groups) if chosen.get("groups") == "all" else list(chosen.get("groups") or [])
    unknown = [g for g in names if g not in groups]
    if unknown:
        raise ValueError(f"grid '{grid}' of profile '{load_profile(profile)['name']}' names unknown group(s) {unknown}; known: {list(groups)}")
    out = [(group, variant, _valid(merge(base, change or {})), {}) for group in names for variant, change in groups[group].items()]
    if chosen.get("sweep"):
        for wr in chosen.get("sweep_values", settings["sweep_values"]):
            for ltr in chosen.get("sweep_values", settings["sweep_values"]):
                change = {"weights": {"wr_pair": wr, "wr_triplet": wr, "ltr_pair": ltr, "ltr_triplet": ltr}}
                out.append((SWEEP_GROUP, f"λWR={wr:g}, λLTR={ltr:g}", _valid(merge(base, change)), {"lambda_wr": wr, "lambda_ltr": ltr}))
    return out


def _valid(options: dict[str, Any]) -> dict[str, Any]:
    """Drop weights of terms the variant's objective does not have (e.g. ``kd`` once KD is removed), and
    options that only objectives it does not run read (the CKD base's options in a CoDIR variant).
    An option no objective reads stays, so that the run names it in its error; a named weighting
    (``"official"``) stays as it is."""
    names = parse_objective(options["objective"])
    others = {o for name, spec in REGISTRY.items() if name not in names for o in spec.options}
    others -= {o for name in names for o in REGISTRY[name].options}
    options["objective_options"] = {k: v for k, v in (options.get("objective_options") or {}).items() if k not in others}
    if isinstance(options.get("weights"), str):
        return options
    terms = default_weights(names)
    options["weights"] = {k: v for k, v in (options.get("weights") or {}).items() if k in terms}
    return options


def expand_grid(profile: str | dict, grid: str = "reduced", tasks: Iterable[str] | None = None,
                seeds: Iterable[int] | None = None) -> list[AblationRun]:
    """Every (group, variant, task, seed) of the grid; identical configurations share a label."""
    chosen = grid_settings(profile, grid)
    labels: dict[str, str] = {}
    configs = []
    for group, variant, options, coords in variants(profile, grid):
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


def grid_students(profile: str | dict, grid: str = "reduced") -> dict[str, str]:
    """The students a grid distils: ``students`` (names of the profile's ``distill.students``) when the
    grid lists them, else the ablations' one ``student``."""
    chosen = grid_settings(profile, grid)
    if chosen.get("students"):
        known = load_profile(profile)["distill"]["students"]
        unknown = [name for name in chosen["students"] if name not in known]
        if unknown:
            raise ValueError(f"grid '{grid}' names student(s) {unknown}; the profile's distill.students are {list(known)}")
        return {name: known[name] for name in chosen["students"]}
    student = profile_section(profile, "ablations")["student"]
    return {student["name"]: student["spec"]}


def run_ablations(profile: str = "quick", grid: str = "reduced", tasks: Iterable[str] | None = None,
                  seeds: Iterable[int] | None = None, reuse: bool = True, **overrides: Any) -> pd.DataFrame:
    """Run every distinct configuration of the grid once per student; with ``reuse`` a finished identical
    run (same configuration, seed and teacher) is read back instead of trained again.

    Returns one row per (group, variant, student, task, seed): score, relation fidelity (centred
    |Δcos|), params, latency_ms, label. ``overrides`` are training options on top of the grid's ``train``.
    """
    chosen = grid_settings(profile, grid)
    train = {**(chosen.get("train") or {}), **overrides}
    cells = expand_grid(profile, grid, tasks=tasks, seeds=seeds)
    rows = []
    for name, spec in grid_students(profile, grid).items():
        results = {
            (run.task, run.seed, run.label): distill(run.task, student=spec, student_name=name, method=run.label, profile=profile,
                                                     seed=run.seed, resume=reuse, **run.options, **{"progress": False, **train})
            for run in grid_bar(distinct_runs(cells), desc=f"runs ({name})")
        }
        for run in cells:
            record = results[(run.task, run.seed, run.label)]
            rows.append({"group": run.group, "variant": run.variant, "student": name, "task": run.task, "seed": run.seed,
                         "label": run.label, "score": float(record["score"]),
                         "fidelity": (record.get("metrics") or {}).get("fidelity.cos_gap_centred"),
                         "params": record.get("params"), "latency_ms": record.get("latency_ms"), **run.coords})
    return pd.DataFrame(rows)


def sweep_matrix(frame: pd.DataFrame, task: str | None = None, value: str = "score") -> pd.DataFrame:
    """Mean ``value`` over seeds (and tasks, unless one is given) with λ(LTR) rows and λ(WR) columns."""
    part = frame[frame["group"] == SWEEP_GROUP]
    if task is not None:
        part = part[part["task"] == task]
    if part.empty:
        raise ValueError("no λ-sweep runs in this frame; run a grid with sweep: true (e.g. grid='full')")
    per_seed = part.groupby(["lambda_ltr", "lambda_wr", "seed"])[value].mean().reset_index()
    return per_seed.pivot_table(index="lambda_ltr", columns="lambda_wr", values=value, aggfunc="mean").sort_index(ascending=False)


def conclusions(frame: pd.DataFrame, scale: float = 100.0, value: str = "score", higher_is_better: bool = True) -> list[str]:
    """Markdown lines: per ablation group (and student, when there are several), each variant against
    the group's first (the default), paired over seeds with a 95% interval. For a distance such as
    ``fidelity`` pass ``higher_is_better=False``: the sentences then say which is closer to the teacher."""
    lines = []
    if not higher_is_better:
        frame = frame.assign(**{value: -frame[value].astype(float)})
    students = list(dict.fromkeys(frame["student"])) if "student" in frame else [None]
    for group in [g for g in dict.fromkeys(frame["group"]) if g != SWEEP_GROUP]:
        for student in students:
            part = frame if student is None else frame[frame["student"] == student]
            lines.append(f"**{group}**" + ("" if student is None or len(students) == 1 else f" · {student} student"))
            sentences = group_conclusions(part, group, scale=scale, value=value)
            if not higher_is_better:
                sentences = [sentence.replace(" beats ", " is closer to the teacher than ") for sentence in sentences]
            lines += [f"- {sentence}" for sentence in sentences]
    return lines


def pareto_points(dynabert: pd.DataFrame, ablations: pd.DataFrame) -> pd.DataFrame:
    """The points of notebook 05's Pareto plot: every DynaBERT sub-network, and the ablation default
    student (each group's first variant, one row per task and seed)."""
    defaults = ablations[ablations["variant"] == ablations.groupby("group")["variant"].transform("first")]
    defaults = defaults.drop_duplicates(["label", "task", "seed"]).assign(method="ablation default", student="ablation student")
    return pd.concat([dynabert, defaults], ignore_index=True)
