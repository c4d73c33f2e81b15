"""Work of a fine-tuning recipe, and its time alone on the machine, from counted tokens.

Machine load makes wall times of separate runs incomparable; the work itself is not. For a recipe
we count, exactly as the Trainer will batch it: optimisation steps, padded training tokens
(batch size x longest sequence of the batch, summed), and padded dev tokens over all evaluations.
A least-squares fit of the 1-thread CPU seconds of finished runs (results.csv, whose runs use one
thread, so their CPU time hardly depends on load) to

    cpu_s = a * steps + b * train_tokens + c * eval_tokens + d * runs

gives seconds per unit of work; the same counts for today's quick profile turn the notebook's
measured 37 minutes into a ratio: new time ~= 37 min x cost(new) / cost(today).

    python experiments/teachers/cost_model.py
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from ckdlab.data import LengthGroupedSampler, load_task, tokenize_dataset
from ckdlab.data.xnli import load_mnli_english_train, load_xnli
from ckdlab.models.backbones import load_tokenizer

HERE = Path(__file__).resolve().parent
EVAL_BATCH = 128


@dataclass(frozen=True)
class Recipe:
    task: str
    train_limit: int | None
    epochs: float
    max_length: int
    group_by_length: bool
    batch_size: int = 32
    eval_every: int = 0
    seed: int = 0


@lru_cache(maxsize=None)
def lengths(task: str, split: str, max_length: int, limit: int | None, seed: int) -> tuple[int, ...]:
    tokenizer = load_tokenizer("minilm-l6")
    if task == "mnli":
        data = load_mnli_english_train(limit=limit, seed=seed) if split == "train" else load_xnli("en", "dev")
    else:
        data = load_task(task, split, limit=limit if split == "train" else None, seed=seed)
    tokenized = tokenize_dataset(data, tokenizer, task, max_length=max_length)
    return tuple(len(ids) for ids in tokenized["input_ids"])


def padded(lens: np.ndarray, order: np.ndarray, batch_size: int) -> list[int]:
    return [len(order[i:i + batch_size]) * int(lens[order[i:i + batch_size]].max()) for i in range(0, len(order), batch_size)]


def work(recipe: Recipe) -> dict[str, float]:
    """Steps, padded training tokens, evaluations and padded dev tokens of one run."""
    train = np.array(lengths(recipe.task, "train", recipe.max_length, recipe.train_limit, recipe.seed))
    dev = np.array(lengths(recipe.task, "dev", recipe.max_length, None, recipe.seed))
    steps_per_epoch = math.ceil(len(train) / recipe.batch_size)
    total = max(1, math.ceil(recipe.epochs * steps_per_epoch))
    tokens, epoch = [], 0
    while len(tokens) < total:
        if recipe.group_by_length:
            sampler = LengthGroupedSampler(train.tolist(), recipe.batch_size, seed=recipe.seed)
            sampler.set_epoch(epoch)
            order = sampler.order()
        else:  # the Trainer's default shuffling; one seeded permutation stands for it
            order = np.random.default_rng([recipe.seed, epoch]).permutation(len(train))
        tokens += padded(train, order, recipe.batch_size)
        epoch += 1
    evals = math.ceil(total / recipe.eval_every) if recipe.eval_every else math.ceil(recipe.epochs)
    dev_tokens = sum(padded(dev, np.arange(len(dev)), EVAL_BATCH))
    return {"steps": total, "train_tokens": float(sum(tokens[:total])), "evals": evals, "eval_tokens": float(evals * dev_tokens)}


def recipe_from_row(row: dict[str, str]) -> Recipe:
    return Recipe(
        task=row["task"], train_limit=int(row["train_examples"]), epochs=float(row["epochs"]), max_length=int(row["max_length"]),
        group_by_length=row["group_by_length"] == "True", batch_size=int(row["batch_size"]), eval_every=int(row["eval_every"]),
        seed=int(row["seed"]),
    )


def fit(rows: list[dict[str, str]]) -> np.ndarray:
    features, targets = [], []
    for row in rows:
        w = work(recipe_from_row(row))
        features.append([w["steps"], w["train_tokens"], w["eval_tokens"], 1.0])
        targets.append(float(row["cpu_s"]))
    # Non-negative: every unit of work costs time; plain least squares on a handful of runs
    # trades a negative per-step cost against a larger per-run constant.
    coefficients, _ = nnls(np.array(features), np.array(targets))
    predicted = np.array(features) @ coefficients
    for row, p in zip(rows, predicted):
        print(f"  {row['tag']:34s} cpu {float(row['cpu_s']):7.1f} s   model {p:7.1f} s")
    return coefficients


def cost(recipes: list[Recipe], coefficients: np.ndarray) -> float:
    total = 0.0
    for recipe in recipes:
        w = work(recipe)
        total += float(np.array([w["steps"], w["train_tokens"], w["eval_tokens"], 1.0]) @ coefficients)
    return total


TODAY = [  # ckdlab/configs/profiles/quick.yaml, finetune section, before this study
    Recipe("sst2", 3000, 2, 64, False), Recipe("mrpc", 2000, 2, 128, False), Recipe("rte", 2490, 2, 128, False),
    Recipe("cola", 8551, 3, 64, False), Recipe("stsb", 5749, 3, 128, False),
]
NEW = [  # the quick profile's finetune section after this study (MNLI intermediate stage before RTE)
    Recipe("sst2", 10000, 1, 64, True), Recipe("mrpc", 3668, 3, 128, True), Recipe("mnli", 9000, 1, 128, True),
    Recipe("rte", 2490, 3, 128, True), Recipe("cola", 8551, 3, 64, True), Recipe("stsb", 5749, 3, 128, True),
]
TODAY_NOTEBOOK_MIN = {"sst2": 7.1, "mrpc": 7.1, "rte": 6.1, "cola": 6.0, "stsb": 11.0}


def main() -> None:
    rows = [row for row in csv.DictReader((HERE / "results.csv").open()) if row["threads"] == "1" and int(row["steps"]) > 10]
    print(f"fit on {len(rows)} finished 1-thread runs:")
    a, b, c, d = coefficients = fit(rows)
    print(f"cpu_s = {a:.3f} * steps + {1e3 * b:.3f} ms * train_tokens + {1e3 * c:.3f} ms * eval_tokens + {d:.1f}")
    print("today's quick profile:")
    for recipe in TODAY:
        w = work(recipe)
        print(f"  {recipe.task:5s} steps {w['steps']:4d} train tokens {w['train_tokens']:9.0f}  model {cost([recipe], coefficients):6.1f} cpu-s"
              f"  notebook {TODAY_NOTEBOOK_MIN[recipe.task]} min")
    print("new quick profile:")
    for recipe in NEW:
        w = work(recipe)
        print(f"  {recipe.task:5s} steps {w['steps']:4d} train tokens {w['train_tokens']:9.0f}  model {cost([recipe], coefficients):6.1f} cpu-s")
    today, new = cost(TODAY, coefficients), cost(NEW, coefficients)
    print(json.dumps({"today_total_cpu_s": round(today, 1), "new_total_cpu_s": round(new, 1),
                      "new_notebook_min_estimate": round(sum(TODAY_NOTEBOOK_MIN.values()) * new / today, 1)}))


if __name__ == "__main__":
    main()
