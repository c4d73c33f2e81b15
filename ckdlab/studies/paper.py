"""The CKD paper's settings (``ckdlab/configs/paper/<task>.yaml``) and the runs that reproduce its table.

``paper_runs(dry_run=True)`` builds every paper run on tiny stand-ins and takes one step (a CPU
check that the configs are valid); ``dry_run=False`` is GPU work (``make paper``).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from datasets import Dataset
from transformers import BertConfig, BertForSequenceClassification

from ckdlab.data import get_task, load_task, tokenize_dataset
from ckdlab.engine import Distiller, TrainConfig
from ckdlab.models import build_student, load_backbone, load_tokenizer
from ckdlab.models.students import _CONFIG_RE
from ckdlab.objectives.ckd_weights import official_to_ours
from ckdlab.objectives.layer_map import resolve_layer_map
from ckdlab.profiles import paper_configs
from ckdlab.studies.distillation import distill
from ckdlab.workspace import ensure_teacher



def _paper_standin(spec: str) -> str:
    """A tiny stand-in for a student spec: same layers and heads, 2-wide heads, FFN = 2 x hidden."""
    if not spec.lower().startswith("config:"):
        return spec
    match = _CONFIG_RE.match(spec.split(":", 1)[1])
    layers, heads = int(match[1]), int(match[3] or 1)
    return f"config:L{layers}-H{2 * heads}-A{heads}-I{4 * heads}"


def paper_runs(tasks: Iterable[str] | None = None, dry_run: bool = True, seeds: Iterable[int] | None = None,
               data_dir: str | Path | None = None) -> pd.DataFrame:
    """Every paper config x student (x seed): one row each.

    ``dry_run=True`` (tests, CPU): builds each Distiller exactly as the real run would, but with a
    tiny 12-layer stand-in for bert-base-uncased (24 wide, 12 heads), tiny stand-in students (same
    layers and heads) and 8 synthetic examples, then computes the weighted loss of one batch and
    its gradient (the optimiser and data-loader set-up are skipped: they dominate the time here). ``dry_run=False``
    fine-tunes (or reuses) bert-base-uncased under the paper profile and distils every student
    with every seed (GPU work: ``make paper``).
    """
    rows = []
    for task, config in paper_configs(tasks).items():
        spec = get_task(task)
        if dry_run:
            tokenizer = load_tokenizer("tiny-random")
            texts = ["a tiny stand-in sentence for the dry run", "another short one", "the third example here, longer than the others"]
            data = {field: [texts[i % 3] for i in range(8)] for field in spec.text_fields}
            data["label"] = [float(i % 5) for i in range(8)] if spec.is_regression else [i % spec.num_labels for i in range(8)]
            train = Dataset.from_dict(data)
            teacher_config = BertConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=12, num_attention_heads=12,
                                        intermediate_size=48, num_labels=spec.num_labels)
            teacher = BertForSequenceClassification(teacher_config)
        else:
            teacher_dir_ = ensure_teacher(task, "paper", data_dir=data_dir)
            teacher, tokenizer = load_backbone(teacher_dir_, num_labels=spec.num_labels)
            train = load_task(task, "train", data_dir=data_dir)
        if dry_run:
            encoded = tokenizer(*[list(train[f]) for f in spec.text_fields], truncation=True, max_length=config["train"]["max_length"],
                                padding=True, return_tensors="pt")
            batch = {**encoded, "labels": torch.tensor(list(train["label"]), dtype=torch.float32 if spec.is_regression else torch.long)}
            lengths = encoded["attention_mask"].sum(dim=1).tolist()
        else:
            lengths = [len(ids) for ids in tokenize_dataset(train, tokenizer, spec, max_length=config["train"]["max_length"])["input_ids"]]
        for name, student_spec in config["students"].items():
            built_spec = _paper_standin(student_spec) if dry_run else student_spec
            student = build_student(teacher, built_spec, num_labels=spec.num_labels)
            pairs = resolve_layer_map(config["layer_map"], teacher.config.num_hidden_layers, student.config.num_hidden_layers)
            weights = official_to_ours(config["official_weights"], lengths, len(pairs), config["objective_options"].get("window"))
            row = {"task": task, "student": name, "spec": student_spec, "temperature": config["temperature"],
                   "lr": config["train"]["lr"], "epochs": config["train"]["epochs"], "layer_pairs": len(pairs), **{f"w.{k}": v for k, v in weights.items()}}
            if dry_run:
                train_config = TrainConfig(**{**config["train"], "max_steps": 1, "progress": False})
                distiller = Distiller(teacher, student, tokenizer, spec, objective=config["objective"], weights=weights,
                                      temperature=config["temperature"], layer_map=config["layer_map"],
                                      objective_options=config["objective_options"], config=train_config,
                                      train_dataset=train, dev_datasets={"dev": train}, teacher_tokenizer=tokenizer)
                terms = distiller.compute_terms(batch)
                loss = sum(distiller.weights[name] * value for name, value in terms.items())
                loss.backward()
                rows.append({**row, "loss": float(loss.detach()), "terms": ",".join(sorted(terms))})
                continue
            for seed in seeds if seeds is not None else config["seeds"]:
                record = distill(task, student=student_spec, student_name=name, method="CKD + KD (paper)", profile="paper",
                                 teacher=teacher_dir_, seed=seed, objective=config["objective"], weights=weights,
                                 temperature=config["temperature"], layer_map=config["layer_map"],
                                 objective_options=config["objective_options"], data_dir=data_dir, **config["train"])
                rows.append({**row, "seed": seed, "score": record["score"]})
    return pd.DataFrame(rows)
