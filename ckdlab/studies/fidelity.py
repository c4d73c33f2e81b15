"""Relation fidelity: how close a student's relations are to its teacher's, on fixed dev sentences.

For a teacher, a student and a set of dev examples, per mapped layer pair: the four CKD terms in
their official form (KL of softmax over cosines at temperature 1, all-triplet angle MSE), the
mean |Δ cosine| between the two models' token-pair cosines on raw and on centred states
(centred: each state minus the mean of its sequence's valid states), and each model's mean
off-diagonal cosine (near 1 on raw states = collapse: every token points one way). The measure is
the same whatever a student was trained with, so KD, CE and CKD students are compared fairly.
Every distillation run records the mean over layer pairs (``metric.fidelity.*`` in its record).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import DynamicPaddingCollator, get_task, load_task, tokenize_dataset
from ckdlab.models.outputs import model_inputs
from ckdlab.objectives.ckd import relation_fidelity

FIDELITY_EXAMPLES = 64
FIDELITY_COLUMNS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet", "cos_gap_raw", "cos_gap_centred",
                    "teacher_cos_raw", "student_cos_raw", "teacher_cos_centred", "student_cos_centred")


def fidelity_batch(task: str, tokenizer: PreTrainedTokenizerBase, data_dir: str | Path | None = None,
                   examples: int = FIDELITY_EXAMPLES, max_length: int = 128) -> dict[str, torch.Tensor]:
    """One padded batch of ``examples`` dev examples of ``task`` (a fixed seeded subset), labels dropped."""
    spec = get_task(task)
    dev = load_task(spec.name, "dev", data_dir=data_dir, limit=examples, seed=0)
    encoded = tokenize_dataset(dev, tokenizer, spec, max_length=max_length)
    batch = next(iter(DataLoader(encoded, batch_size=len(encoded), collate_fn=DynamicPaddingCollator(tokenizer))))
    return model_inputs(batch)


@torch.no_grad()
def relation_fidelity_table(teacher: PreTrainedModel, student: PreTrainedModel, batch: dict[str, torch.Tensor],
                            layer_map: Any = "uniform") -> pd.DataFrame:
    """One row per mapped (teacher, student) layer pair (see the module docstring), both models in eval mode."""
    outputs = []
    for model in (teacher, student):
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        outputs.append(model(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=True).hidden_states)
        model.train(was_training)
    return pd.DataFrame(relation_fidelity(outputs[0], outputs[1], batch["attention_mask"], layer_map))


def fidelity_summary(table: pd.DataFrame) -> dict[str, float]:
    """The mean over layer pairs of every fidelity column, named ``fidelity.<column>``."""
    return {f"fidelity.{column}": float(table[column].mean()) for column in FIDELITY_COLUMNS if column in table}
