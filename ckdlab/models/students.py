"""Student builders.

Two ways to make a student from a teacher (both keep the teacher's tokenizer, so CKD's
token-aligned relations stay comparable):

(a) **Layer subset** (same width): keep some of the teacher's transformer layers and copy their
    weights, plus the embeddings, pooler and (when the label count matches) the classifier.
    ``select_layers(spec, n)`` turns a spec into 0-based teacher layer indices:

    - ``"layers:0,2,4"`` — an explicit list;
    - ``"first:3"`` — the bottom k layers (DistilBERT/PKD initialisation);
    - ``"every-other"`` — layers 0, 2, 4, ... (TinyBERT/DistilBERT "take one of two");
    - ``"skip:3"`` — PKD-skip: every (n/k)-th layer ending at the top, 1-based {n/k, 2n/k, ..., n}.

(b) **Fresh smaller config** (``"config:L4-H256-A4-I1024"``): a new BERT with that many layers,
    hidden size, heads and FFN size. Initialisation, chosen with ``init``:

    - ``"bert"`` (default) — the standard BERT initialiser of transformers (weights ~ N(0, 0.02),
      LayerNorm = (1, 0), biases 0), i.e. the usual starting point of task-specific distillation
      without general distillation;
    - ``"slice"`` — copy the leading block of every teacher matrix (first H hidden units, first I
      FFN neurons, first L layers). It keeps the teacher's embedding geometry, which helps small
      data; importance-ordered slicing is DynaBERT's job (see the ablations).

(c) **BiLSTM** (``"bilstm"`` or ``"bilstm:L2-H300-E300"``): a recurrent student on the teacher's
    tokenizer, see :mod:`ckdlab.models.bilstm`; ``init`` is ``"pca"`` (default) or ``"random"``.
"""
from __future__ import annotations

import copy
import re

import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedModel

from ckdlab.errors import UserError
from ckdlab.models.bilstm import BILSTM_MODEL_TYPE, build_bilstm_student

_CONFIG_RE = re.compile(r"^L(\d+)-H(\d+)(?:-A(\d+))?(?:-I(\d+))?$", re.IGNORECASE)


def select_layers(spec: str, n_teacher_layers: int) -> list[int]:
    """0-based teacher layer indices for a layer-subset spec (see the module docstring)."""
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "layers":
        try:
            layers = [int(x) for x in arg.split(",") if x.strip()]
        except ValueError as err:
            raise UserError(f"student spec '{spec}': expected 'layers:i,j,k' with integers") from err
    elif kind == "first":
        layers = list(range(_positive_int(spec, arg)))
    elif kind == "every-other":
        layers = list(range(0, n_teacher_layers, 2))
    elif kind == "skip":
        k = _positive_int(spec, arg)
        if n_teacher_layers % k:
            raise UserError(f"student spec '{spec}': skip:k needs k to divide the teacher's {n_teacher_layers} layers")
        step = n_teacher_layers // k
        layers = [step * (j + 1) - 1 for j in range(k)]
    else:
        raise UserError(
            f"unknown student spec '{spec}'. Use layers:0,2,4 | first:k | every-other | skip:k | config:L4-H256-A4-I1024 "
            "| bilstm:L2-H300-E300"
        )
    if not layers:
        raise UserError(f"student spec '{spec}' selects no layers")
    bad = [i for i in layers if not 0 <= i < n_teacher_layers]
    if bad:
        raise UserError(f"student spec '{spec}': layers {bad} out of range 0..{n_teacher_layers - 1}")
    if sorted(set(layers)) != layers:
        raise UserError(f"student spec '{spec}': layers must be strictly increasing")
    return layers


def _positive_int(spec: str, arg: str) -> int:
    if not arg.strip().isdigit() or int(arg) < 1:
        raise UserError(f"student spec '{spec}': expected a positive integer after ':'")
    return int(arg)


