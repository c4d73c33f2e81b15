"""Summarise experiments/weighting/results.csv: mean ± std over seeds per task, budget, student and
method; paired differences against logit KD with 95% intervals (the sentences they support, per student,
task and teacher: the SST-2 teacher changed with the quick recipes, so runs name theirs); and, from the
runs' event logs, each CKD term's gradient norm on the student encoder before and after balancing.
Writes the tables and sentences as Markdown to ``summary.md`` beside this file (docs/weighting.md quotes it).

    python experiments/weighting/summarise.py [--runs runs/]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ckdlab.io import atomic_write_text
from ckdlab.studies.distillation_report import paired_differences

HERE = Path(__file__).parent
FIDELITY = ["fidelity.cos_gap_centred", "fidelity.wr_pair", "fidelity.wr_triplet", "fidelity.ltr_pair", "fidelity.ltr_triplet"]
KEYS = ["task", "train", "student", "teacher"]
LABELS = {"KD": "logit KD only", "CKD w=1": "CKD + KD, weights 1", "CKD official": "CKD + KD, the paper's weights",
          "CKD grad 0.25": "CKD + KD, balanced by gradient norm", "CKD loss 0.25": "CKD + KD, balanced by loss (default)"}


def load_runs() -> pd.DataFrame:
    runs = pd.read_csv(HERE / "results.csv")
    runs["train"] = runs["train"].fillna("{}") if "train" in runs else "{}"
    return runs.drop_duplicates(["task", "train", "seed", "student", "teacher", "method"], keep="last")


def score_table(runs: pd.DataFrame) -> pd.DataFrame:
    grouped = runs.groupby([*KEYS, "method"], sort=False)
    table = grouped["score"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    for column in FIDELITY:
        table[column.removeprefix("fidelity.")] = grouped[column].mean()
    return table.round(4)


def markdown_table(table: pd.DataFrame) -> list[str]:
    lines = ["| task | budget | student | teacher | weighting | score ×100 | centred \\|Δcos\\| | WR-pair | WR-triplet | "
             "LTR-pair | LTR-triplet | n |", "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (task, train, student, teacher, method), row in table.iterrows():
        budget = ", ".join(f"{k} {v}" for k, v in json.loads(train).items()) or "quick"
        score = f"{100 * row['mean']:.1f}" + (f" ± {100 * row['std']:.1f}" if row["n"] > 1 else "")
        lines.append(f"| {task} | {budget} | {student} | {teacher} | {LABELS.get(method, method)} | {score} | "
                     f"{row['cos_gap_centred']:.3f} | {row['wr_pair']:.4f} | {row['wr_triplet']:.3f} | {row['ltr_pair']:.4f} | "
                     f"{row['ltr_triplet']:.3f} | {int(row['n'])} |")
    return lines


def sentences(runs: pd.DataFrame) -> list[str]:
    """Paired over seeds against logit KD with the same task, budget, student and teacher."""
    lines = []
    for (task, train, student, teacher), part in runs.groupby(KEYS, sort=False):
        for method in [m for m in dict.fromkeys(part["method"]) if m != "KD"]:
            for value, higher in (("score", True), ("fidelity.cos_gap_centred", False)):
                table = paired_differences(part, method, "KD", value=value, higher_is_better=higher)
                for sentence in table.loc[table["task"] != "average", "sentence"] if not table.empty else []:
                    what = "score" if value == "score" else "centred |Δcos|"
                    lines.append(f"- [{teacher}, {what}] {sentence.replace(method, LABELS.get(method, method))}")
        if {"CKD loss 0.25", "CKD grad 0.25"} <= set(part["method"]):
            table = paired_differences(part, "CKD loss 0.25", "CKD grad 0.25")
            for sentence in table.loc[table["task"] != "average", "sentence"]:
                lines.append(f"- [{teacher}, score] {sentence}")
    return lines


def gradient_norms(runs_root: Path) -> pd.DataFrame:
    """The balanced runs' measured gradient norms (weights 1) and the same after their balanced weights."""
    rows = []
    for events in sorted(runs_root.glob("*/students/*/*/CKD_grad_0.25/seed*/events.jsonl")):
        for line in events.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") != "balanced_weights":
                continue
            parts = events.parts
            task, student, seed = parts[-5], parts[-4], parts[-2].split("-")[0]
            for term, measured in event["measured"].items():
                weight = event["weights"].get(term, 1.0)
                rows.append({"task": task, "student": student, "seed": seed, "term": term, "grad_weight_1": measured["grad"],
                             "weight": weight, "grad_balanced": weight * measured["grad"]})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs", help="the CKDLAB_RUNS folder the runs were written to")
    args = parser.parse_args()
    runs = load_runs()
    pd.set_option("display.width", 200)
    table = score_table(runs)
    print(table.to_string(), "\n")
    lines = ["<!-- written by experiments/weighting/summarise.py from results.csv -->", *markdown_table(table), "",
             *sentences(runs)]
    norms = gradient_norms(Path(args.runs))
    if not norms.empty:
        mean = norms.groupby(["task", "student", "term"])[["grad_weight_1", "weight", "grad_balanced"]].mean().round(4)
        print("\ngradient norm on the student encoder, mean over seeds (balance=grad, fraction 0.25)")
        print(mean.to_string())
        lines += ["", "| task | student | term | gradient norm, weights 1 | balanced weight | gradient norm, balanced |",
                  "|---|---|---|---:|---:|---:|"]
        lines += [f"| {t} | {s} | {term} | {r['grad_weight_1']:.4f} | {r['weight']:.3f} | {r['grad_balanced']:.4f} |"
                  for (t, s, term), r in mean.iterrows()]
    print("\n".join(lines[len(markdown_table(table)) + 2:]))
    atomic_write_text(HERE / "summary.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
