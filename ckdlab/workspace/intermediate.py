"""Intermediate training: a teacher first fine-tuned on a related, larger task, then on its own.

RTE has 2,490 training pairs; MiniLM-L6 fine-tuned on them alone stays near the majority class.
Fine-tuning on English MultiNLI first (the 9,000-pair class-balanced sample of the shared data,
``xnli/hf/train-en-sample9k.jsonl``; selected on the XNLI English dev set, which is neither in the
sample nor in RTE) and then on RTE is a standard recipe (STILTs, Phang et al. 2018). A profile asks
for it per task::

    finetune:
      tasks:
        rte: {intermediate: {task: mnli, train_limit: 9000, epochs: 1, lr: 5.0e-5, head_init: nli}}

``task`` is the intermediate task, ``head_init`` how the target task's classifier starts
(:data:`HEAD_INITS`), every other key a training option of the intermediate run (over the
``finetune`` defaults). The target run copies the intermediate model's encoder and pooler; its
identity holds the intermediate run's identity, so changed intermediate settings train a new teacher.
"""
from __future__ import annotations

import math
import os
from typing import Any

import datasets
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from ckdlab.data import TaskSpec, get_task, paths
from ckdlab.data.xnli import MNLI_HUB_CONFIG, MNLI_HUB_ID, MNLI_SAMPLE_FILE, load_mnli_english_train, load_xnli

INTERMEDIATE_TASKS = ("mnli",)
# fresh: the target task's own newly initialised head; nli: a 3-way NLI head mapped onto
# entailment / not_entailment (:func:`nli_head_to_binary`).
HEAD_INITS = ("fresh", "nli")
STAGE_OPTIONS = ("task", "head_init")
NLI_LABELS = ("entailment", "neutral", "contradiction")
BINARY_ENTAILMENT_LABELS = ("entailment", "not_entailment")
XNLI_EN_DEV_FILE = "xnli/xtreme/dev-en.tsv"


def check_intermediate(settings: dict[str, Any], target: str | TaskSpec) -> tuple[TaskSpec, str, dict[str, Any]]:
    """``(intermediate task, head_init, training options)`` of a profile's ``intermediate:`` entry
    for ``target``, after checking the task and the head mapping fit."""
    spec, target = get_task(settings["task"]), get_task(target)
    where = f"finetune.tasks.{target.name}.intermediate"
    if spec.name == target.name:
        raise ValueError(f"{where}.task is the task itself ({spec.name}); name another task or drop 'intermediate'")
    if spec.name not in INTERMEDIATE_TASKS:
        raise ValueError(f"{where}.task is {spec.name!r}; intermediate training supports {list(INTERMEDIATE_TASKS)}")
    head_init = settings.get("head_init", "fresh")
    if head_init not in HEAD_INITS:
        raise ValueError(f"{where}.head_init is {head_init!r}; use one of {list(HEAD_INITS)}")
    if head_init == "nli" and (tuple(spec.label_names) != NLI_LABELS or tuple(target.label_names) != BINARY_ENTAILMENT_LABELS):
        raise ValueError(f"{where}.head_init 'nli' maps labels {list(NLI_LABELS)} onto {list(BINARY_ENTAILMENT_LABELS)}, "
                         f"but {spec.name} -> {target.name} has {list(spec.label_names)} -> {list(target.label_names)}; "
                         "use head_init: fresh")
    options = {k: v for k, v in settings.items() if k not in STAGE_OPTIONS}
    return spec, head_init, options


def intermediate_datasets(task: str | TaskSpec, train_limit: int | None, dev_limit: int | None, seed: int,
                          data_dir: str | os.PathLike | None = None) -> tuple[datasets.Dataset, dict[str, datasets.Dataset]]:
    """``(train, {"dev": dev})`` of an intermediate task. MNLI: the English MultiNLI sample (seeded
    subset of ``train_limit`` pairs; the hub's full train split without the local file) and the XNLI
    English dev set (``dev_limit`` pairs, seed 0, so every seed is selected on the same pairs)."""
    spec = get_task(task)
    if spec.name != "mnli":
        raise ValueError(f"no intermediate data for {spec.name!r}; supported: {list(INTERMEDIATE_TASKS)}")
    train = load_mnli_english_train(data_dir, limit=train_limit, seed=seed)
    dev = load_xnli("en", "dev", data_dir=data_dir, limit=dev_limit, seed=0)
    return train, {"dev": dev}


