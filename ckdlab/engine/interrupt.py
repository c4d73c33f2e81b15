"""Ctrl-C during training: finish the current step, checkpoint, and stop with the step to resume from.

A SIGINT arriving in the middle of an optimisation step would leave the model half-updated; the
loop instead notes it (:class:`DeferredInterrupt`), completes the step, writes a checkpoint and
raises :class:`TrainingInterrupted`, whose ``step`` is where the same command resumes. A second
Ctrl-C stops at once (the last checkpoint written before it is what a resume uses).
"""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after a complete step; ``step`` is where a resume starts."""

    def __init__(self, step: int, checkpoint: Path | None) -> None:
        where = f"; the checkpoint is {checkpoint}" if checkpoint is not None else " (no run folder: nothing was saved)"
        super().__init__(f"training interrupted at step {step}{where}")
        self.step = step
        self.checkpoint = checkpoint


class DeferredInterrupt:
    """Context manager: while active (main thread only), the first SIGINT only sets ``requested``."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("ckdlab: stopping after this step to save a checkpoint (Ctrl-C again to stop at once)", file=sys.stderr)

    def __enter__(self) -> "DeferredInterrupt":
        # Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its default.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            self._installed = False
