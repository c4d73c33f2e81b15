"""Result tables and the statistics behind sentences that compare methods.

``table`` turns run records (:func:`ckdlab.workspace.load_runs`) into a paper table: mean ± std
over seeds, best per column in bold, an average column, rows grouped by student size. It pools
exactly the records that differ only in their seed: duplicates of one run count once, and records
of different configurations under one row label become separate rows. ``ResultsTable.tidy()`` is
the long form for CSV (mean, std, n and the teachers per cell).

Statistics for honest conclusions: :func:`t_interval` (mean, 95% t-interval half width, n),
:func:`summarise` per group, :func:`compare` (a paired difference over shared seeds with its
interval; "not distinguishable" when the interval contains 0) and :func:`describe_comparison`
(one sentence that says only what the numbers support). :func:`pareto_front` and
:func:`size_frame` serve score-against-cost plots.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

@dataclass
class ResultsTable:
    """Mean, std and count (seeds) per (row, column); render with ``to_markdown`` / ``to_latex``;
    :meth:`tidy` is the long form with the teachers of each cell."""

    mean: pd.DataFrame
    std: pd.DataFrame
    count: pd.DataFrame
    scale: float = 100.0
    digits: int = 1
    higher_is_better: bool = True
    teachers: pd.DataFrame = field(default_factory=pd.DataFrame)

    def tidy(self) -> pd.DataFrame:
        """One row per (row, column): the row keys, ``column``, ``mean``, ``std``, ``n`` and ``teacher``
        (the teacher(s) of that cell's runs, when the records name one)."""
        long = pd.concat({"mean": self.mean.stack(future_stack=True), "std": self.std.stack(future_stack=True),
                          "n": self.count.stack(future_stack=True)}, axis=1).reset_index()
        long = long.rename(columns={long.columns[len(self.mean.index.names)]: "column"})
        long["n"] = long["n"].fillna(0).astype(int)
        if not self.teachers.empty:
            long = long.merge(self.teachers, on="column", how="left")
        return long[long["n"] > 0].reset_index(drop=True)

    def _best(self) -> pd.DataFrame:
        best = pd.DataFrame(False, index=self.mean.index, columns=self.mean.columns)
        for column in self.mean.columns:
            values = self.mean[column]
            if values.notna().any():
                target = values.max() if self.higher_is_better else values.min()
                best[column] = np.isclose(values, target, equal_nan=False)
        return best

    def formatted(self, bold: tuple[str, str] = ("**", "**")) -> pd.DataFrame:
        best = self._best()
        out = pd.DataFrame(index=self.mean.index, columns=self.mean.columns, dtype=object)
        for r in self.mean.index:
            for c in self.mean.columns:
                m = self.mean.loc[r, c]
                if pd.isna(m):
                    out.loc[r, c] = "–"
                    continue
                s = self.std.loc[r, c]
                n = self.count.loc[r, c]
                text = f"{m * self.scale:.{self.digits}f}"
                if n > 1 and not pd.isna(s):
                    text += f" ± {s * self.scale:.{self.digits}f}"
                out.loc[r, c] = f"{bold[0]}{text}{bold[1]}" if best.loc[r, c] else text
        return out

    def seeds(self) -> pd.Series:
        """Seeds per row: ``"3"``, or a range such as ``"1–3"`` when the columns differ."""
        counts = self.count.drop(columns=[c for c in ("avg",) if c in self.count.columns])
        def text(row: pd.Series) -> str:
            values = sorted({int(v) for v in row if v > 0})
            return "–" if not values else str(values[0]) if len(values) == 1 else f"{values[0]}–{values[-1]}"
        return counts.apply(text, axis=1)

    def to_markdown(self) -> str:
        frame = self.formatted()
        frame["n"] = self.seeds()
        index_names = [str(n) for n in (frame.index.names if frame.index.names[0] else ["row"])]
        header = index_names + [str(c) for c in frame.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(index_names) + ["---:"] * len(frame.columns)) + "|"]
        for idx, row in frame.iterrows():
            keys = list(idx) if isinstance(idx, tuple) else [idx]
            lines.append("| " + " | ".join([str(k) for k in keys] + list(row.values)) + " |")
        return "\n".join(lines)

    def to_latex(self) -> str:
        frame = self.formatted(bold=("\\textbf{", "}")).map(lambda text: text.replace("±", "$\\pm$"))
        frame["n"] = self.seeds()
        return frame.to_latex(escape=False)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def distinct_runs(runs: pd.DataFrame, cell: list[str]) -> pd.DataFrame:
    """The records a table may pool: one per run (the latest record of a ``run_id``) and, in each
    ``cell`` (e.g. student, method, task), only the runs of one configuration (``config_id``): the
    most recently recorded one. Runs of other configurations under the same labels are left out
    with a warning that counts them, never averaged in as if they were more seeds."""
    data = runs.copy()
    order = "time" if "time" in data.columns else None
    if order:
        data = data.sort_values(order, kind="stable")
    if "run_id" in data.columns:
        data = data.drop_duplicates("run_id", keep="last")
    if "config_id" in data.columns and data["config_id"].notna().any():
        latest = data.groupby(cell, dropna=False)["config_id"].transform("last")
        stale = data["config_id"].notna() & (data["config_id"] != latest)
        if stale.any():
            labels = sorted({" / ".join(map(str, key)) for key in data.loc[stale, cell].itertuples(index=False)})
            warnings.warn(f"left out {int(stale.sum())} run(s) of older configurations under the same labels "
                          f"({'; '.join(labels[:3])}{' ...' if len(labels) > 3 else ''}); give them another method "
                          "label to compare them", stacklevel=3)
            data = data[~stale]
    return data


