"""Training configuration as data (one dataclass; profiles fill it from YAML)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainConfig:
    """Everything a fine-tuning or distillation run needs besides models and data.

    ``eval_every`` counts optimisation steps; 0 evaluates at the end of every epoch.
    ``train_limit`` / ``dev_limit`` take seeded random subsets (``None`` = the whole split).
    """

    epochs: float = 3.0
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 128
    eval_every: int = 0
    log_every: int = 10
    save_every: int = 0
    seed: int = 0
    train_limit: int | None = None
    dev_limit: int | None = None
    group_by_length: bool = False
    mixed_precision: str = "no"
    max_steps: int | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "TrainConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; valid: {sorted(self.to_dict())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        return cls().replace(**values)
