"""Summarise experiments/weighting/results.csv: mean ± std over seeds per task, student and method;
paired differences against logit KD with 95% intervals (the sentences they support, per student and
teacher: the SST-2 teacher changed with the quick recipes, so runs name theirs); and, from the
runs' event logs, each CKD term's gradient norm on the student encoder before and after balancing.

    python experiments/weighting/summarise.py [--runs runs/]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ckdlab.studies.distillation_report import paired_differences

HERE = Path(__file__).parent
FIDELITY = ["fidelity.cos_gap_centred", "fidelity.wr_pair", "fidelity.wr_triplet", "fidelity.ltr_pair", "fidelity.ltr_triplet"]


def score_table(runs: pd.DataFrame) -> pd.DataFrame:
    grouped = runs.groupby(["task", "student", "teacher", "method"], sort=False)
    table = grouped["score"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    for column in FIDELITY:
        table[column.removeprefix("fidelity.")] = grouped[column].mean()
    return table.round(4)


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
    runs = pd.read_csv(HERE / "results.csv").drop_duplicates(["task", "seed", "student", "teacher", "method"], keep="last")
    pd.set_option("display.width", 200)
    print(score_table(runs).to_string(), "\n")
    # Paired over seeds against logit KD with the same student and teacher; lower distances are better.
    for (student, teacher), part in runs.groupby(["student", "teacher"], sort=False):
        for method in [m for m in dict.fromkeys(part["method"]) if m != "KD"]:
            for value, higher in (("score", True), ("fidelity.cos_gap_centred", False)):
                table = paired_differences(part, method, "KD", value=value, higher_is_better=higher)
                for sentence in table.loc[table["task"] != "average", "sentence"] if not table.empty else []:
                    print(f"[teacher {teacher}, {value}] {sentence}")
        if {"CKD loss 0.25", "CKD grad 0.25"} <= set(part["method"]):
            table = paired_differences(part, "CKD loss 0.25", "CKD grad 0.25")
            for sentence in table.loc[table["task"] != "average", "sentence"]:
                print(f"[teacher {teacher}, score] {sentence}")
    norms = gradient_norms(Path(args.runs))
    if not norms.empty:
        print("\ngradient norm on the student encoder, mean over seeds (balance=grad, fraction 0.25)")
        print(norms.groupby(["task", "student", "term"])[["grad_weight_1", "weight", "grad_balanced"]].mean().round(4).to_string())


if __name__ == "__main__":
    main()
