"""Notebook 07: the AMoC study -- base models, layer-removal candidates, their predictions, the tables.

For every source domain of the chosen pairs (:func:`study_pairs`):

1. **Base model**: the family's model (or the profile's ``base_model``) fine-tuned on the source's
   ``train`` role, checkpoint chosen on its ``source_dev`` role, on the one :class:`~ckdlab.engine.Trainer`
   in a run folder of its own (``runs/<profile>/amoc/<source>/base-<id>``; run identity, resume, a record).
2. **Candidates** (they depend on the source only, so the pairs sharing a source share them): every
   set of removed layers from :func:`~ckdlab.models.layer_removal.candidate_sets` (a seeded sample when
   ``candidates_per_source`` is set), the layers bypassed by :func:`~ckdlab.models.layer_removal.remove_layers`,
   then briefly fine-tuned on a subset of the source's training data with only the layer below each
   removed run (or the embeddings) and the head trainable (:func:`~ckdlab.models.layer_removal.freeze_for_candidate`).
   The candidate is the model at the end of that brief training (no checkpoint choice: the source dev
   score is a *feature*). A candidate's folder keeps its predictions, not its weights.
3. **Predictions** of the base model and of every candidate on the source dev text and on each
   target's unlabelled text and labelled test split, and the base model's sentence vectors (masked
   mean of the last hidden state) of the source's and each target's unlabelled text.
4. **The candidates table** (:mod:`ckdlab.studies.amoc`): per (pair, candidate) the target test score,
   the ATE on target and on source text, the source dev score, the layer features, the parameters and
   the domain distance; one full-model row per pair. :mod:`ckdlab.studies.amoc_report` fits the
   regression, makes AMoC's choices and the main table from it.

Dev discipline: nothing here chooses anything with a test split; the test logits are only scored.
The ``amoc`` section of a profile (:mod:`ckdlab.studies.amoc_settings`) sets the families and pairs,
the sizes and the training. A candidate's logits are kept on disk by run identity, so a second run of
the notebook trains nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from ckdlab.data import DynamicPaddingCollator, TaskSpec, compute_metrics, tokenize_dataset
from ckdlab.data.domains import FAMILIES, Domain
from ckdlab.engine import TrainConfig, Trainer
from ckdlab.io import atomic_write_json
from ckdlab.models import build_student, count_parameters, load_backbone, model_inputs
from ckdlab.models.layer_removal import candidate_sets, default_max_removed, freeze_for_candidate, remove_layers
from ckdlab.objectives.sentence import masked_mean
from ckdlab.studies.amoc import (
    average_treatment_effect,
    average_treatment_effect_regression,
    candidate_record,
    class_probabilities,
    domain_distance,
    format_removed,
)
from ckdlab.studies.amoc_settings import configure, family_limits, stage_config, study_pairs
from ckdlab.workspace import RunIdentity, model_reference, open_run, record_run, results_dir, runs_dir, training_identity
from ckdlab.workspace.records import record_path

# --------------------------------------------------------------------------- predictions


def dataset_fingerprint(ds: datasets.Dataset) -> str:
    """SHA-256 (16 hex digits) of a dataset's columns and rows: which data a run read, by content."""
    digest = hashlib.sha256(json.dumps(ds.column_names).encode())
    for row in ds:
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


@torch.no_grad()
def _run_batches(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, tokenized: datasets.Dataset,
                 batch_size: int, outputs: Callable[[PreTrainedModel, dict[str, torch.Tensor]], torch.Tensor]) -> np.ndarray:
    """``outputs(model, inputs)`` over a tokenised dataset in eval mode, rows back in the dataset's order
    (batches of similar length waste little compute on padding)."""
    order = np.argsort([len(ids) for ids in tokenized["input_ids"]], kind="stable")
    loader = DataLoader(tokenized.select(order), batch_size=batch_size, collate_fn=DynamicPaddingCollator(tokenizer))
    was_training = model.training
    model.eval()
    chunks = [outputs(model, {k: v.to(model.device) for k, v in model_inputs(batch).items()}).float().cpu().numpy()
              for batch in loader]
    model.train(was_training)
    result = np.empty((len(tokenized), chunks[0].shape[1]), dtype=np.float32)
    result[order] = np.concatenate(chunks)
    return result


