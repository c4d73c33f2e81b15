"""The one training loop on Accelerate: fine-tuning, distillation, callbacks, checkpoints, caches."""
from ckdlab.engine.callbacks import Callback, KeepBest
from ckdlab.engine.config import DistillConfig, TrainConfig
from ckdlab.engine.distill import Distiller, TokenizationMismatchError, check_same_tokenization
from ckdlab.engine.finetune import finetune
from ckdlab.engine.teacher_cache import TeacherCache
from ckdlab.engine.trainer import NonFiniteLossError, Trainer

__all__ = [
    "Callback",
    "DistillConfig",
    "Distiller",
    "KeepBest",
    "NonFiniteLossError",
    "TeacherCache",
    "TokenizationMismatchError",
    "TrainConfig",
    "Trainer",
    "check_same_tokenization",
    "finetune",
]
