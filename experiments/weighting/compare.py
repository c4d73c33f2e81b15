"""CKD's weighting schemes against logit KD, with notebook 03's quick-profile settings.

The evidence behind ``DistillConfig.balance`` (issue "CKD that works"). Each run is
``ckdlab.api.distill`` with the quick profile's settings for the task and student, so a run here is
the same as notebook 03's for the same options; rows are appended to ``results.csv`` beside this file
(one row per run: dev score of the best checkpoint, the weights the run used, its relation fidelity).

    python experiments/weighting/compare.py --tasks sst2 --seeds 0,1,2 --students narrow,subset \
        --methods "KD,CKD grad 0.25,CKD loss 0.25,CKD official,CKD w=1"
    python experiments/weighting/summarise.py          # mean ± std over seeds, gradient norms

Set CKDLAB_RUNS / CKDLAB_RESULTS to keep these runs apart from the notebooks'.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from ckdlab import api

METHODS = {
    "KD": {"objective": "kd"},
    "CKD w=1": {"objective": "ckd+kd", "weights": {"wr_pair": 1.0, "wr_triplet": 1.0, "ltr_pair": 1.0, "ltr_triplet": 1.0},
                "balance": "none"},
    "CKD official": {"objective": "ckd+kd", "weights": "official", "balance": "none"},
    "CKD grad 0.25": {"objective": "ckd+kd", "balance": "grad", "balance_fraction": 0.25},
    "CKD grad 1": {"objective": "ckd+kd", "balance": "grad", "balance_fraction": 1.0},
    "CKD loss 0.25": {"objective": "ckd+kd", "balance": "loss", "balance_fraction": 0.25},
    "CKD grad 0.25 T0.1": {"objective": "ckd+kd", "balance": "grad", "balance_fraction": 0.25,
                           "objective_options": {"pair_temperature": 0.1}},
    "CKD grad 0.25 centred": {"objective": "ckd+kd", "balance": "grad", "balance_fraction": 0.25,
                              "objective_options": {"centred": True}},
}
STUDENTS = {"narrow": "config:L4-H256-A4-I1024", "subset": "layers:0,2,4"}
OUT = Path(__file__).with_name("results.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="sst2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--students", default="narrow,subset")
    parser.add_argument("--methods", default="KD,CKD grad 0.25,CKD loss 0.25,CKD official")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for task in args.tasks.split(","):
        for seed in map(int, args.seeds.split(",")):
            for name in args.students.split(","):
                for label in args.methods.split(","):
                    start = time.time()
                    row = api.distill(task, student=STUDENTS[name], student_name=name, method=label, profile="quick",
                                      seed=seed, progress=False, **METHODS[label])
                    record = {"task": task, "seed": seed, "student": name, "method": label,
                              "teacher": Path(str(row["teacher"])).parent.name, "score": row["score"],
                              "wall_s": round(time.time() - start, 1), "weights": json.dumps(row["weights"]),
                              **{k: v for k, v in row["metrics"].items() if k.startswith("fidelity")}}
                    pd.DataFrame([record]).to_csv(OUT, mode="a", header=not OUT.exists(), index=False)
                    print(record, flush=True)


if __name__ == "__main__":
    main()
