"""Notebook 05: DynaBERT (Hou et al., NeurIPS 2020) trained with its own loss or with CKD + KD.

The CKD paper reports CKD "in combination with DynaBERT"; its authors never released that code,
so this study implements the procedure (the mechanics live in :mod:`ckdlab.models.dynabert`):

1. importance of heads and FFN neurons on *training* data, then rewiring (most important first);
2. stage "width" (DynaBERT_W): every step sums the losses of all width sub-networks at full depth;
3. stage "depth" (DynaBERT): every step sums over all width x depth sub-networks.

The teacher is the fine-tuned full model in both stages (the official depth stage distils from
the width-adaptive model at the same width instead). Losses (``loss=``): ``"dynabert"`` (the
registered objective ``dynabert``: soft cross-entropy + hidden MSE; official weights 1 and 0.1
in the width stage, 1 and 1 in the depth stage) or ``"ckd+kd"`` (CKD relations on the same
matched states plus logit KD; a sub-network too shallow for an LTR term skips it).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
from torch import Tensor
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from ckdlab.data import DynamicPaddingCollator, compute_metrics, get_task, load_task, tokenize_dataset
from ckdlab.engine import Distiller
from ckdlab.io import atomic_write_json
from ckdlab.models import load_backbone, size_summary
from ckdlab.models.dynabert import (
    DEPTHS,
    WIDTHS,
    _check_multiplier,
    _geometry,
    compute_importance,
    depth_layer_map,
    extract_subnetwork,
    rewire,
    subnetwork,
)
from ckdlab.models.outputs import ModelOutputs, forward_outputs
from ckdlab.profiles import load_profile, profile_config, profile_section
from ckdlab.workspace import RunIdentity, data_identity, load_teacher, model_reference, open_run, record_run
from ckdlab.workspace import results_dir, runs_dir, training_identity
from ckdlab.workspace.records import read_record, record_path

LOSSES = ("dynabert", "ckd+kd")
STAGE_WEIGHTS = {"width": {"dyna_logit": 1.0, "dyna_hidden": 0.1}, "depth": {"dyna_logit": 1.0, "dyna_hidden": 1.0}}
GRIDS = ("reduced", "full")
ROW_COLUMNS = ["task", "method", "loss", "seed", "student", "width", "depth", "score", "params", "latency_ms"]


def subnetwork_key(width: float, depth: float) -> str:
    return f"w{width:g}_d{depth:g}"


class DynaBERTDistiller(Distiller):
    """Trains the sub-networks of ``student`` (a rewired copy of the teacher) jointly.

    Each step sums the loss of every (width, depth) in ``widths`` x ``depths``, so one optimiser
    step follows the sum of their gradients. Evaluation scores every sub-network
    (``score@w0.5_d1``...) and reports their mean as ``score`` (the best checkpoint is the best
    on average).
    """

    # Teacher states are re-selected per sub-network depth, so the same row means different layers.
    rows_fixed = False

    def __init__(self, teacher: PreTrainedModel, student: PreTrainedModel, tokenizer: Any, task: Any, *,
                 loss: str = "dynabert", widths: Sequence[float] = WIDTHS, depths: Sequence[float] = (1.0,),
                 weights: dict[str, float] | None = None, **kwargs: Any) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is not known; use one of {LOSSES}")
        if _geometry(teacher)[0] != _geometry(student)[0]:
            raise ValueError("DynaBERT's student is a (rewired) copy of the teacher: both need the same number of layers")
        self.loss_kind = loss
        self.widths = sorted({_check_multiplier("width", w) for w in widths}, reverse=True)
        self.depths = sorted({_check_multiplier("depth", d) for d in depths}, reverse=True)
        kwargs.pop("layer_map", None)
        if loss == "dynabert":
            weights = {**STAGE_WEIGHTS["depth" if self.depths != [1.0] else "width"], **(weights or {})}
        super().__init__(teacher, student, tokenizer, task, objective=loss, weights=weights, layer_map="uniform", **kwargs)
        if "ckd" in self.objectives:
            # States are pre-selected per sub-network depth: pair them one to one, whatever their number.
            self.objectives["ckd"].loss.layer_map = "uniform"

    def subnetworks(self) -> list[tuple[float, float]]:
        return [(w, d) for d in self.depths for w in self.widths]

    def compute_terms(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        teacher = self.teacher_outputs(batch, {"logits", "hidden_states"})
        inputs = self.model_inputs(batch)
        n_layers = _geometry(self.unwrapped_model())[0]
        active = self._active()
        terms: dict[str, Tensor] = {}
        for width, depth in self.subnetworks():
            with subnetwork(self.unwrapped_model(), width, depth):
                student = forward_outputs(self.model, inputs, {"hidden_states"})
            pairs = depth_layer_map(n_layers, depth)
            aligned = ModelOutputs(logits=teacher.logits, hidden_states=tuple(teacher.hidden_states[t] for t, _ in pairs))
            weights = dict(self.weights)
            # LTR needs 2 (pair) or 3 (triplet) mapped layers; shallow sub-networks skip those terms.
            for term, needed in (("ltr_pair", 2), ("ltr_triplet", 3)):
                if term in weights and len(student.hidden_states) < needed:
                    weights[term] = 0.0
            for name in active:
                for term, value in self.objectives[name](aligned, student, batch, weights=weights).items():
                    if weights.get(term, 0.0) > 0:
                        terms[term] = terms[term] + value if term in terms else value
        return terms

    def evaluate(self) -> dict[str, float]:
        self.setup()
        metrics: dict[str, float] = {}
        scores = []
        split, loader = next(iter(self.dev_loaders.items()))
        for width, depth in self.subnetworks():
            with subnetwork(self.unwrapped_model(), width, depth):
                preds, labels = self.predict(loader)
            if self.task.is_regression:
                preds = preds.squeeze(-1)
            result = compute_metrics(self.task.name, preds, labels)
            key = subnetwork_key(width, depth)
            self.logger.log_eval(self.global_step, self.fractional_epoch, f"{split}@{key}", result)
            metrics[f"score@{key}"] = float(result[self.task.headline])
            scores.append(metrics[f"score@{key}"])
        metrics["score"] = float(sum(scores) / len(scores))
        for callback in self.callbacks:
            callback.on_evaluate(self, self.global_step, metrics)
        return metrics


def importance_batches(tokenizer: Any, task: str, data_dir=None, limit: int | None = 512,
                       max_length: int = 128, batch_size: int = 32, seed: int = 0) -> list[dict[str, Tensor]]:
    """Tokenised, padded *training* batches (a seeded subset of ``limit`` examples) for importance."""
    spec = get_task(task)
    train = tokenize_dataset(load_task(spec.name, "train", data_dir=data_dir, limit=limit, seed=seed), tokenizer, spec, max_length=max_length)
    return list(DataLoader(train, batch_size=batch_size, shuffle=False, collate_fn=DynamicPaddingCollator(tokenizer)))


def run_dynabert(
    task: str,
    profile: str = "smoke",
    loss: str = "dynabert",
    seed: int = 0,
    teacher: str | None = None,
    widths: Sequence[float] = WIDTHS,
    depths: Sequence[float] = DEPTHS,
    weights: dict[str, float] | None = None,
    importance_examples: int | None = 512,
    method: str | None = None,
    data_dir=None,
    record: bool = True,
    resume: bool = True,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Importance -> rewire -> width stage -> width x depth stage; one record per sub-network.

    ``weights``: for ``loss="ckd+kd"`` the CKD/KD term weights (both stages); for ``"dynabert"``
    the defaults are DynaBERT's (logit 1, hidden 0.1 then 1). ``overrides`` are training options
    (``max_steps``, ``train_limit``...). Returns rows with width, depth, score, params, latency.
    """
    spec = get_task(task)
    prof = load_profile(profile)
    method = method or ("DynaBERT loss" if loss == "dynabert" else "CKD + KD")
    start = time.perf_counter()
    teacher_path, teacher_model, tokenizer = load_teacher(spec.name, teacher, prof["name"], data_dir)
    config = profile_config(prof, "distill", spec.name, seed=seed, **overrides)
    temperature = float(prof.get("distill", {}).get("temperature", 1.0))
    identity = RunIdentity("dynabert", config.seed, {
        "task": spec.name, "teacher": model_reference(teacher_path), "loss": loss, "widths": sorted(widths),
        "depths": sorted(depths), "weights": weights, "importance_examples": importance_examples, "temperature": temperature,
        "train": training_identity(config), "data": data_identity(spec.name, ("train", "dev"), data_dir),
    })
    root = runs_dir() / prof["name"] / "dynabert" / spec.name / method.replace(" ", "_").replace("+", "p") / f"seed{seed}-{identity.short}"
    state = open_run(root, identity, resume, option="the DynaBERT run folder")
    keys = [subnetwork_key(w, d) for d in sorted(depths) for w in sorted(widths)]
    if state == "finished":
        records = [read_record(record_path(results_dir(), f"{identity.run_id}-{key}")) for key in keys]
        if all(r is not None for r in records):
            return records
    student = copy.deepcopy(teacher_model)
    batches = importance_batches(tokenizer, spec.name, data_dir, importance_examples, config.max_length, config.eval_batch_size, seed)
    head_importance, neuron_importance = compute_importance(student, batches, regression=spec.is_regression)
    rewire(student, head_importance, neuron_importance)
    summaries = {}
    for stage, stage_depths in (("width", (1.0,)), ("depth", tuple(depths))):
        stage_weights = weights if loss == "ckd+kd" else {**STAGE_WEIGHTS[stage], **(weights or {})}
        distiller = DynaBERTDistiller(
            teacher_model, student, tokenizer, spec, loss=loss, widths=widths, depths=stage_depths, weights=stage_weights,
            temperature=temperature, config=config, out_dir=root / stage, data_dir=data_dir, teacher_tokenizer=tokenizer,
        )
        summaries[stage] = distiller.train(resume=state != "new")
        best = root / stage / "best"
        student = load_backbone(best, num_labels=spec.num_labels)[0] if (best / "config.json").exists() else distiller.unwrapped_model()
    if all(summary.get("finished") for summary in summaries.values()):
        # The procedure's own marker: both stages ran to their last step.
        atomic_write_json(root / "summary.json", {"finished": True, "stages": list(summaries)})
    best_metrics = summaries["depth"].get("best_metrics") or {}
    rows = []
    for depth in sorted(depths):
        for width in sorted(widths):
            key = subnetwork_key(width, depth)
            size = size_summary(extract_subnetwork(student, width, depth))
            row = {
                "run_id": f"{identity.run_id}-{key}", "config_id": f"{identity.config_id}-{key}",
                "kind": "dynabert", "profile": prof["name"], "task": spec.name, "teacher": str(teacher_path),
                "student": key, "method": method, "loss": loss, "width": width, "depth": depth, "seed": seed,
                "config": config.to_dict(), "metrics": {"score": best_metrics.get(f"score@{key}", float("nan"))},
                "score": best_metrics.get(f"score@{key}", float("nan")), "out_dir": str(root),
                "wall_time_s": time.perf_counter() - start, **size,
            }
            if record:
                record_run(row, results_dir())
            rows.append(row)
    return rows


