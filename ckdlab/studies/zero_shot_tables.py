"""Notebook 04's tables and conclusions: zero-shot accuracy per language, retention of the teacher,
and Soltan et al.'s claims checked against the numbers (sentences computed, never typed)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import pandas as pd

SETTINGS = ("a", "b", "c", "d")
SETTING_LABELS = MappingProxyType({
    "teacher": "teacher",
    "a": "(a) pre-training KD",
    "b": "(b) fine-tuning KD",
    "c": "(c) both",
    "d": "(d) no KD",
})


def average_column(source_language: str = "en") -> str:
    return f"avg (non-{source_language})"


def zero_shot_table(scores: Mapping[str, Mapping[str, float]], source_language: str = "en") -> pd.DataFrame:
    """Rows = settings, columns = languages (first row's order) + the average over non-source languages.

    ``avg (non-en) = (1/|T|) sum_{l in T} acc_l`` with T the languages other than ``source_language``
    (the 14 non-English XNLI languages when all 15 are evaluated).
    """
    if not scores:
        raise ValueError("scores is empty; pass {setting: {language: accuracy}}")
    rows = list(scores)
    languages = list(next(iter(scores.values())))
    for row in rows:
        if list(scores[row]) != languages:
            raise ValueError(f"row {row!r} has languages {list(scores[row])}, expected {languages}; evaluate every setting on the same languages")
    targets = [code for code in languages if code != source_language]
    if not targets:
        raise ValueError(f"no language other than the source {source_language!r}; a zero-shot average needs at least one target language")
    frame = pd.DataFrame([[float(scores[row][code]) for code in languages] for row in rows], index=rows, columns=languages)
    frame[average_column(source_language)] = frame[targets].mean(axis=1)
    frame.index.name = "setting"
    return frame


def retention_table(table: pd.DataFrame, teacher_row: str = "teacher", source_language: str = "en") -> pd.DataFrame:
    """Each student's retention of the teacher per language, ``acc_student(l) / acc_teacher(l)``.

    The average column is the mean of the per-language retentions over the non-source languages
    (not the ratio of the averages), so it weighs every target language alike. Where the teacher
    scores 0 the retention is NaN (and left out of the average).
    """
    if teacher_row not in table.index:
        raise ValueError(f"table has no {teacher_row!r} row (rows: {list(table.index)}); pass teacher_row=")
    average = average_column(source_language)
    languages = [c for c in table.columns if c != average]
    # A language where the teacher scores 0 has no defined retention: NaN there, not inf.
    teacher = table.loc[teacher_row, languages].where(lambda scores: scores > 0)
    retention = table.drop(index=teacher_row)[languages].div(teacher, axis=1)
    retention[average] = retention[[c for c in languages if c != source_language]].mean(axis=1)
    return retention


def best_setting(table: pd.DataFrame, source_language: str = "en", exclude: Sequence[str] = ("teacher",)) -> str:
    """The row with the highest non-source average (ties: the first in table order)."""
    average = table.drop(index=[r for r in exclude if r in table.index])[average_column(source_language)]
    if average.empty:
        raise ValueError("the table has no student rows")
    return str(average.idxmax())


def findings(table: pd.DataFrame, source_language: str = "en", tolerance: float = 0.0) -> pd.DataFrame:
    """Soltan et al.'s claims checked against ``table`` (rows labelled as in :data:`SETTING_LABELS`).

    Each claim compares non-source averages; it "holds" when the difference exceeds ``tolerance``
    in the claimed direction. Claims whose rows are missing are left out.
    """
    average = table[average_column(source_language)]
    label = SETTING_LABELS
    claims = [
        ("pre-training KD beats fine-tuning KD", label["a"], label["b"]),
        ("pre-training KD beats no KD", label["a"], label["d"]),
        ("fine-tuning KD hurts zero-shot (no KD beats it)", label["d"], label["b"]),
        ("both stages beat fine-tuning KD alone", label["c"], label["b"]),
    ]
    rows = []
    for claim, better, worse in claims:
        if better in average.index and worse in average.index:
            difference = float(average[better] - average[worse])
            rows.append({"claim": claim, "better": better, "worse": worse, "difference": difference, "holds": difference > tolerance})
    return pd.DataFrame(rows)


def describe_findings(table: pd.DataFrame, retention: pd.DataFrame, tolerance: float = 1.0, source_language: str = "en") -> list[str]:
    """The notebook's conclusions as sentences, from ``table`` and ``retention`` in accuracy points
    (x100): the best student, each claim as reproduced / not reproduced / not resolved (a difference
    within ``tolerance`` points), and the weakest retention."""
    average = average_column(source_language)
    best = best_setting(table, source_language)
    lines = [f"Best student on the non-English average: {best} ({table.loc[best, average]:.1f}% vs the teacher's "
             f"{table.loc['teacher', average]:.1f}%, retention {retention.loc[best, average]:.3f})."]
    for claim in findings(table, source_language).itertuples():
        if abs(claim.difference) <= tolerance:
            verdict = f"not resolved: {claim.better} and {claim.worse} differ by {claim.difference:+.1f} points (within ±{tolerance})"
        elif claim.holds:
            verdict = f"reproduced: {claim.better} beats {claim.worse} by {claim.difference:.1f} points"
        else:
            verdict = f"not reproduced: {claim.worse} beats {claim.better} by {-claim.difference:.1f} points"
        lines.append(f"- '{claim.claim}': {verdict}.")
    if len(retention):
        weakest = retention[average].idxmin()
        worst = retention.loc[weakest].drop(labels=[average, source_language], errors="ignore").idxmin()
        lines.append(f"Lowest retention: {weakest}, on '{worst}' ({retention.loc[weakest, worst]:.3f}).")
    return lines