def table(
    runs: pd.DataFrame,
    rows: str | Iterable[str] = ("student", "method"),
    columns: str = "task",
    value: str = "score",
    average: bool = True,
    scale: float = 100.0,
    digits: int = 1,
    row_order: Iterable[Any] | None = None,
    higher_is_better: bool = True,
) -> ResultsTable:
    """Paper-style table: mean ± std over seeds of ``value`` for each row x column.

    Only records that differ in nothing but the seed are pooled (see :func:`distinct_runs`).
    ``average`` adds an 'avg' column: per seed the mean over the tasks present, then mean ± std
    over seeds (only for rows that have every column, so averages are comparable).
    Rows with the same first key (the student) stay together, ordered by model size (largest
    first) when the runs carry a ``params`` column, else by name; ``row_order`` overrides both.
    ``higher_is_better=False`` bolds the smallest value (e.g. a fidelity distance).
    """
    rows = [rows] if isinstance(rows, str) else list(rows)
    if runs.empty:
        raise ValueError("no runs to tabulate: check the results folder and the filters")
    missing = [c for c in rows + [columns, value] if c not in runs.columns]
    if missing:
        raise ValueError(f"runs lack the column(s) {missing}; available: {sorted(runs.columns)}")
    data = distinct_runs(runs, rows + [columns])
    if "seed" not in data.columns:
        data["seed"] = 0
    grouped = data.groupby(rows + [columns])[value]
    mean = grouped.mean().unstack(columns)
    std = grouped.std(ddof=1).unstack(columns)
    count = grouped.count().unstack(columns)
    if average:
        complete = data.groupby(rows + ["seed"])[columns].nunique() == data[columns].nunique()
        per_seed = data.groupby(rows + ["seed"])[value].mean()[complete]
        avg = per_seed.groupby(level=list(range(len(rows))))
        mean["avg"], std["avg"], count["avg"] = avg.mean(), avg.std(ddof=1), avg.count()
    if row_order is not None:
        order = [r for r in row_order if r in mean.index]
        mean, std, count = mean.loc[order], std.loc[order], count.loc[order]
    else:
        keys = list(mean.index)
        if "params" in data.columns and data["params"].notna().any():
            # Group rows by the first key (the student) and put the largest student first.
            size = data.groupby(rows[0])["params"].mean()
            first = (lambda k: k[0]) if len(rows) > 1 else (lambda k: k)
            keys.sort(key=lambda k: (-size.get(first(k), 0), str(k)))
        else:
            keys.sort(key=str)
        mean, std, count = mean.loc[keys], std.loc[keys], count.loc[keys]
    teachers = pd.DataFrame()
    if "teacher" in data.columns:
        teachers = (data.groupby(columns)["teacher"].agg(lambda t: "; ".join(sorted({str(v) for v in t.dropna()})))
                    .rename_axis("column").reset_index())
    return ResultsTable(mean=mean, std=std.reindex_like(mean), count=count.reindex_like(mean).fillna(0), scale=scale,
                        digits=digits, higher_is_better=higher_is_better, teachers=teachers)


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


def group_conclusions(frame: pd.DataFrame, group: str, reference: str | None = None, scale: float = 100.0,
                      value: str = "score") -> list[str]:
    """Each variant of ``group`` against ``reference`` (default: the group's first variant)."""
    part = frame[frame["group"] == group]
    names = list(dict.fromkeys(part["variant"]))
    reference = reference or names[0]
    return [describe_comparison(compare(part, name, reference, value=value), scale) for name in names if name != reference]


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