def dynabert_settings(profile: str, grid: str = "reduced") -> dict[str, Any]:
    if grid not in GRIDS:
        raise ValueError(f"grid={grid!r}: use 'reduced' or 'full'")
    section = profile_section(profile, "dynabert")
    if grid not in section:
        raise ValueError(f"profile '{profile}' has no dynabert.{grid} settings")
    return section[grid]


def run_dynabert_grid(profile: str = "quick", grid: str = "reduced", reuse: bool = True, **overrides: Any) -> pd.DataFrame:
    """Every task x loss x seed of the DynaBERT settings; one row per sub-network (a finished identical
    run is read back from its records when ``reuse``)."""
    chosen = dynabert_settings(profile, grid)
    train = {**(chosen.get("train") or {}), **overrides}
    rows = []
    for task in chosen["tasks"]:
        for loss in chosen["losses"]:
            method = "DynaBERT loss" if loss == "dynabert" else "CKD + KD"
            for seed in chosen["seeds"]:
                rows += run_dynabert(task, profile=profile, loss=loss, seed=seed, method=method, resume=reuse,
                                     importance_examples=chosen.get("importance_examples"), **train)
    return pd.DataFrame(rows)[ROW_COLUMNS]


def same_subnetwork_comparison(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame reshaped for :func:`ckdlab.results.compare`: variants = methods, and each sub-network
    of each task a 'task' of its own, so the paired difference pairs equal sub-networks and seeds."""
    return frame.rename(columns={"method": "variant"}).assign(group="dynabert", task=lambda f: f["task"] + "/" + f["student"])

