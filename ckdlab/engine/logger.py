"""Run logs: tidy CSVs (one row per step x term), a JSONL event log, and TensorBoard.

Layout of a run folder::

    train_log.csv   step, epoch, name, value      (loss terms, total loss, learning rate, ...)
    eval_log.csv    step, epoch, split, metric, value
    events.jsonl    {"step": .., "event": .., ...}  (weight/temperature changes, resume, stop)
    tb/             TensorBoard event files
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any


class RunLogger:
    def __init__(self, out_dir: str | os.PathLike, tensorboard: bool = True, enabled: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))

    def _append(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        if not self.enabled or not rows:
            return
        path = self.out_dir / name
        new = not path.exists()
        with path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(header)
            writer.writerows(rows)

    def log_train(self, step: int, epoch: float, values: dict[str, float]) -> None:
        self._append("train_log.csv", ["step", "epoch", "name", "value"], [[step, round(epoch, 4), k, v] for k, v in values.items()])
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"train/{key}", value, step)

    def log_eval(self, step: int, epoch: float, split: str, metrics: dict[str, float]) -> None:
        rows = [[step, round(epoch, 4), split, k, v] for k, v in metrics.items()]
        self._append("eval_log.csv", ["step", "epoch", "split", "metric", "value"], rows)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"{split}/{key}", value, step)

    def log_event(self, step: int, event: str, **details: Any) -> None:
        if not self.enabled:
            return
        with (self.out_dir / "events.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, "event": event, **details}, default=str) + "\n")

    def reset(self) -> None:
        """A fresh run in an existing folder starts with empty logs (never mixes two runs)."""
        if not self.enabled:
            return
        import shutil

        for name in ("train_log.csv", "eval_log.csv", "events.jsonl"):
            (self.out_dir / name).unlink(missing_ok=True)
        if self._tb is not None:
            self._tb.close()
            shutil.rmtree(self.out_dir / "tb", ignore_errors=True)
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.out_dir / "tb"))

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint so logs never hold a step twice."""
        for name, key in (("train_log.csv", "step"), ("eval_log.csv", "step")):
            path = self.out_dir / name
            if not path.exists():
                continue
            with path.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            kept = [r for r in rows if int(r[key]) <= step]
            if len(kept) != len(rows):
                with path.open("w", newline="", encoding="utf-8") as handle:
                    writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
                    writer.writeheader()
                    writer.writerows(kept)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None
