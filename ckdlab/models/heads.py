"""Classification heads and label names: the one place a head is put on an encoder.

Every model ckdlab saves carries its task's label names (``config.id2label`` / ``label2id``), as
Hugging Face pipelines expect.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import BertConfig, BertForSequenceClassification, PreTrainedConfig, PreTrainedModel


def head_config(config: PreTrainedConfig, num_labels: int, label_names: Sequence[str] = ()) -> PreTrainedConfig:
    """Set ``num_labels``, ``problem_type`` (1 label = regression) and, when given, the label names."""
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    if label_names:
        set_label_names(config, label_names)
    return config


def set_label_names(config: PreTrainedConfig, label_names: Sequence[str]) -> PreTrainedConfig:
    """``id2label``/``label2id`` from ``label_names`` (class id i is ``label_names[i]``)."""
    names = list(label_names)
    if len(names) != config.num_labels:
        raise ValueError(f"{len(names)} label names {names} for a head with {config.num_labels} outputs")
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    return config


def add_classification_head(encoder: PreTrainedModel, num_labels: int, seed: int | None = None,
                            label_names: Sequence[str] = ()) -> BertForSequenceClassification:
    """``BertForSequenceClassification`` holding ``encoder``'s weights and a fresh pooler and head.

    ``seed`` initialises the new weights from a private RNG stream (the caller's global RNG is left
    alone); ``None`` draws them from the global RNG.
    """
    config = head_config(BertConfig.from_dict(encoder.config.to_dict()), num_labels, label_names)
    if seed is None:
        model = BertForSequenceClassification(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = BertForSequenceClassification(config)
    missing, unexpected = model.bert.load_state_dict(encoder.state_dict(), strict=False)
    if unexpected or any(not key.startswith("pooler.") for key in missing):
        raise ValueError(f"encoder weights do not fit a BERT classifier: missing={missing}, unexpected={unexpected}")
    return model


def set_embeddings_trainable(model: PreTrainedModel, train_embeddings: bool) -> PreTrainedModel:
    """Freeze (``False``) or unfreeze the word-embedding matrix; returns ``model``.

    Only the word embeddings (250k x d for a multilingual vocabulary): position/type embeddings and
    their LayerNorm are small and carry no language-specific vocabulary. ``requires_grad`` is not
    saved with a model, so this is re-applied before every training stage.
    """
    if not isinstance(train_embeddings, bool):
        raise ValueError(f"train_embeddings={train_embeddings!r} must be True or False")
    model.base_model.embeddings.word_embeddings.requires_grad_(train_embeddings)
    return model


def task_loss(logits: Tensor, labels: Tensor, regression: bool) -> Tensor:
    """The head's supervised loss: cross-entropy for classification; MSE on the single output for
    regression (``num_labels == 1``). Computed in float32 whatever the logits' precision."""
    if regression:
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())
