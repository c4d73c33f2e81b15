"""Run records and paper-style tables.

Every fine-tuning, distillation and evaluation run appends one record under
``results/records/<run_id>.json``: one file per run, written atomically (temp file + rename),
so concurrent runs and interruptions never leave a half-written or interleaved registry.
A record holds the config, git commit, seed, task, model sizes (parameters, measured CPU
latency), metrics and wall time. ``load_runs`` reads them into a tidy DataFrame and
``table`` turns that into a paper table: mean ± std over seeds, best per column in bold,
an average column, rows grouped by student size; ``to_markdown`` / ``to_latex`` render it.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ckdlab.io import atomic_write_json

DEFAULT_RESULTS_DIR = Path("results")
RECORD_FIELDS = ("run_id", "kind", "profile", "task", "model", "student", "method", "seed", "score", "wall_time_s")


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The current commit of the checkout (``+dirty`` when there are uncommitted changes)."""
    cwd = cwd or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def record_run(record: dict[str, Any], results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR) -> Path:
    """Write one run record atomically and return its path. Adds run_id, time and commit."""
    record = dict(record)
    for key in ("kind", "task", "metrics"):
        if key not in record:
            raise ValueError(f"a run record needs '{key}'")
    record.setdefault("run_id", f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}")
    record.setdefault("time", _dt.datetime.now().isoformat(timespec="seconds"))
    record.setdefault("git_commit", git_commit())
    return atomic_write_json(Path(results_dir) / "records" / f"{record['run_id']}.json", record)


def load_runs(results_dir: str | os.PathLike = DEFAULT_RESULTS_DIR, **filters: Any) -> pd.DataFrame:
    """All records as a DataFrame; metrics become ``metric.<name>`` columns. Filters are equality tests."""
    folder = Path(results_dir) / "records"
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        record = json.loads(path.read_text(encoding="utf-8"))
        row = {k: v for k, v in record.items() if not isinstance(v, dict)}
        row.update({f"metric.{k}": v for k, v in (record.get("metrics") or {}).items() if isinstance(v, (int, float))})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for key, value in filters.items():
        if key not in frame.columns:
            return frame.iloc[0:0]
        values = value if isinstance(value, (list, tuple, set)) else [value]
        frame = frame[frame[key].isin(values)]
    return frame.reset_index(drop=True)


@dataclass
class ResultsTable:
    """Mean, std and count per (row, column); render with ``to_markdown`` / ``to_latex``."""

    mean: pd.DataFrame
    std: pd.DataFrame
    count: pd.DataFrame
    scale: float = 100.0
    digits: int = 1
    higher_is_better: bool = True

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

    def to_markdown(self) -> str:
        frame = self.formatted()
        index_names = [str(n) for n in (frame.index.names if frame.index.names[0] else ["row"])]
        header = index_names + [str(c) for c in frame.columns]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(index_names) + ["---:"] * len(frame.columns)) + "|"]
        for idx, row in frame.iterrows():
            keys = list(idx) if isinstance(idx, tuple) else [idx]
            lines.append("| " + " | ".join([str(k) for k in keys] + list(row.values)) + " |")
        return "\n".join(lines)

    def to_latex(self) -> str:
        frame = self.formatted(bold=("\\textbf{", "}")).map(lambda text: text.replace("±", "$\\pm$"))
        return frame.to_latex(escape=False)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def table(
    runs: pd.DataFrame,
    rows: str | Iterable[str] = ("student", "method"),
    columns: str = "task",
    value: str = "score",
    average: bool = True,
    scale: float = 100.0,
    digits: int = 1,
    row_order: Iterable[Any] | None = None,
) -> ResultsTable:
    """Paper-style table: mean ± std over seeds of ``value`` for each row x column.

    ``average`` adds an 'avg' column: per seed the mean over the tasks present, then mean ± std
    over seeds (only for rows that have every column, so averages are comparable).
    Rows with the same first key (the student) stay together, ordered by model size (largest
    first) when the runs carry a ``params`` column, else by name; ``row_order`` overrides both.
    """
    rows = [rows] if isinstance(rows, str) else list(rows)
    if runs.empty:
        raise ValueError("no runs to tabulate: check the results folder and the filters")
    missing = [c for c in rows + [columns, value] if c not in runs.columns]
    if missing:
        raise ValueError(f"runs lack the column(s) {missing}; available: {sorted(runs.columns)}")
    data = runs.copy()
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
    return ResultsTable(mean=mean, std=std.reindex_like(mean), count=count.reindex_like(mean).fillna(0), scale=scale, digits=digits)
