"""Predictions of a classifier on a dataset, in the dataset's row order."""
from __future__ import annotations

import datasets
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import DynamicPaddingCollator, TaskSpec, tokenize_dataset
from ckdlab.models.outputs import model_inputs


@torch.no_grad()
def predict_logits(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: datasets.Dataset, task: TaskSpec,
    batch_size: int = 64, max_length: int = 128,
) -> np.ndarray:
    """Logits ``[N, C]`` (float32), in the order of ``dataset``'s rows; the model in eval mode."""
    tokenized = tokenize_dataset(dataset, tokenizer, task, max_length=max_length)
    # Batches of similar length waste far less compute on padding; predictions are put back in order.
    order = np.argsort([len(ids) for ids in tokenized["input_ids"]], kind="stable")
    loader = DataLoader(tokenized.select(order), batch_size=batch_size, collate_fn=DynamicPaddingCollator(tokenizer))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    for batch in loader:
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        outputs.append(model(**inputs).logits.float().cpu().numpy())
    model.train(was_training)
    width = outputs[0].shape[-1] if outputs else getattr(model.config, "num_labels", 1)
    result = np.empty((len(tokenized), width), dtype=np.float32)
    if outputs:
        result[order] = np.concatenate(outputs)
    return result


def predict_labels(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: datasets.Dataset, task: TaskSpec,
    batch_size: int = 64, max_length: int = 128,
) -> np.ndarray:
    """Predicted class ids (argmax of the logits), in the order of ``dataset``'s rows."""
    return predict_logits(model, tokenizer, dataset, task, batch_size, max_length).argmax(axis=-1).astype(np.int64)


def evaluate_model(model_dir: str, task: str, split: str = "dev", data_dir: str | None = None, limit: int | None = None,
                   batch_size: int = 64) -> dict[str, float]:
    """Metrics of a saved classifier (a run's ``best/`` folder or any compatible model) on a split."""
    from ckdlab.data import get_task, load_task
    from ckdlab.engine.config import TrainConfig
    from ckdlab.engine.trainer import Trainer
    from ckdlab.models import load_backbone

    spec = get_task(task)
    model, tokenizer = load_backbone(model_dir, num_labels=spec.num_labels)
    data = load_task(spec.name, split, data_dir=data_dir, limit=limit)
    trainer = Trainer(model, tokenizer, spec, TrainConfig(eval_batch_size=batch_size, progress=False), train_dataset=data,
                      dev_datasets={split: data})
    return trainer.evaluate()
