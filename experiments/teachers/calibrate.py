"""Machine-speed calibration: seconds per training step of one fixed teacher configuration.

minilm-l6 with a 2-class head, a fixed batch of 32 real SST-2 dev sentences padded to ``--seq-len`` tokens (64)
(random token ids would do; real ones keep attention realistic), AdamW, ``--threads`` threads.
Prints wall and CPU seconds per step and the 1-minute load average; appends them to
calibration.csv. Run it at the start and end of a session, and beside long runs, to turn wall
times measured under load into alone-on-the-machine estimates.

    python experiments/teachers/calibrate.py --steps 20 --note start
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ckdlab.data import load_task
from ckdlab.models import load_backbone

from run_teacher import append_row, cpu_seconds, load_average

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (what mixed_precision='bf16' does on CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, tokenizer = load_backbone("minilm-l6", num_labels=2)
    dev = load_task("sst2", "dev", limit=32, seed=0)
    batch = tokenizer(list(dev["sentence"]), padding="max_length", truncation=True, max_length=args.seq_len, return_tensors="pt")
    labels = torch.tensor(list(dev["label"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    model.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up: allocator, kernels
        step()
    load_start, wall_start, cpu_start = load_average(), time.perf_counter(), cpu_seconds()
    for _ in range(args.steps):
        step()
    wall, cpu = (time.perf_counter() - wall_start) / args.steps, (cpu_seconds() - cpu_start) / args.steps
    row = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "note": args.note, "threads": args.threads, "seq_len": args.seq_len, "bf16": args.bf16, "steps": args.steps,
           "wall_s_per_step": round(wall, 4), "cpu_s_per_step": round(cpu, 4), "utilisation": round(cpu / wall, 2),
           "load_start": load_start, "load_end": load_average()}
    append_row(HERE / "calibration.csv", row)
    print(row)


if __name__ == "__main__":
    main()
