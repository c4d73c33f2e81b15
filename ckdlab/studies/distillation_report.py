"""Notebook 03's numbers and sentences: paired differences between methods with intervals, per
student and task, and the sentences that order methods (computed from the intervals, never typed).
"""
from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from ckdlab.results import compare, describe_comparison

AVERAGE = "average"


def paired_differences(runs: pd.DataFrame, a: str, b: str, value: str = "score", scale: float = 100.0,
                       higher_is_better: bool = True) -> pd.DataFrame:
    """``a − b`` per student and task (and over the tasks each seed has), paired over shared seeds:
    the mean difference, its 95% t-interval half width, n, whether the interval excludes 0, and the
    sentence :func:`ckdlab.results.describe_comparison` writes. ``value`` may be a fidelity column
    (``metric.fidelity.cos_gap_centred``), where lower is better: pass ``higher_is_better=False`` so
    the sentence reads "closer"."""
    frame = runs.rename(columns={"method": "variant"})
    frame = frame[frame["variant"].isin([a, b]) & frame[value].notna()].copy()
    sign = 1.0 if higher_is_better else -1.0
    # Compared as "higher is better" throughout, so "a beats b" always means a is the better one.
    frame[value] = sign * frame[value].astype(float)
    rows = []
    for student, part in frame.groupby("student", sort=False):
        tasks = [t for t in dict.fromkeys(part["task"]) if set(part.loc[part["task"] == t, "variant"]) >= {a, b}]
        for task in [*tasks, AVERAGE]:
            chosen = part[part["task"].isin(tasks)] if task == AVERAGE else part[part["task"] == task]
            if chosen.empty:
                continue
            result = compare(chosen, a, b, value=value)
            sentence = describe_comparison(result, scale)
            if not higher_is_better:
                sentence = sentence.replace(" beats ", " is closer to the teacher than ")
            rows.append({"student": student, "task": task, "a": a, "b": b, "diff": sign * result["diff"] * scale,
                         "ci95": result["ci95"] * scale, "n": result["n"], "distinguishable": result["distinguishable"],
                         "sentence": f"{student}, {task}: {sentence}"})
    return pd.DataFrame(rows)


def verdicts(runs: pd.DataFrame, pairs: Iterable[tuple[str, str]], value: str = "score", scale: float = 100.0,
             higher_is_better: bool = True) -> list[str]:
    """One sentence per (student, method pair) over the tasks' average, and one per task where the
    interval excludes 0: what the table supports, and nothing more."""
    lines = []
    for a, b in pairs:
        table = paired_differences(runs, a, b, value, scale, higher_is_better)
        if table.empty:
            continue
        for _, row in table.iterrows():
            if row["task"] == AVERAGE or row["distinguishable"]:
                lines.append(row["sentence"])
    return lines
