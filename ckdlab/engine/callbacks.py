"""Hooks into the training loop: the :class:`Callback` base and :class:`KeepBest`."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from transformers import PreTrainedModel

if TYPE_CHECKING:  # the trainer imports this module; annotations only
    from ckdlab.engine.trainer import Trainer


class Callback:
    """Hooks called by the loop; override what you need."""

    def on_step_end(self, trainer: "Trainer", step: int, logs: dict[str, float]) -> None: ...

    def on_evaluate(self, trainer: "Trainer", step: int, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: "Trainer", summary: dict[str, Any]) -> None: ...


class KeepBest(Callback):
    """Remember the trainable parameters at the best dev score; :meth:`restore` puts them back.

    For runs without a run folder (no ``best/`` checkpoint on disk). Frozen parameters never
    change, so copying only the trainable ones restores the best model exactly, without copying
    e.g. a frozen 250k-row embedding matrix at every improvement.
    """

    def __init__(self) -> None:
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}
        self._state: dict[str, torch.Tensor] | None = None

    def on_evaluate(self, trainer: "Trainer", step: int, metrics: dict[str, float]) -> None:
        if metrics["score"] > self.best_score:
            self.best_score, self.best_step, self.best_metrics = metrics["score"], step, dict(metrics)
            model = trainer.unwrapped_model()
            self._state = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    def restore(self, model: PreTrainedModel) -> PreTrainedModel:
        if self._state is None:
            raise ValueError("KeepBest saw no evaluation; evaluate at least once (the trainer does at the end of training)")
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in self._state.items():
                params[name].copy_(value)
        return model
