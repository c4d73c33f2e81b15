"""Task-agnostic (general) distillation of the narrow student before task distillation: does it make
the narrow 4 x 256 student learn MRPC, where task-specific distillation alone leaves it all-positive?

Stage 1: the pre-trained MiniLM-L6 encoder teaches the sliced narrow encoder on the offline corpus
(ckdlab.engine.pretrain.pretrain_distill). Stage 2: notebook 03's quick task distillation from the task
teacher, starting from the stage-1 encoder. Appends one row per stage-2 run to results.csv. E.g.::

    python experiments/general_distill/run.py --sentences 20000 --objective ckd --tasks mrpc --seed 0
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import yaml

from ckdlab import api
from ckdlab.data.corpus import load_corpus
from ckdlab.engine.pretrain import pretrain_distill
from ckdlab.io import atomic_write_frame
from ckdlab.models import build_student, load_backbone

RESULTS = Path(__file__).with_name("results.csv")
METHODS = {"CKD + KD": "ckd+kd", "logit KD": "kd"}


def stage1(args: argparse.Namespace) -> tuple[Path, float, float]:
    out = Path(args.out) / f"stage1-{args.objective}{''.join('-' + w for w in args.weights)}-n{args.sentences}-e{args.epochs}-lr{args.lr}-emb{int(args.embeddings)}"
    if (out / "config.json").exists():
        meta = json.loads((out / "stage1.json").read_text())
        return out, meta["wall_s"], meta["final_loss"]
    teacher, tokenizer = load_backbone("minilm-l6")
    student = build_student(teacher, args.student, init="slice", seed=0)
    sentences = load_corpus("offline", limit=args.sentences, seed=0).sentences
    start = time.perf_counter()
    log = pretrain_distill(teacher, student, tokenizer, sentences, objective=args.objective, epochs=args.epochs,
                           weights={k: float(v) for k, v in (item.split("=", 1) for item in args.weights)} or None,
                           lr=args.lr, max_length=64, train_embeddings=args.embeddings, seed=0, progress=False)
    wall = time.perf_counter() - start
    final = float(log["loss"].tail(20).mean())
    student.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "stage1.json").write_text(json.dumps({"wall_s": wall, "final_loss": final, "first_loss": float(log["loss"].head(20).mean())}))
    print(json.dumps({"stage1": str(out), "wall_s": round(wall, 1), "first_loss": float(log["loss"].head(20).mean()),
                      "final_loss": final}), flush=True)
    return out, wall, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=20000)
    parser.add_argument("--objective", default="ckd")
    parser.add_argument("--weights", action="append", default=[], help="term=number for stage 1 (default: every term 1)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--embeddings", action="store_true", help="train the word embeddings in stage 1")
    parser.add_argument("--student", default="config:L4-H256-A4-I1024")
    parser.add_argument("--tasks", nargs="+", default=["mrpc"])
    parser.add_argument("--methods", default="CKD + KD,logit KD")
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--train", action="append", default=[], help="key=value stage-2 option over the profile's")
    parser.add_argument("--out", default="runs/general")
    args = parser.parse_args()
    folder, wall1, loss1 = stage1(args)
    train = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.train)}
    for task in args.tasks:
        teacher = str(api.ensure_teacher(task, "quick"))
        for seed in args.seed:
            for method in args.methods.split(","):
                start = time.perf_counter()
                record = api.distill(task, student=str(folder), objective=METHODS[method], profile="quick", method=method,
                                     student_name="narrow", teacher=teacher, seed=seed, resume=False, record=False,
                                     progress=False, **train,
                                     out_dir=f"{args.out}/{task}-{folder.name}-{METHODS[method]}-s{seed}")
                row = {"task": task, "stage1": folder.name, "stage1_s": round(wall1, 1), "stage1_loss": round(loss1, 5),
                       "method": method, "seed": seed, "train": json.dumps(train), "score": round(record["score"], 4),
                       "centred_cos_gap": (record.get("metrics") or {}).get("fidelity.cos_gap_centred"),
                       "wall_s": round(time.perf_counter() - start, 1)}
                print(json.dumps(row), flush=True)
                old = pd.read_csv(RESULTS) if RESULTS.exists() else pd.DataFrame()
                atomic_write_frame(RESULTS, pd.concat([old, pd.DataFrame([row])], ignore_index=True))


if __name__ == "__main__":
    main()
