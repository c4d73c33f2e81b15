"""Model zoo: backbones (offline embedded, tiny, hub), student builders, size and latency."""
from ckdlab.models.backbones import EMBEDDED_NAMES, load_backbone, load_tokenizer, minilm_path
from ckdlab.models.heads import add_classification_head, set_embeddings_trainable, set_label_names, task_loss
from ckdlab.models.outputs import ModelOutputs, forward_outputs, model_inputs
from ckdlab.models.size import count_parameters, measure_latency, size_summary
from ckdlab.models.students import build_student, describe, fresh_student, layer_subset_student, select_layers

__all__ = [
    "ModelOutputs",
    "add_classification_head",
    "forward_outputs",
    "model_inputs",
    "set_embeddings_trainable",
    "set_label_names",
    "size_summary",
    "task_loss",
    "EMBEDDED_NAMES",
    "build_student",
    "count_parameters",
    "describe",
    "fresh_student",
    "layer_subset_student",
    "load_backbone",
    "load_tokenizer",
    "measure_latency",
    "minilm_path",
    "select_layers",
]
