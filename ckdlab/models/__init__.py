"""Model zoo: backbones (offline embedded, tiny, hub), student builders (BERT and BiLSTM), heads,
typed outputs, layer removal, size and latency. The disk cache of teacher sentence vectors is :mod:`ckdlab.engine.sentence_cache` (imported on its
own: it depends on ckdlab.data, whose import loads ``datasets``)."""
from ckdlab.models.bilstm import (
    BiLSTMConfig,
    BiLSTMForSequenceClassification,
    BiLSTMModel,
    build_bilstm_student,
    pca_embeddings,
)
from ckdlab.models.backbones import EMBEDDED_NAMES, load_backbone, load_tokenizer, minilm_path
from ckdlab.models.heads import add_classification_head, set_embeddings_trainable, set_label_names, task_loss
from ckdlab.models.layer_removal import (
    candidate_sets,
    default_max_removed,
    evenly_spaced_layers,
    freeze_for_candidate,
    remove_layers,
    top_layers,
)
from ckdlab.models.outputs import ModelOutputs, forward_outputs, model_inputs
from ckdlab.models.size import count_parameters, measure_latency, size_summary
from ckdlab.models.students import build_student, describe, fresh_student, layer_subset_student, select_layers

__all__ = [
    "BiLSTMConfig",
    "BiLSTMForSequenceClassification",
    "BiLSTMModel",
    "EMBEDDED_NAMES",
    "ModelOutputs",
    "add_classification_head",
    "build_bilstm_student",
    "build_student",
    "candidate_sets",
    "count_parameters",
    "default_max_removed",
    "describe",
    "evenly_spaced_layers",
    "forward_outputs",
    "freeze_for_candidate",
    "fresh_student",
    "layer_subset_student",
    "load_backbone",
    "load_tokenizer",
    "measure_latency",
    "minilm_path",
    "model_inputs",
    "pca_embeddings",
    "remove_layers",
    "select_layers",
    "set_embeddings_trainable",
    "set_label_names",
    "size_summary",
    "task_loss",
    "top_layers",
]
