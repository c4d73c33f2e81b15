"""Model zoo: backbones (offline embedded, tiny, hub), student builders (BERT and BiLSTM), size and
latency. The disk cache of teacher sentence vectors is :mod:`ckdlab.models.sentence_cache` (imported on its
own: it depends on ckdlab.data, whose import loads ``datasets``)."""
from ckdlab.models.bilstm import (
    BiLSTMConfig,
    BiLSTMForSequenceClassification,
    BiLSTMModel,
    build_bilstm_student,
    pca_embeddings,
)
from ckdlab.models.backbones import EMBEDDED_NAMES, load_backbone, load_tokenizer, minilm_path
from ckdlab.models.size import count_parameters, measure_latency
from ckdlab.models.students import build_student, describe, fresh_student, layer_subset_student, select_layers

__all__ = [
    "BiLSTMConfig",
    "BiLSTMForSequenceClassification",
    "BiLSTMModel",
    "EMBEDDED_NAMES",
    "build_bilstm_student",
    "build_student",
    "count_parameters",
    "describe",
    "fresh_student",
    "layer_subset_student",
    "load_backbone",
    "load_tokenizer",
    "measure_latency",
    "minilm_path",
    "pca_embeddings",
    "select_layers",
]
