"""Training loops on Accelerate: fine-tuning, distillation, callbacks, checkpoints, profiles."""
from ckdlab.engine.config import TrainConfig
from ckdlab.engine.finetune import finetune
from ckdlab.engine.profiles import PROFILES, load_profile, profile_config
from ckdlab.engine.trainer import Callback, NonFiniteLossError, Trainer

__all__ = ["PROFILES", "Callback", "NonFiniteLossError", "TrainConfig", "Trainer", "finetune", "load_profile", "profile_config"]
