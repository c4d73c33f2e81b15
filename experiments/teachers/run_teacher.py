"""One teacher fine-tuning run with the package's Trainer, logged as one CSV row.

Recipes are TrainConfig options plus two things the quick profile does not have yet:

* ``--task mnli``: the intermediate stage. Trains on the 9k English MultiNLI sample
  (``load_mnli_english_train``; 0 entailment, 1 neutral, 2 contradiction) and evaluates on the XNLI
  English dev set (2,490 MultiNLI-style pairs, disjoint from the sample and from RTE).
  ``--keep`` keeps its best model (``<out>/best``) as the start of a later run.
* ``--init DIR``: start from a fine-tuned run's ``best`` folder instead of ``minilm-l6``.
  The encoder and pooler are copied; ``--head-init fresh`` gives a new seeded head,
  ``--head-init nli`` (RTE from an MNLI model) sets the entailment row from MNLI's entailment row
  and the not-entailment row to the mean of the neutral and contradiction rows, plus log 2 in
  its bias (a linear stand-in for log(p_neutral + p_contradiction)).

Time is recorded as wall seconds and as this process's CPU seconds (user + system): the first
grows with the load other processes put on the machine, the second hardly does, so
``cpu_s / utilisation`` (utilisation = cpu/wall of the same configuration measured on an idle
machine, see calibrate.py) estimates the time alone.

    python experiments/teachers/run_teacher.py --task rte --epochs 3 --lr 5e-5 --seed 0 --tag rte-base
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import resource
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ckdlab.data import get_task
from ckdlab.data.xnli import load_mnli_english_train, load_xnli
from ckdlab.engine import Callback, TrainConfig, Trainer
from ckdlab.models import load_backbone

HERE = Path(__file__).resolve().parent
DEFAULT_CSV = HERE / "results.csv"


class EvalHistory(Callback):
    """Keeps every dev evaluation (step, metrics) for the CSV."""

    def __init__(self) -> None:
        self.evals: list[dict] = []

    def on_evaluate(self, trainer, step, metrics) -> None:
        self.evals.append({"step": step, **{k: round(v, 4) for k, v in metrics.items()}})


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def append_row(path: Path, row: dict) -> None:
    """One CSV row appended to ``path`` (the header first when the file is new)."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def nli_head_for_rte(mnli_head: torch.nn.Linear, rte_head: torch.nn.Linear) -> None:
    """RTE logits from an MNLI head: entailment row as is; not-entailment = mean(neutral, contradiction) + log 2.

    Why log 2: if neutral and contradiction had equal logits l, log(p_n + p_c) = l + log 2 up to the
    shared normaliser, so the 2-class softmax starts out as the 3-class model's entailment probability.
    """
    weight, bias = mnli_head.weight.detach(), mnli_head.bias.detach()
    with torch.no_grad():
        rte_head.weight[0] = weight[0]
        rte_head.weight[1] = (weight[1] + weight[2]) / 2
        rte_head.bias[0] = bias[0]
        rte_head.bias[1] = (bias[1] + bias[2]) / 2 + math.log(2.0)


def build_model(task: str, init: str, head_init: str, seed: int):
    spec = get_task(task)
    if init == "minilm-l6":
        torch.manual_seed(seed)  # the fresh head is drawn here: same seed, same head
        return load_backbone("minilm-l6", num_labels=spec.num_labels)
    source = AutoModelForSequenceClassification.from_pretrained(init)  # a fine-tuned classifier, its own head
    tokenizer = AutoTokenizer.from_pretrained(init)
    torch.manual_seed(seed)
    model, _ = load_backbone("minilm-l6", num_labels=spec.num_labels)
    model.bert.load_state_dict(source.bert.state_dict(), strict=True)
    if head_init == "nli":
        if spec.name != "rte" or source.config.num_labels != 3:
            raise ValueError("--head-init nli maps a 3-class MNLI head onto RTE's 2 classes; use it for --task rte from an MNLI run")
        nli_head_for_rte(source.classifier, model.classifier)
    elif head_init != "fresh":
        raise ValueError(f"--head-init must be 'fresh' or 'nli', got {head_init!r}")
    return model, tokenizer


def datasets_for(task: str, seed: int, train_limit: int | None, dev_limit: int | None):
    """Explicit train/dev sets for the intermediate MNLI stage; None = the Trainer's own GLUE loading."""
    if task != "mnli":
        return None, None
    train = load_mnli_english_train(limit=train_limit, seed=seed)
    dev = load_xnli("en", "dev", limit=dev_limit, seed=0)
    return train, {"dev": dev}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--tag", required=True, help="name of this recipe in the CSV")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--dev-limit", type=int, default=None)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--group-by-length", action="store_true")
    parser.add_argument("--init", default="minilm-l6", help="minilm-l6 or a run's best/ folder")
    parser.add_argument("--head-init", default="fresh", choices=["fresh", "nli"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-before", action="store_true", help="also evaluate the starting model (step 0)")
    parser.add_argument("--keep", action="store_true", help="keep <out>/best (for an intermediate stage)")
    parser.add_argument("--csv", default=str(DEFAULT_CSV))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    runs = Path(os.environ.get("CKDLAB_RUNS", HERE.parents[1] / "runs"))
    out = runs / "teachers-exp" / f"{args.tag}-s{args.seed}"
    if out.exists():
        shutil.rmtree(out)
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=128, lr=args.lr, max_length=args.max_length,
        warmup_ratio=args.warmup_ratio, weight_decay=args.weight_decay, eval_every=args.eval_every, log_every=10,
        seed=args.seed, train_limit=args.train_limit if args.task != "mnli" else None,
        dev_limit=args.dev_limit if args.task != "mnli" else None, group_by_length=args.group_by_length,
        max_steps=args.max_steps, progress=False,
    )
    train, dev = datasets_for(args.task, args.seed, args.train_limit, args.dev_limit)
    load_start, wall_start, cpu_start = load_average(), time.perf_counter(), cpu_seconds()
    model, tokenizer = build_model(args.task, args.init, args.head_init, args.seed)
    history = EvalHistory()
    trainer = Trainer(model, tokenizer, args.task, config, out_dir=out, train_dataset=train, dev_datasets=dev, callbacks=[history])
    if args.eval_before:
        trainer.evaluate()
    summary = trainer.train()
    wall, cpu = time.perf_counter() - wall_start, cpu_seconds() - cpu_start
    best = summary.get("best_metrics", {})
    row = {
        "tag": args.tag, "task": args.task, "seed": args.seed, "train_examples": summary["train_examples"],
        "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size, "max_length": args.max_length,
        "warmup_ratio": args.warmup_ratio, "group_by_length": args.group_by_length, "eval_every": args.eval_every,
        "init": Path(args.init).parent.name if args.init != "minilm-l6" else "minilm-l6", "head_init": args.head_init,
        "steps": summary["steps"], "best_step": summary["best_step"], "score": round(summary["best_score"], 4),
        "best_metrics": json.dumps({k: round(v, 4) for k, v in best.items() if k not in ("step", "score")}),
        "evals": json.dumps(history.evals), "train_wall_s": round(summary["wall_time_s"], 1),
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_start": load_start, "load_end": load_average(),
        "threads": args.threads,
    }
    append_row(Path(args.csv), row)
    print(json.dumps(row))
    # Each run leaves ~350 MB (best model + optimiser checkpoint); only intermediate stages are needed later.
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    if not args.keep:
        shutil.rmtree(out / "best", ignore_errors=True)


if __name__ == "__main__":
    main()
