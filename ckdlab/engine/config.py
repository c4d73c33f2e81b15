"""Training configuration as data (one dataclass; profiles fill it from YAML)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def option(default: Any, help: str) -> Any:
    """A config field with its command-line help (the CLI builds its options from these fields)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything a fine-tuning or distillation run needs besides models and data.

    ``eval_every`` counts optimisation steps; 0 evaluates at the end of every epoch.
    ``train_limit`` / ``dev_limit`` take seeded random subsets (``None`` = the whole split).
    """

    epochs: float = option(3.0, "passes over the training set (fractions allowed)")
    batch_size: int = option(32, "training batch size (per process)")
    eval_batch_size: int = option(64, "evaluation batch size")
    lr: float = option(2e-5, "peak learning rate of AdamW")
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and LayerNorm)")
    warmup_ratio: float = option(0.1, "fraction of the steps spent warming the learning rate up")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 = no clipping)")
    max_length: int = option(128, "longest tokenised input; longer ones are truncated")
    eval_every: int = option(0, "evaluate every N steps (0 = at the end of every epoch)")
    log_every: int = option(10, "log the loss terms every N steps")
    save_every: int = option(0, "checkpoint every N steps (0 = at the end only)")
    seed: int = option(0, "seed of data order, subsets, initialisation and dropout")
    train_limit: int | None = option(None, "a seeded random subset of N training examples (default: all)")
    dev_limit: int | None = option(None, "a seeded random subset of N dev examples (default: all)")
    group_by_length: bool = option(False, "batch examples of similar length together (less padding)")
    mixed_precision: str = option("no", "no | bf16 | fp16 (Accelerate)")
    max_steps: int | None = option(None, "stop after N optimisation steps (default: epochs decide)")
    progress: bool = option(True, "show progress bars")
    extra: dict[str, Any] = field(default_factory=dict, metadata={"help": None})

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


@dataclass
class DistillConfig:
    """What distillation adds to training: the objective, its weights and options, the student's start.

    The one place the defaults live (the CLI, the API and the profiles read them from here).
    ``weights`` None = every term of the objective at 1 (``ce`` at 0 unless named);
    ``student_init`` applies to ``config:`` students (``bert`` random init, ``slice`` the leading
    block of every teacher matrix).
    """

    objective: str = option("ckd+kd", "'+'-joined objectives, e.g. ckd+kd, kd, ce, pkd+kd, tinybert+kd, minilm")
    weights: dict[str, float] | str | None = option(
        None, "term=weight list, e.g. wr_pair=1,wr_triplet=1,kd=1, or 'official' (the CKD paper's, converted)")
    temperature: float = option(1.0, "KD temperature T")
    layer_map: str | list = option("uniform", "uniform | last | skip | explicit teacher-student pairs '0-0,2-1,4-2'")
    objective_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "objective options, e.g. window=10,pair_metric=cos"})
    student_init: str = option("bert", "bert (random) | slice (leading block of the teacher), for config: students")
    balance: str = option("none", "none | grad | loss: set the balanced terms' (CKD's) weights at the start of training")
    balance_fraction: float = option(0.25, "each balanced term's share of the task/KD gradient (balance=grad) or loss")

    def replace(self, **changes: Any) -> "DistillConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown distillation option(s) {sorted(unknown)}; valid: {sorted(self.to_dict())}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
