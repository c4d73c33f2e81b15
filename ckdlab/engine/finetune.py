"""Fine-tune a backbone on a task (the teacher's first stage)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from ckdlab.data import get_task
from ckdlab.engine.config import TrainConfig
from ckdlab.engine.trainer import Callback, Trainer
from ckdlab.models import load_backbone


def finetune(
    task: str,
    model: str = "minilm-l6",
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Iterable[Callback] = (),
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``task``; the best-on-dev model lands in ``out_dir/best``."""
    spec = get_task(task)
    config = config or TrainConfig()
    network, tokenizer = load_backbone(model, num_labels=spec.num_labels, seed=config.seed)
    trainer = Trainer(network, tokenizer, spec, config, out_dir=out_dir, data_dir=data_dir, callbacks=callbacks)
    summary = trainer.train(resume=resume)
    summary["model"] = str(model)
    summary["trainer"] = trainer
    return summary
