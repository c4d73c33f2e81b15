"""CKD's per-step overhead relative to logit KD, at quick-profile shapes, measured side by side.

For each task and student, two distillers share one cached teacher and the same batches; the
script times optimisation steps (student forward + loss + backward + AdamW) of ``kd`` and of
``ckd+kd`` in alternation (so drift in machine load hits both alike) and prints the median
step time of each and the overhead ratio. Target: CKD + KD within 15 % of logit KD.

    python benchmarks/bench_distill_step.py            # SST-2 and MRPC, both quick students
    python benchmarks/bench_distill_step.py --steps 5 --tasks sst2
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from ckdlab.data import load_task  # noqa: E402
from ckdlab.engine import load_profile, profile_config  # noqa: E402
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
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: one epoch of --examples)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--examples", type=int, default=512)
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
                timed_steps(d, args.warmup)
                distillers[objective] = d
            times = {k: [] for k in distillers}
            # A whole epoch by default: length-grouped batches run from long to short, so a few
            # steps would over-weight the longest (CKD's triplets grow as L^3, the model as L).
            steps = args.steps or distillers["kd"].steps_per_epoch
            for _ in range(steps):  # alternate so load drift hits both alike
                for objective, d in distillers.items():
                    times[objective] += timed_steps(d, 1)
            kd, ckd = statistics.mean(times["kd"]), statistics.mean(times["ckd+kd"])
            lengths = [len(x) for x in distillers["kd"].train_tokenized["input_ids"]]
            rows.append((task, student_name, spec, config.batch_size, statistics.mean(lengths), max(lengths), kd, ckd, ckd / kd - 1))
    print(f"\nthreads={torch.get_num_threads()}  mean over {args.steps or 'one epoch of'} steps  teacher outputs cached for both\n")
    header = f"{'task':6} {'student':8} {'spec':26} {'B':>3} {'mean L':>6} {'max L':>5} {'kd s/step':>10} {'ckd+kd s/step':>14} {'overhead':>9}"
    print(header)
    print("-" * len(header))
    for task, name, spec, batch, mean_len, max_len, kd, ckd, overhead in rows:
        print(f"{task:6} {name:8} {spec:26} {batch:3d} {mean_len:6.1f} {max_len:5d} {kd:10.3f} {ckd:14.3f} {overhead:+9.1%}")


if __name__ == "__main__":
    main()
