"""CKD's per-step overhead relative to logit KD, at quick-profile shapes, measured side by side.

For each task and student, two distillers share one cached teacher and the same length-grouped
batches (the quick profile's settings); the script times optimisation steps (student forward +
loss + backward + AdamW) of ``kd`` and of ``ckd+kd`` in alternation (so drift in machine load
hits both alike) over two whole epochs, and prints the mean step time of each and the overhead
ratio per epoch: in epoch 1 CKD computes the teacher's Grams, from epoch 2 on it reuses them
(``TeacherGramMemo``); the quick profile trains 2-3 epochs. Target: CKD + KD within 15 % of
logit KD.

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
    rows = []
    for task in args.tasks.split(","):
        teacher, tokenizer = load_backbone(profile["teacher"], num_labels=load_task(task, "dev", limit=1).features["label"].num_classes if task != "stsb" else 1)
        config = profile_config(profile, "distill", task, train_limit=args.examples, progress=False, log_every=10**9)
        train = load_task(task, "train", limit=args.examples, seed=0)
        dev = load_task(task, "dev", limit=8)
        for student_name, spec in profile["distill"]["students"].items():
            cache = None
            distillers = {}
            # ckd+kd first: its cache holds the mapped hidden states as well as the logits, so the kd
            # distiller can share it (a logits-only cache would make ckd+kd run the teacher live).
            for objective in ("ckd+kd", "kd"):
                student = build_student(teacher, spec, num_labels=teacher.config.num_labels, seed=0)
                d = Distiller(teacher, student, tokenizer, task, objective=objective, config=config, train_dataset=train,
                              dev_datasets={"dev": dev}, teacher_cache=cache, temperature=2.0)
                d.setup()
                cache = d.teacher_cache
                assert cache is not None and cache.has_hidden, "the teacher cache must hold hidden states"
                distillers[objective] = d
            # Whole epochs: length-grouped batches run from long to short, so a few steps would
            # over-weight the longest (CKD's triplets grow as L^3, the model as L).
            steps = distillers["kd"].steps_per_epoch
            overheads, means = [], {}
            for epoch in (1, 2):
                times = {k: [] for k in distillers}
                for _ in range(steps):  # alternate so load drift hits both alike
                    for objective, d in distillers.items():
                        times[objective] += timed_steps(d, 1)
                means[epoch] = {k: statistics.mean(v) for k, v in times.items()}
                overheads.append(means[epoch]["ckd+kd"] / means[epoch]["kd"] - 1)
            lengths = [len(x) for x in distillers["kd"].train_tokenized["input_ids"]]
            kd = statistics.mean(means[e]["kd"] for e in means)
            rows.append((task, student_name, spec, config.batch_size, statistics.mean(lengths), max(lengths), kd,
                         means[1]["ckd+kd"], means[2]["ckd+kd"], *overheads))
    print(f"\nthreads={torch.get_num_threads()}  {args.examples} examples per task, mean over each epoch, teacher outputs cached\n")
    header = (f"{'task':6} {'student':8} {'spec':26} {'B':>3} {'mean L':>6} {'max L':>5} {'kd s/step':>10} "
              f"{'ckd+kd ep1':>11} {'ckd+kd ep2':>11} {'overhead ep1':>13} {'overhead ep2':>13}")
    print(header)
    print("-" * len(header))
    for task, name, spec, batch, mean_len, max_len, kd, ckd1, ckd2, over1, over2 in rows:
        print(f"{task:6} {name:8} {spec:26} {batch:3d} {mean_len:6.1f} {max_len:5d} {kd:10.3f} {ckd1:11.3f} {ckd2:11.3f} "
              f"{over1:+13.1%} {over2:+13.1%}")

if __name__ == "__main__":
    main()
