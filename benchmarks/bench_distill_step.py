"""Per-step overhead of CKD + KD and CoDIR + KD relative to logit KD, at quick-profile shapes, side by side.

For each task and student, three distillers share one cached teacher and the same length-grouped
batches (the quick profile's settings); the script times optimisation steps (student forward +
loss + backward + AdamW, and for CoDIR the memory-bank update) of ``kd``, ``ckd+kd`` and
``codir+kd`` in alternation (so drift in machine load hits all alike) over two whole epochs, and
prints the mean step time of each and the overhead ratio per epoch: in epoch 1 CKD computes the
teacher's Grams, from epoch 2 on it reuses them (``TeacherGramMemo``); the quick profile trains
2-3 epochs. CoDIR + KD runs with the weights and options of the profile's notebook-03 row (CE and KD
mixed 0.5 / 0.5, InfoNCE against K memory-bank negatives); its cost is the same in every epoch.
Target: CKD + KD within 15 % of logit KD.

    python benchmarks/bench_distill_step.py                  # SST-2 and MRPC, both quick students
    python benchmarks/bench_distill_step.py --tasks sst2 --examples 256 --threads 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ckdlab.data import load_task  # noqa: E402
from ckdlab.profiles import load_profile, profile_config  # noqa: E402
from ckdlab.engine.distill import Distiller  # noqa: E402
from ckdlab.models import build_student, load_backbone  # noqa: E402


OBJECTIVES = ("ckd+kd", "kd", "codir+kd")


def timed_steps(distiller: Distiller, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        distiller.step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2,mrpc")
    parser.add_argument("--examples", type=int, default=1024, help="training examples per task (one epoch)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    profile = load_profile("quick")
    # Notebook 03's CoDIR row of the profile: the same weights and options as the runs it times.
    codir_row = {k: v for k, v in profile["distill"]["methods"]["CoDIR + KD"].items() if k != "tasks"}
    assert codir_row["objective"] == "codir+kd", codir_row
    rows = []
    for task in args.tasks.split(","):
        teacher, tokenizer = load_backbone(profile["teacher"], num_labels=load_task(task, "dev", limit=1).features["label"].num_classes if task != "stsb" else 1)
        config = profile_config(profile, "distill", task, train_limit=args.examples, progress=False, log_every=10**9)
        train = load_task(task, "train", limit=args.examples, seed=0)
        dev = load_task(task, "dev", limit=8)
        for student_name, spec in profile["distill"]["students"].items():
            cache = None
            distillers = {}
            # ckd+kd first: its cache holds the mapped hidden states as well as the logits, so the other
            # distillers can share it (a logits-only cache would make ckd+kd run the teacher live).
            for objective in OBJECTIVES:
                student = build_student(teacher, spec, num_labels=teacher.config.num_labels, seed=0)
                options = {k: v for k, v in codir_row.items() if k != "objective"} if objective == "codir+kd" else {}
                d = Distiller(teacher, student, tokenizer, task, objective=objective, config=config, train_dataset=train,
                              dev_datasets={"dev": dev}, teacher_cache=cache, temperature=2.0, **options)
                d.setup()
                cache = d.teacher_cache
                assert cache is not None and cache.has_hidden, "the teacher cache must hold hidden states"
                distillers[objective] = d
            # Whole epochs: length-grouped batches run from long to short, so a few steps would
            # over-weight the longest (CKD's triplets grow as L^3, the model as L).
            steps = distillers["kd"].steps_per_epoch
            means = {}
            for epoch in (1, 2):
                times = {k: [] for k in distillers}
                for _ in range(steps):  # alternate so load drift hits all alike
                    for objective, d in distillers.items():
                        times[objective] += timed_steps(d, 1)
                means[epoch] = {k: statistics.mean(v) for k, v in times.items()}
            lengths = [len(x) for x in distillers["kd"].train_tokenized["input_ids"]]
            kd = statistics.mean(means[e]["kd"] for e in means)
            per_epoch = [means[e][o] for o in ("ckd+kd", "codir+kd") for e in (1, 2)]
            overheads = [means[e][o] / means[e]["kd"] - 1 for o in ("ckd+kd", "codir+kd") for e in (1, 2)]
            rows.append((task, student_name, spec, config.batch_size, statistics.mean(lengths), max(lengths), kd,
                         *per_epoch, *overheads))
    print(f"\nthreads={torch.get_num_threads()}  {args.examples} examples per task, mean over each epoch, teacher outputs cached\n")
    header = (f"{'task':6} {'student':8} {'spec':26} {'B':>3} {'mean L':>6} {'max L':>5} {'kd s/step':>9} "
              f"{'ckd ep1':>8} {'ckd ep2':>8} {'codir ep1':>9} {'codir ep2':>9} "
              f"{'ckd +% ep1':>10} {'ckd +% ep2':>10} {'codir +% ep1':>12} {'codir +% ep2':>12}")
    print(header)
    print("-" * len(header))
    for task, name, spec, batch, mean_len, max_len, kd, c1, c2, d1, d2, oc1, oc2, od1, od2 in rows:
        print(f"{task:6} {name:8} {spec:26} {batch:3d} {mean_len:6.1f} {max_len:5d} {kd:9.3f} {c1:8.3f} {c2:8.3f} "
              f"{d1:9.3f} {d2:9.3f} {oc1:+10.1%} {oc2:+10.1%} {od1:+12.1%} {od2:+12.1%}")
    print("\nckd = ckd+kd, codir = codir+kd with the profile's options:", codir_row)


if __name__ == "__main__":
    main()
