"""Does a student learn a task at quick sizes? KD and CKD + KD per student and seed (default: seed 0).

Prints one JSON line per run (wall time, dev score) and appends it to ``results.csv`` beside this file;
notebook 03's quick ``table_tasks`` were chosen from these rows (a task where every run stays at the
trivial baseline would only order noise). Run from the checkout, e.g.::

    python experiments/quick_tasks/probe.py mrpc rte
    python experiments/quick_tasks/probe.py mrpc --teacher mrpc=runs/quick/teachers/mrpc-b34438eb/best
    python experiments/quick_tasks/probe.py mrpc --train train_limit=3668 --train epochs=3   # a larger budget

Without ``--teacher`` the profile's teacher is used (fine-tuned first when absent, as notebook 01 does).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import yaml

from ckdlab import api
from ckdlab.io import atomic_write_frame
from ckdlab.profiles import load_profile, profile_config

RESULTS = Path(__file__).with_name("results.csv")
METHODS = {"CKD + KD": "ckd+kd", "logit KD": "kd"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="+")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--students", default=None, help="comma-separated student names (default: the profile's)")
    parser.add_argument("--teacher", action="append", default=[], help="task=path of a fine-tuned teacher")
    parser.add_argument("--train", action="append", default=[], help="key=value training option over the profile's")
    parser.add_argument("--out", default="runs/probe", help="folder for the runs (not recorded in results/)")
    args = parser.parse_args()
    teachers = dict(item.split("=", 1) for item in args.teacher)
    train = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.train)}
    students = load_profile(args.profile)["distill"]["students"]
    if args.students:
        students = {name: students[name] for name in args.students.split(",")}
    for task in args.tasks:
        teacher = teachers.get(task) or str(api.ensure_teacher(task, args.profile))
        budget = profile_config(args.profile, "distill", task).replace(**train)
        for seed, (student_name, spec) in ((seed, item) for seed in args.seed for item in students.items()):
            for method, objective in METHODS.items():
                start = time.perf_counter()
                record = api.distill(task, student=spec, objective=objective, profile=args.profile, method=method,
                                     student_name=student_name, teacher=teacher, seed=seed, resume=False,
                                     record=False, progress=False, **train,
                                     out_dir=f"{args.out}/{task}-{student_name}-{objective}-s{seed}")
                row = {"task": task, "student": student_name, "method": method, "seed": seed,
                       "train_limit": budget.train_limit, "epochs": budget.epochs,
                       "score": round(record["score"], 4),
                       "centred_cos_gap": (record.get("metrics") or {}).get("fidelity.cos_gap_centred"), "wall_s": round(time.perf_counter() - start, 1),
                       "teacher": teacher}
                print(json.dumps(row), flush=True)
                old = pd.read_csv(RESULTS) if RESULTS.exists() else pd.DataFrame()
                atomic_write_frame(RESULTS, pd.concat([old, pd.DataFrame([row])], ignore_index=True))


if __name__ == "__main__":
    main()