def _logits(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**inputs).logits


def _mean_last_state(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return masked_mean(model.base_model(**inputs).last_hidden_state, inputs["attention_mask"])


def sentence_vectors(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dataset: datasets.Dataset,
                     task: TaskSpec, batch_size: int = 64, max_length: int = 128) -> np.ndarray:
    """``[N, d]`` masked means of the encoder's last hidden state (a pair task encodes the pair jointly),
    in the order of ``dataset``'s rows."""
    tokenized = tokenize_dataset(dataset, tokenizer, task, max_length=max_length)
    return _run_batches(model, tokenizer, tokenized, batch_size, _mean_last_state)


def _save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` written to a temporary sibling and renamed into place (never half-written).
    Set names hold ``:``, which a member name of the zip file had better not: stored as ``__``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **{key.replace(":", "__"): value for key, value in arrays.items()})
        os.replace(tmp, path)
    except BaseException:  # no half-written file left behind; the error goes on
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path) as stored:
        return {key.replace("__", ":"): stored[key] for key in stored.files}


def score(task: TaskSpec, logits: np.ndarray, ds: datasets.Dataset) -> float:
    """The task's headline metric (accuracy; Spearman for STS-B) of ``logits`` on labelled ``ds``."""
    predictions = logits[:, 0] if task.is_regression else logits
    return float(compute_metrics(task, predictions, np.asarray(ds["label"]))[task.headline])


def treatment_effect(task: TaskSpec, full_logits: np.ndarray, removed_logits: np.ndarray) -> float:
    """ATE of a removal: total variation of the class distributions, or |Δŷ| for regression."""
    if task.is_regression:
        return average_treatment_effect_regression(full_logits[:, 0], removed_logits[:, 0])
    return average_treatment_effect(class_probabilities(full_logits), class_probabilities(removed_logits))


# --------------------------------------------------------------------------- base models and candidates


@dataclass
class SourceRun:
    """What one source domain contributes: its base model and the data every candidate is scored on."""

    family: str
    source: Domain
    targets: list[Domain]
    folder: Path
    identity: RunIdentity
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    eval_sets: dict[str, datasets.Dataset]
    summary: dict[str, Any]
    eval_identity: dict[str, Any] = field(default_factory=dict)
    tokenized: dict[str, datasets.Dataset] = field(default_factory=dict)

    @property
    def task(self) -> TaskSpec:
        return self.source.task


def _initial_model(settings: Mapping[str, Any], family: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    task = FAMILIES[family].task
    model, tokenizer = load_backbone(str(settings["base_model"] or FAMILIES[family].base_model), num_labels=task.num_labels,
                                     seed=settings["seed"])
    if settings["base_shrink"]:  # the smoke profile: a small model cut out of the real one, same vocabulary
        model = build_student(model, settings["base_shrink"], num_labels=task.num_labels, init="slice", seed=settings["seed"])
    return model, tokenizer


def prepare_source(settings: Mapping[str, Any], family: str, source: Domain, targets: Sequence[Domain],
                   data_dir: str | os.PathLike | None = None, resume: bool = True, record: bool = True) -> SourceRun:
    """Fine-tune (or find) the base model of ``source`` and load the evaluation sets of its pairs."""
    limits, seed = family_limits(settings, family), settings["seed"]
    config = stage_config(settings, family, "base", limits["train"])
    train = source.load("train", data_dir, limits["train"], seed)
    eval_sets = {"source_dev": source.load("source_dev", data_dir, limits["source_dev"], seed),
                 f"unlabeled:{source.name}": source.load("unlabeled", data_dir, limits["unlabeled"], seed)}
    for target in targets:
        eval_sets[f"unlabeled:{target.name}"] = target.load("unlabeled", data_dir, limits["unlabeled"], seed)
        eval_sets[f"test:{target.name}"] = target.load("test", data_dir, limits["test"], seed)
    name = str(settings["base_model"] or FAMILIES[family].base_model)
    identity = RunIdentity("amoc_base", seed, {
        "family": family, "domain": source.name, "key": source.key, "model": model_reference(name),
        "shrink": settings["base_shrink"], "train": training_identity(config),
        "data": {"train": dataset_fingerprint(train), "source_dev": dataset_fingerprint(eval_sets["source_dev"])},
    })
    folder = runs_dir() / settings["name"] / "amoc" / source.name / f"base-{identity.short}"
    state = open_run(folder, identity, resume, option="the AMoC base run folder")
    start = time.perf_counter()
    if state != "finished":
        model, tokenizer = _initial_model(settings, family)
        trainer = Trainer(model, tokenizer, source.task, config, out_dir=folder, train_dataset=train,
                          dev_datasets={"dev": eval_sets["source_dev"]})
        trainer.train(resume=state == "resume")
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    model, tokenizer = load_backbone(folder / "best", num_labels=source.task.num_labels)
    if record and not record_path(results_dir(), identity.run_id).exists():
        record_run({
            "run_id": identity.run_id, "config_id": identity.config_id, "kind": "amoc-base", "profile": settings["name"],
            "task": source.task.name, "domain": source.name, "family": family, "teacher": name, "student": name,
            "method": "fine-tune", "seed": seed, "config": config.to_dict(), "train_examples": summary["train_examples"],
            "metrics": {k: v for k, v in (summary.get("best_metrics") or {}).items() if k != "step"},
            "score": summary["best_score"], "out_dir": str(folder), "wall_time_s": summary.get("wall_time_s", time.perf_counter() - start),
        }, results_dir())
    options = dict(settings["eval"])
    # Tokenised once per source, not once per candidate (each tokenisation also hashes the tokenizer).
    tokenized = {k: tokenize_dataset(ds, tokenizer, source.task, max_length=options.get("max_length", 128)) for k, ds in eval_sets.items()}
    return SourceRun(family, source, list(targets), folder, identity, model, tokenizer, eval_sets, summary,
                     {"sets": {k: dataset_fingerprint(ds) for k, ds in eval_sets.items()}, "options": options}, tokenized)


def _predict_all(model: PreTrainedModel, run: SourceRun, settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Logits on every evaluation set but the source's unlabelled text (only its sentence vectors are used)."""
    batch_size = int(settings["eval"].get("batch_size", 64))
    return {name: _run_batches(model, run.tokenizer, tokenized, batch_size, _logits) for name, tokenized in run.tokenized.items()
            if name != f"unlabeled:{run.source.name}"}


def base_outputs(run: SourceRun, settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The base model's logits on every evaluation set and its sentence vectors (``vectors:<domain>``)
    of the unlabelled text of the source and of each target; kept in the base run folder."""
    key = RunIdentity("amoc_base_outputs", settings["seed"], {"base": run.identity.run_id, **run.eval_identity})
    path = run.folder / f"outputs-{key.short}.npz"
    stored = _load_arrays(path)
    if stored is not None:
        return stored
    outputs = _predict_all(run.model, run, settings)
    for domain in [run.source, *run.targets]:
        outputs[f"vectors:{domain.name}"] = _run_batches(run.model, run.tokenizer, run.tokenized[f"unlabeled:{domain.name}"],
                                                         int(settings["eval"].get("batch_size", 64)), _mean_last_state)
    _save_arrays(path, outputs)
    return outputs


def train_candidate(base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: TaskSpec, removed: Sequence[int],
                    train: datasets.Dataset, config: TrainConfig) -> tuple[PreTrainedModel, list[str], dict[str, Any]]:
    """A candidate: ``base`` without the layers ``removed``, briefly fine-tuned on ``train`` with only the
    parameters :func:`~ckdlab.models.layer_removal.freeze_for_candidate` leaves trainable. ``base`` is not
    changed. Returns ``(candidate, trainable parameter names, the trainer's summary)``."""
    candidate = remove_layers(base, removed)
    trainable = freeze_for_candidate(candidate, removed)
    # No dev set: the candidate is the model after its brief training; its source dev score is a feature.
    trainer = Trainer(candidate, tokenizer, task, config, train_dataset=train, dev_datasets={})
    summary = trainer.train()
    return trainer.unwrapped_model(), trainable, summary


def run_candidate(run: SourceRun, removed: Sequence[int], settings: Mapping[str, Any], train: datasets.Dataset,
                  train_id: str | None = None, resume: bool = True, record: bool = True) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Remove ``removed`` from the base model, fine-tune it briefly (freezing rule), predict every
    evaluation set. Returns ``(logits by set name, summary)``; a finished identical run is read back."""
    config = stage_config(settings, run.family, "candidate", family_limits(settings, run.family)["candidate_train"])
    identity = RunIdentity("amoc_candidate", settings["seed"], {
        "base": run.identity.run_id, "removed": sorted(int(i) for i in removed), "train": training_identity(config),
        "data": train_id or dataset_fingerprint(train), "eval": run.eval_identity,
    })
    label = "-".join(str(i) for i in sorted(removed))
    folder = runs_dir() / settings["name"] / "amoc" / run.source.name / f"candidates-{run.identity.short}" / f"drop{label}-{identity.short}"
    state = open_run(folder, identity, resume, option="the AMoC candidate run folder")
    stored = _load_arrays(folder / "predictions.npz") if state == "finished" else None
    if stored is not None:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        return stored, summary
    start = time.perf_counter()
    candidate, trainable, trained = train_candidate(run.model, run.tokenizer, run.task, removed, train, config)
    logits = _predict_all(candidate, run, settings)
    summary = {"finished": True, "removed": sorted(int(i) for i in removed), "steps": trained["steps"],
               "train_examples": trained["train_examples"], "trainable": trainable,
               "params": count_parameters(candidate)["total"], "wall_time_s": time.perf_counter() - start}
    _save_arrays(folder / "predictions.npz", logits)
    atomic_write_json(folder / "summary.json", summary)
    if record:
        metrics = {"source_dev": score(run.task, logits["source_dev"], run.eval_sets["source_dev"])}
        metrics.update({f"test:{t.name}": score(run.task, logits[f"test:{t.name}"], run.eval_sets[f"test:{t.name}"]) for t in run.targets})
        record_run({
            "run_id": identity.run_id, "config_id": identity.config_id, "kind": "amoc-candidate", "profile": settings["name"],
            "task": run.task.name, "domain": run.source.name, "family": run.family, "teacher": str(run.folder / "best"),
            "student": f"drop {format_removed(removed)}", "method": "amoc candidate", "seed": settings["seed"],
            "config": config.to_dict(), "metrics": metrics, "score": metrics["source_dev"], "params": summary["params"],
            "out_dir": str(folder), "wall_time_s": summary["wall_time_s"],
        }, results_dir())
    return logits, summary


# --------------------------------------------------------------------------- the study


@dataclass
class AmocResult:
    """What :func:`run_amoc` returns: the candidates table (one row per pair and model, with ``family``,
    ``source``, ``target`` and ``target_majority_share``, the share of the target test set given the most
    frequent predicted class: NaN for regression), the logits of every model (``(source, removed) -> {set: logits}``,
    ``removed`` as in the table, ``""`` for the base model), the base runs' summaries and timings."""

    settings: dict[str, Any]
    candidates: pd.DataFrame
    logits: dict[tuple[str, str], dict[str, np.ndarray]]
    bases: dict[str, dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)

    def family(self, family: str) -> pd.DataFrame:
        """The candidates table of one family (the unit the regression is fitted on)."""
        return self.candidates[self.candidates["family"] == family].reset_index(drop=True)


def _pair_rows(run: SourceRun, target: Domain, removed: Sequence[int], logits: Mapping[str, np.ndarray],
               base: Mapping[str, np.ndarray], params: int, distance: float, n_layers: int) -> dict[str, Any]:
    test = f"test:{target.name}"
    row = candidate_record(
        f"{run.source.name}->{target.name}", removed, n_layers,
        target_score=score(run.task, logits[test], run.eval_sets[test]),
        source_dev_score=score(run.task, logits["source_dev"], run.eval_sets["source_dev"]),
        ate_target=treatment_effect(run.task, base[f"unlabeled:{target.name}"], logits[f"unlabeled:{target.name}"]),
        ate_source=treatment_effect(run.task, base["source_dev"], logits["source_dev"]),
        params=params, domain_distance=distance,
    )
    # How much of the target test set gets the most frequent predicted class: near 1, the model has
    # collapsed to one class (a brief fine-tuning can leave a candidate there). Not a feature.
    majority = float("nan") if run.task.is_regression else float(np.bincount(logits[test].argmax(1)).max() / len(logits[test]))
    return {"family": run.family, "source": run.source.name, "target": target.name, **row, "target_majority_share": majority}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No per-load progress bars or head-initialisation reports: the study loads dozens of datasets and
    models, and its own bar over the candidates says how far it is."""
    datasets_bars, model_bars = datasets.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    verbosity = transformers_logging.get_verbosity()
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if model_bars:
            transformers_logging.enable_progress_bar()
        if datasets_bars:
            datasets.enable_progress_bars()


def run_amoc(profile: str | os.PathLike | Mapping[str, Any] = "quick", families: Sequence[str] | None = None,
             candidates_per_source: int | None = None, data_dir: str | os.PathLike | None = None, resume: bool = True,
             record: bool = True, progress: bool = True, **overrides: Any) -> AmocResult:
    """Run the study of :func:`configure`'s settings (see the module docstring) and return the
    candidates table with every model's logits. Finished runs (same identity) are read back."""
    settings = configure(profile, families, candidates_per_source, **overrides)
    with _quiet():
        return _run(settings, data_dir, resume, record, progress)


def _run(settings: dict[str, Any], data_dir: str | os.PathLike | None, resume: bool, record: bool, progress: bool) -> AmocResult:
    """:func:`run_amoc`'s loop over the sources: base model, its outputs and distances, the candidates."""
    rows, all_logits, bases = [], {}, {}
    timings = {"base_s": 0.0, "candidates_s": 0.0, "outputs_s": 0.0}
    plan = study_pairs(settings)
    sources = [(family, pair.source, [p.target for p in pairs if p.source == pair.source])
               for family, pairs in plan.items() for pair in {p.source.name: p for p in pairs}.values()]
    for family, source, targets in sources:
        start = time.perf_counter()
        run = prepare_source(settings, family, source, targets, data_dir, resume, record)
        timings["base_s"] += time.perf_counter() - start
        start = time.perf_counter()
        base = base_outputs(run, settings)
        distances = {t.name: domain_distance(base[f"vectors:{source.name}"], base[f"vectors:{t.name}"], seed=settings["seed"])
                     for t in targets}
        timings["outputs_s"] += time.perf_counter() - start
        n_layers = int(run.model.config.num_hidden_layers)
        bases[source.name] = {**run.summary, "folder": str(run.folder), "n_layers": n_layers}
        all_logits[(source.name, "")] = base
        params = count_parameters(run.model)["total"]
        rows += [_pair_rows(run, t, (), base, base, params, distances[t.name], n_layers) for t in targets]
        max_removed = settings["max_removed"] or default_max_removed(n_layers)
        sets = candidate_sets(n_layers, max_removed, settings["candidates_per_source"], seed=settings["seed"])
        train = source.load("train", data_dir, family_limits(settings, family)["candidate_train"], settings["seed"])
        train_id = dataset_fingerprint(train)
        start = time.perf_counter()
        for removed in tqdm(sets, desc=f"{source.name} candidates", disable=not progress, leave=False):
            logits, summary = run_candidate(run, removed, settings, train, train_id, resume, record)
            all_logits[(source.name, format_removed(removed))] = logits
            rows += [_pair_rows(run, t, removed, logits, base, summary["params"], distances[t.name], n_layers) for t in targets]
        timings["candidates_s"] += time.perf_counter() - start
    return AmocResult(settings, pd.DataFrame(rows), all_logits, bases, timings)
