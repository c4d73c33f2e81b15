"""CoDIR + KD's options on dev sets (quick profile), against logit KD with the same training budget.

Every configuration runs through ``ckdlab.api.distill`` with the quick profile's settings (the students of
notebook 03, their learning rates and budgets), so a finished run is reused, and the runs land in the
results registry. Configurations are interleaved per (task, seed, student), so their wall times are
measured side by side in one process under the same machine load.

    export CKDLAB_RUNS=$PWD/runs CKDLAB_RESULTS=$PWD/results
    python experiments/codir/options_sweep.py --tasks sst2 --seeds 0,1 \\
        --configs "logit KD,KD mix,CoDIR w=0.003,CoDIR w=0.03,CoDIR w=0.1,CoDIR w=1"
    python experiments/codir/options_sweep.py --summary          # the table of everything run so far

Configurations (``--configs``): ``logit KD`` (notebook 03's row: KD weight 1, no CE), ``KD mix`` (CE and KD at
0.5 each: CoDIR's own mix without the contrastive term), ``CoDIR w=<weight>`` (that mix plus the CoDIR term,
[CLS] summaries, K = 100), and variants of it: ``... mean`` (masked-mean summaries), ``... K=<k>``,
``... sym`` (both directions, as the official criterion).
"""
from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ckdlab import api
from ckdlab.profiles import load_profile

PROFILE = "quick"
OUT = "codir_options.csv"
PATTERN = re.compile(r"^CoDIR w=(?P<weight>[0-9.e-]+)(?P<rest>( (mean|sym|K=\d+))*)$")


def configuration(label: str) -> dict[str, Any]:
    """``distill`` options of a configuration label (see the module docstring)."""
    if label == "logit KD":
        return {"objective": "kd"}
    if label == "KD mix":
        return {"objective": "kd", "weights": {"ce": 0.5, "kd": 0.5}}
    match = PATTERN.match(label)
    if not match:
        raise ValueError(f"unknown configuration {label!r}: use 'logit KD', 'KD mix' or 'CoDIR w=<weight>[ mean][ K=<k>][ sym]'")
    options: dict[str, Any] = {}
    for part in match["rest"].split():
        if part == "mean":
            options["pooling"] = "mean"
        elif part == "sym":
            options["symmetric"] = True
        else:
            options["negatives"] = int(part.split("=")[1])
    return {"objective": "codir+kd", "weights": {"ce": 0.5, "kd": 0.5, "codir": float(match["weight"])},
            "objective_options": options}


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Dev score x 100 as mean ± std over seeds, and the mean training wall time relative to logit KD."""
    frame = frame.drop_duplicates(["task", "student", "config", "seed"], keep="last")
    relative = frame.merge(frame[frame["config"] == "logit KD"][["task", "student", "seed", "wall_time_s"]],
                           on=["task", "student", "seed"], suffixes=("", "_kd"), how="left")
    relative["time_vs_kd"] = relative["wall_time_s"] / relative["wall_time_s_kd"]
    grouped = relative.groupby(["task", "student", "config"], sort=False)
    out = grouped.agg(mean=("score", "mean"), std=("score", "std"), n=("score", "size"),
                      time_vs_kd=("time_vs_kd", "mean"), wall_s=("wall_time_s", "mean"))
    out = out.sort_index(level=["task", "student"], sort_remaining=False)  # configs stay in run order
    out["mean"] *= 100
    out["std"] *= 100
    return out.round({"mean": 1, "std": 1, "time_vs_kd": 2, "wall_s": 0})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--students", default="narrow,subset", help="names from the profile's distill.students")
    parser.add_argument("--configs", default="logit KD,KD mix,CoDIR w=0.1")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--summary", action="store_true", help="only print the table of the runs so far")
    args = parser.parse_args()
    out = api.results_dir() / PROFILE / OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.summary:
        if args.threads:
            torch.set_num_threads(args.threads)
        students = load_profile(PROFILE)["distill"]["students"]
        labels = [c.strip() for c in args.configs.split(",") if c.strip()]
        configs = {label: configuration(label) for label in labels}
        for task in args.tasks.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for student in args.students.split(","):
                    for label, options in configs.items():
                        start = time.perf_counter()
                        row = api.distill(task, student=students[student], student_name=student, method=label,
                                          profile=PROFILE, seed=seed, **options)
                        result = {"task": task, "student": student, "config": label, "seed": seed, "score": row["score"],
                                  "wall_time_s": row["wall_time_s"], "elapsed_s": time.perf_counter() - start,
                                  "run_id": row["run_id"], "pid": os.getpid()}
                        pd.DataFrame([result]).to_csv(out, mode="a", header=not Path(out).exists(), index=False)
                        print(result, flush=True)
    if Path(out).exists():
        with pd.option_context("display.width", 200, "display.max_rows", 500):
            print(summary(pd.read_csv(out)).to_string())


if __name__ == "__main__":
    main()