def parse_config_spec(spec: str, teacher_config: BertConfig) -> BertConfig:
    """``'L4-H256-A4-I1024'`` -> a BertConfig; heads default to hidden/64, FFN to 4 x hidden."""
    match = _CONFIG_RE.match(spec.strip())
    if not match:
        raise UserError(f"student config spec '{spec}': expected the form L4-H256-A4-I1024 (A and I optional)")
    layers, hidden = int(match[1]), int(match[2])
    heads = int(match[3]) if match[3] else max(1, hidden // 64)
    ffn = int(match[4]) if match[4] else 4 * hidden
    zero = [name for name, value in (("L (layers)", layers), ("H (hidden size)", hidden), ("A (heads)", heads),
                                      ("I (FFN size)", ffn)) if value < 1]
    if zero:
        raise UserError(f"student config spec '{spec}': {', '.join(zero)} must be at least 1")
    if hidden % heads:
        raise UserError(f"student config spec '{spec}': hidden size {hidden} is not divisible by {heads} heads; choose "
                        f"H a multiple of A (e.g. L{layers}-H{max(heads, hidden - hidden % heads)}-A{heads})")
    config = copy.deepcopy(teacher_config)
    config.num_hidden_layers, config.hidden_size = layers, hidden
    config.num_attention_heads, config.intermediate_size = heads, ffn
    return config


def _encoder(model: PreTrainedModel) -> BertModel:
    return model.base_model


def layer_subset_student(teacher: PreTrainedModel, layers: list[int], num_labels: int | None = None) -> PreTrainedModel:
    """A same-width student holding copies of the given teacher layers (0-based)."""
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    head_kept = num_labels is None or num_labels == getattr(teacher.config, "num_labels", None)
    student = _new_model(config, num_labels if num_labels is not None else _teacher_labels(teacher))
    source = teacher.state_dict()
    target = student.state_dict()
    prefix = _prefix(teacher)
    new_state = {}
    for key in target:
        match = re.match(rf"^({re.escape(prefix)}encoder\.layer\.)(\d+)\.(.*)$", key)
        source_key = f"{match[1]}{layers[int(match[2])]}.{match[3]}" if match else key
        if source_key.startswith("classifier.") and not head_kept:
            continue
        if source_key in source:
            new_state[key] = source[source_key].detach().clone()
    missing, _ = student.load_state_dict(new_state, strict=False)
    # An encoder without a pooler (e.g. me5-small) gives a student whose fresh pooler is unused.
    teacher_has_pooler = any(key.startswith(f"{prefix}pooler.") for key in source)
    missing = [k for k in missing if teacher_has_pooler or not k.startswith(f"{prefix}pooler.")]
    _check_missing(missing, allow_head=not head_kept)
    return student


def fresh_student(
    teacher: PreTrainedModel, spec: str, num_labels: int | None = None, init: str = "bert", seed: int = 0
) -> PreTrainedModel:
    """A new, smaller BERT (``spec`` like ``'L4-H256-A4-I1024'``) initialised by ``init``."""
    config = parse_config_spec(spec, teacher.config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = _new_model(config, num_labels if num_labels is not None else _teacher_labels(teacher))
    if init == "bert":
        return student
    if init != "slice":
        raise UserError(f"init='{init}' is not known; use 'bert' or 'slice'")
    source = teacher.state_dict()
    new_state = {}
    for key, value in student.state_dict().items():
        if key.startswith("classifier.") or key not in source:
            continue
        teacher_value = source[key]
        if teacher_value.dim() != value.dim() or any(s > t for s, t in zip(value.shape, teacher_value.shape)):
            raise UserError(f"init='slice' needs a student no larger than the teacher in every dimension ({key})")
        new_state[key] = teacher_value[tuple(slice(0, s) for s in value.shape)].detach().clone()
    student.load_state_dict(new_state, strict=False)
    return student


def build_student(
    teacher: PreTrainedModel,
    spec: str,
    num_labels: int | None = None,
    init: str | None = None,
    seed: int = 0,
    sentence_pair: bool = False,
) -> PreTrainedModel:
    """One entry point for every builder: ``config:...`` makes a fresh BERT, ``bilstm[:...]`` a BiLSTM
    classifier, anything else a layer subset. ``init`` defaults to ``"bert"`` for ``config:`` and
    ``"pca"`` for ``bilstm``; ``sentence_pair`` (pair tasks) matters only to the BiLSTM, which
    encodes the two sentences separately."""
    if spec.strip().lower().partition(":")[0] == "bilstm":
        return build_bilstm_student(
            teacher, spec, num_labels=num_labels, init=init or "pca", seed=seed, sentence_pair=sentence_pair
        )
    if spec.lower().startswith("config:"):
        return fresh_student(teacher, spec.split(":", 1)[1], num_labels=num_labels, init=init or "bert", seed=seed)
    return layer_subset_student(teacher, select_layers(spec, teacher.config.num_hidden_layers), num_labels)


def _teacher_labels(teacher: PreTrainedModel) -> int | None:
    return teacher.config.num_labels if isinstance(teacher, BertForSequenceClassification) else None


def _new_model(config: BertConfig, num_labels: int | None) -> PreTrainedModel:
    if num_labels is None:
        return BertModel(config)
    config.num_labels = num_labels
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    return BertForSequenceClassification(config)


def _prefix(model: PreTrainedModel) -> str:
    return "bert." if isinstance(model, BertForSequenceClassification) else ""


def _check_missing(missing: list[str], allow_head: bool) -> None:
    unexplained = [k for k in missing if not (allow_head and k.startswith("classifier."))]
    if unexplained:
        raise RuntimeError(f"student weights not copied from the teacher: {unexplained[:5]}")


def describe(model: PreTrainedModel) -> str:
    """'6L-384H-12A' style shorthand used in tables."""
    c = model.config
    if c.model_type == BILSTM_MODEL_TYPE:
        return f"BiLSTM-{c.num_layers}L-{c.hidden_size}H-{c.embedding_size}E"
    return f"{c.num_hidden_layers}L-{c.hidden_size}H-{c.num_attention_heads}A"

