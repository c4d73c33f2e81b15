"""How much ``group_by_length`` saves: padded tokens per epoch (exact) and step time (measured).

1. For each task and max_length: the tokens one epoch feeds the model (batch size x the batch's
   longest sequence, summed over batches) with the random sampler the Trainer uses by default and
   with ``LengthGroupedSampler``; the ratio is the work saved (exact, no timing noise).
2. ``--time TASK``: training steps (forward, backward, fused AdamW) on the first ``--batches`` batches
   of each sampler, interleaved A, B, A, B in one process so that machine load hits both alike;
   reports wall and main-thread CPU seconds per step. With ``--threads 1`` all compute runs in
   the main thread, so its CPU time is close to the time alone whatever else runs on the machine.

    python experiments/teachers/bench_group_by_length.py                       # token counts
    python experiments/teachers/bench_group_by_length.py --time rte --batches 8  # + timing
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ckdlab.data import DynamicPaddingCollator, LengthGroupedSampler, get_task, load_task, tokenize_dataset
from ckdlab.data.xnli import load_mnli_english_train
from ckdlab.models import load_backbone
from ckdlab.models.backbones import load_tokenizer

SETTINGS = (("sst2", 64), ("mrpc", 128), ("mrpc", 96), ("rte", 128), ("rte", 256), ("cola", 64), ("stsb", 128), ("mnli", 128))


def train_lengths(task: str, tokenizer, max_length: int) -> np.ndarray:
    data = load_mnli_english_train() if task == "mnli" else load_task(task, "train")
    tokenized = tokenize_dataset(data, tokenizer, task, max_length=max_length)
    return np.array([len(ids) for ids in tokenized["input_ids"]])


def padded_tokens(lengths: np.ndarray, order: np.ndarray, batch_size: int) -> int:
    return int(sum(len(chunk) * lengths[chunk].max() for chunk in np.array_split(order, range(batch_size, len(order), batch_size))))


def token_table(batch_size: int) -> None:
    tokenizer = load_tokenizer("minilm-l6")
    print(f"{'task':6s} {'max_len':>7s} {'examples':>8s} {'real tok':>9s} {'random':>9s} {'grouped':>9s} {'random/grouped':>14s}")
    for task, max_length in SETTINGS:
        lengths = train_lengths(task, tokenizer, max_length)
        shuffled = np.random.default_rng(0).permutation(len(lengths))
        grouped = LengthGroupedSampler(lengths.tolist(), batch_size, seed=0).order()
        random_tokens, grouped_tokens = padded_tokens(lengths, shuffled, batch_size), padded_tokens(lengths, grouped, batch_size)
        print(f"{task:6s} {max_length:7d} {len(lengths):8d} {lengths.sum():9d} {random_tokens:9d} {grouped_tokens:9d} {random_tokens / grouped_tokens:14.2f}")


def time_steps(task: str, max_length: int, batches: int, batch_size: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as the Trainer does on CPU
    torch.manual_seed(0)
    spec = get_task(task)
    model, tokenizer = load_backbone("minilm-l6", num_labels=spec.num_labels)
    data = load_mnli_english_train() if task == "mnli" else load_task(task, "train")
    tokenized = tokenize_dataset(data, tokenizer, spec, max_length=max_length)
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    collator = DynamicPaddingCollator(tokenizer)
    orders = {
        "random": np.random.default_rng(0).permutation(len(lengths)),
        "grouped": LengthGroupedSampler(lengths, batch_size, seed=0).order(),
    }
    # Batches spread evenly over the epoch (a grouped epoch runs from long to short inside each
    # mega-batch, so its first batches alone would overstate its cost).
    picked = {}
    for name, order in orders.items():
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        picked[name] = [chunks[int(i)] for i in np.linspace(0, len(chunks) - 1, batches + 1).round()]
    iterators = {name: iter([collator([tokenized[int(i)] for i in chunk]) for chunk in chunks]) for name, chunks in picked.items()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    model.train()
    seconds = {name: [] for name in orders}
    cpu_seconds = {name: [] for name in orders}
    tokens = {name: [] for name in orders}
    for index in range(batches + 1):
        for name, iterator in iterators.items():
            batch = next(iterator)
            labels = batch.pop("labels")
            start, cpu_start = time.perf_counter(), time.thread_time()
            logits = model(**batch).logits
            loss = torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float()) if spec.is_regression else torch.nn.functional.cross_entropy(logits, labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if index:  # the first step of each warms allocators up (it is the longest grouped batch)
                seconds[name].append(time.perf_counter() - start)
                cpu_seconds[name].append(time.thread_time() - cpu_start)
                tokens[name].append(batch["input_ids"].numel())
    for name in orders:
        s, c, t = np.array(seconds[name]), np.array(cpu_seconds[name]), np.array(tokens[name])
        print(f"{task} max_len {max_length} {name:7s}: wall {s.mean():.3f} s/step, main-thread CPU {c.mean():.3f} s/step over {len(s)} steps, "
              f"{t.mean():.0f} padded tokens/step")
    print(f"{task}: random/grouped per step: wall {np.mean(seconds['random']) / np.mean(seconds['grouped']):.2f}, "
          f"main-thread CPU {np.mean(cpu_seconds['random']) / np.mean(cpu_seconds['grouped']):.2f} "
          f"(with --threads 1 the CPU ratio does not depend on the machine's load)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--time", default=None, help="task whose step times to measure")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.time:
        time_steps(args.time, args.max_length, args.batches, args.batch_size, args.threads)
    else:
        token_table(args.batch_size)


if __name__ == "__main__":
    main()
