"""CKD's weighting schemes against logit KD, with notebook 03's quick-profile settings.

The evidence behind ``DistillConfig.balance`` (issue "CKD that works"). Each run is
``ckdlab.api.distill`` with the quick profile's settings for the task and student, so a run here is
the same as notebook 03's for the same options; rows are appended to ``results.csv`` beside this file
(one row per run: dev score of the best checkpoint, the weights the run used, its relation fidelity).

    python experiments/weighting/compare.py --tasks sst2 --seeds 0,1,2 --students narrow,subset \
        --methods "KD,CKD grad 0.25,CKD loss 0.25,CKD official,CKD w=1"
    python experiments/weighting/compare.py --tasks mrpc --students subset --train train_limit=3668 --train epochs=3
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
import yaml

from ckdlab import api
from ckdlab.io import atomic_write_frame

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
    parser.add_argument("--student-dir", action="append", default=[],
                        help="name=folder: a saved student (e.g. after general distillation) instead of the spec")
    parser.add_argument("--train", action="append", default=[], help="key=value training option over the profile's")
    args = parser.parse_args()
    students = {**STUDENTS, **dict(item.split("=", 1) for item in args.student_dir)}
    train = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.train)}
    torch.set_num_threads(args.threads)
    for task in args.tasks.split(","):
        for seed in map(int, args.seeds.split(",")):
            for name in args.students.split(","):
                for label in args.methods.split(","):
                    start = time.time()
                    row = api.distill(task, student=students[name], student_name=name, method=label, profile="quick",
                                      seed=seed, progress=False, **train, **METHODS[label])
                    record = {"task": task, "seed": seed, "student": name, "method": label, "train": json.dumps(train),
                              "student_source": Path(students[name]).name if name in dict(
                                  item.split("=", 1) for item in args.student_dir) else students[name],
                              "teacher": Path(str(row["teacher"])).parent.name, "score": row["score"],
                              "wall_s": round(time.time() - start, 1), "weights": json.dumps(row["weights"]),
                              **{k: v for k, v in row["metrics"].items() if k.startswith("fidelity")}}
                    # read-concat-write: rows may add columns (train, student_source) the older rows lack
                    old = pd.read_csv(OUT) if OUT.exists() else pd.DataFrame()
                    atomic_write_frame(OUT, pd.concat([old, pd.DataFrame([record])], ignore_index=True))
                    print(record, flush=True)


if __name__ == "__main__":
    main()