def intermediate_data_identity(task: str | TaskSpec, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Which files (relative name and size, or hub split) :func:`intermediate_datasets` reads."""
    spec = get_task(task)
    if spec.name != "mnli":
        raise ValueError(f"no intermediate data for {spec.name!r}; supported: {list(INTERMEDIATE_TASKS)}")
    identity = {}
    for split, relative, hub in (("train", MNLI_SAMPLE_FILE, f"{MNLI_HUB_ID}/{MNLI_HUB_CONFIG}:train"),
                                 ("dev", XNLI_EN_DEV_FILE, "facebook/xnli/en:validation")):
        found = paths.find_local(relative, data_dir)
        identity[split] = {"file": relative, "bytes": found.stat().st_size} if found is not None else {"hub": hub}
    return identity


def nli_head_to_binary(weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An entailment / not_entailment head from a 3-way NLI head (rows entailment, neutral, contradiction).

    With ``W`` (3 x H) and ``b`` (3) the NLI head:

        W'_ent = W_ent,                    b'_ent = b_ent
        W'_not = (W_neu + W_con) / 2,      b'_not = (b_neu + b_con) / 2 + log 2

    Why: not_entailment's logit should be ``log(exp(z_neu) + exp(z_con))``; a linear head cannot
    hold that log-sum-exp, but where ``z_neu = z_con`` it equals their mean plus ``log 2``. Then the
    2-way softmax gives the 3-way model's entailment probability, so the target task starts from the
    intermediate model's predictions (measured on RTE dev: 0.617 before any RTE step, against 0.527
    for the majority class). Returns new tensors ``(W' (2 x H), b' (2))``; the inputs are not changed.
    """
    if weight.dim() != 2 or weight.shape[0] != 3 or bias.shape != (3,):
        raise ValueError(f"nli_head_to_binary needs a 3-way head (weight 3 x H, bias 3); got weight {tuple(weight.shape)}, "
                         f"bias {tuple(bias.shape)}")
    new_weight = torch.stack([weight[0], (weight[1] + weight[2]) / 2])
    new_bias = torch.stack([bias[0], (bias[1] + bias[2]) / 2 + math.log(2.0)])
    return new_weight, new_bias


def _head(model: PreTrainedModel) -> nn.Linear:
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"{type(model).__name__} has no linear 'classifier' head; intermediate training supports "
                         "BERT-style sequence classifiers")
    return head


def init_from_intermediate(model: PreTrainedModel, source: str | os.PathLike, head_init: str = "fresh") -> PreTrainedModel:
    """Start ``model`` (a sequence classifier of the target task) from the intermediate run's model
    folder ``source``: its encoder and pooler are copied, and the head is ``model``'s own
    (``fresh``) or the source's NLI head mapped by :func:`nli_head_to_binary` (``nli``)."""
    if head_init not in HEAD_INITS:
        raise ValueError(f"head_init is {head_init!r}; use one of {list(HEAD_INITS)}")
    trained = AutoModelForSequenceClassification.from_pretrained(source)
    model.base_model.load_state_dict(trained.base_model.state_dict(), strict=True)
    if head_init == "nli":
        source_head, head = _head(trained), _head(model)
        weight, bias = nli_head_to_binary(source_head.weight.detach(), source_head.bias.detach())
        if weight.shape != head.weight.shape:
            raise ValueError(f"the mapped NLI head is {tuple(weight.shape)} but the target head is {tuple(head.weight.shape)}")
        with torch.no_grad():
            head.weight.copy_(weight)
            head.bias.copy_(bias)
    return model
