"""The runs of tests/test_multiprocess.py, in one process or under ``accelerate launch`` (not a test).

    python tests/multiprocess_worker.py --teacher T --out D --batch-size 8
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tests/multiprocess_worker.py --teacher T --out D --batch-size 4

Runs, recorded in ``D/results`` (``CKDLAB_RESULTS``): fine-tuning of ``T``; logit KD from ``T``
(teacher cache on); the same KD in another folder, stopped after 3 steps and resumed by a second
call (not recorded: its record would be the first KD's); CoDIR + KD
(memory bank), after which every process writes its CoDIR heads, bank and student weights to
``D/codir-rank<i>.pt`` so that the test can check they are identical on every process.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from accelerate import PartialState

from ckdlab.engine import Callback
from ckdlab.studies.distillation import distill
from ckdlab.workspace.teachers import finetune_teacher

TASK, PROFILE, STUDENT = "sst2", "smoke", "layers:0,1"
STOP_AT = 3


class StopAt(Callback):
    """Ends training after ``step`` steps, as an interruption would (a checkpoint, no record)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step: int, logs: dict[str, float]) -> None:
        if step == self.step:
            trainer.stop_requested = True


class DumpState(Callback):
    """Each process writes what it trained (objective heads and buffers, student) at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_end(self, trainer, summary: dict) -> None:
        state = {f"objective.{k}": v.detach().cpu().clone() for k, v in trainer.objectives["codir"].state_dict().items()}
        state.update({f"student.{k}": v.detach().cpu().clone() for k, v in trainer.unwrapped_model().state_dict().items()})
        torch.save(state, self.path.with_name(f"{self.path.name}-rank{trainer.accelerator.process_index}.pt"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--batch-size", required=True, type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ["CKDLAB_RESULTS"] = str(args.out / "results")
    # keep_checkpoint: the test compares the final checkpoints of one and two processes
    train = {"batch_size": args.batch_size, "eval_batch_size": 16, "train_limit": 64, "dev_limit": 48, "epochs": 1,
             "keep_checkpoint": True}
    common = dict(student=STUDENT, teacher=args.teacher, profile=PROFILE, seed=0, **train)
    summaries = {
        "finetune": finetune_teacher(TASK, profile=PROFILE, model=args.teacher, out_dir=args.out / "finetune", **train),
        "kd": distill(TASK, objective="kd", out_dir=args.out / "kd", **common),
    }
    # The same run as "kd" in another folder (so not recorded: a record is per run, and this is kd's).
    summaries["stopped"] = distill(TASK, objective="kd", out_dir=args.out / "resumed", callbacks=[StopAt(STOP_AT)],
                                   record=False, **common)
    summaries["resumed"] = distill(TASK, objective="kd", out_dir=args.out / "resumed", record=False, **common)
    summaries["codir"] = distill(TASK, objective="codir+kd", out_dir=args.out / "codir",
                                 callbacks=[DumpState(args.out / "codir")], **common)
    if PartialState().is_main_process:
        (args.out / "summaries.json").write_text(json.dumps(summaries, indent=2, default=str))


if __name__ == "__main__":
    main()
