"""The CKD paper's settings (``ckdlab/configs/paper/<task>.yaml``) and the runs that reproduce its table,
with CoDIR + KD (Sun et al. 2020; each config's ``codir`` section) beside CKD + KD for the 6-layer students.

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

CKD_METHOD, CODIR_METHOD = "CKD + KD", "CoDIR + KD"
PAPER_METHODS = (CKD_METHOD, CODIR_METHOD)


def _paper_standin(spec: str) -> str:
    """A tiny stand-in for a student spec: same layers and heads, 2-wide heads, FFN = 2 x hidden."""
    if not spec.lower().startswith("config:"):
        return spec
    match = _CONFIG_RE.match(spec.split(":", 1)[1])
    layers, heads = int(match[1]), int(match[3] or 1)
    return f"config:L{layers}-H{2 * heads}-A{heads}-I{4 * heads}"


def paper_runs(tasks: Iterable[str] | None = None, dry_run: bool = True, seeds: Iterable[int] | None = None,
               data_dir: str | Path | None = None, methods: Iterable[str] | None = None) -> pd.DataFrame:
    """Every paper config x method x student (x seed): one row each.

    ``methods`` (default: all of :data:`PAPER_METHODS`): ``"CKD + KD"`` for every student of a config, with
    the official weights converted by :func:`official_to_ours`; ``"CoDIR + KD"`` for the students the
    config's ``codir`` section names (the 6-layer ones), with its weights as they are.

    ``dry_run=True`` (tests, CPU): builds each Distiller exactly as the real run would, but with a
    tiny 12-layer stand-in for bert-base-uncased (24 wide, 12 heads), tiny stand-in students (same
    layers and heads) and 8 synthetic examples, then computes the weighted loss of one batch and
    its gradient (the optimiser and data-loader set-up are skipped: they dominate the time here). ``dry_run=False``
    fine-tunes (or reuses) bert-base-uncased under the paper profile and distils every student
    with every seed (GPU work: ``make paper``).
    """
    wanted = list(PAPER_METHODS) if methods is None else list(dict.fromkeys(methods))
    unknown = [m for m in wanted if m not in PAPER_METHODS]
    if unknown or not wanted:
        raise ValueError(f"methods={list(wanted)}: the paper configs have the methods {list(PAPER_METHODS)}")
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
            batch = {**encoded, "labels": torch.tensor(list(train["label"]), dtype=torch.float32 if spec.is_regression else torch.long),
                     "row": torch.arange(len(train))}  # the engine's collator adds each example's row
            lengths = encoded["attention_mask"].sum(dim=1).tolist()
        else:
            lengths = [len(ids) for ids in tokenize_dataset(train, tokenizer, spec, max_length=config["train"]["max_length"])["input_ids"]]
        for name, student_spec in config["students"].items():
            built_spec = _paper_standin(student_spec) if dry_run else student_spec
            for method in wanted:
                if method == CODIR_METHOD and name not in (config.get("codir") or {}).get("students", ()):
                    continue
                student = build_student(teacher, built_spec, num_labels=spec.num_labels)
                pairs = resolve_layer_map(config["layer_map"], teacher.config.num_hidden_layers, student.config.num_hidden_layers)
                if method == CKD_METHOD:
                    settings = {"objective": config["objective"], "temperature": config["temperature"],
                                "objective_options": config["objective_options"],
                                "weights": official_to_ours(config["official_weights"], lengths, len(pairs),
                                                            config["objective_options"].get("window"))}
                else:
                    codir = config["codir"]
                    settings = {"objective": codir["objective"], "temperature": codir["temperature"],
                                "objective_options": dict(codir.get("objective_options") or {}), "weights": dict(codir["weights"])}
                row = {"task": task, "student": name, "spec": student_spec, "method": method, "temperature": settings["temperature"],
                       "lr": config["train"]["lr"], "epochs": config["train"]["epochs"], "layer_pairs": len(pairs),
                       **{f"w.{k}": v for k, v in settings["weights"].items()}}
                if dry_run:
                    train_config = TrainConfig(**{**config["train"], "max_steps": 1, "progress": False})
                    distiller = Distiller(teacher, student, tokenizer, spec, layer_map=config["layer_map"], config=train_config,
                                          train_dataset=train, dev_datasets={"dev": train}, teacher_tokenizer=tokenizer, **settings)
                    for module in distiller.objectives.values():  # what the engine's set-up does (skipped here)
                        if hasattr(module, "bind_training_set"):
                            module.bind_training_set(batch["labels"], spec.is_regression)
                    terms = distiller.compute_terms(batch)
                    loss = sum(distiller.weights[term] * value for term, value in terms.items())
                    loss.backward()
                    rows.append({**row, "loss": float(loss.detach()), "terms": ",".join(sorted(terms))})
                    continue
                for seed in seeds if seeds is not None else config["seeds"]:
                    record = distill(task, student=student_spec, student_name=name, method=f"{method} (paper)", profile="paper",
                                     teacher=teacher_dir_, seed=seed, layer_map=config["layer_map"], data_dir=data_dir,
                                     **settings, **config["train"])
                    rows.append({**row, "seed": seed, "score": record["score"]})
    return pd.DataFrame(rows)
