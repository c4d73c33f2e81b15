"""Notebook 06, stage 1: task-agnostic sentence-representation approximation of a BiLSTM student.

After Wu et al. (AACL-IJCNLP 2020): on unlabeled sentences (:mod:`ckdlab.data.corpus`), the
BiLSTM's sentence vector ``u`` (max + mean pooling, 4H wide), mapped by a learned affine layer to
the teacher's width, is trained to match the *pre-trained* teacher's sentence vector ``t``
(:class:`~ckdlab.objectives.sentence.SentenceApproximationLoss`, MSE by default):

    L = (1 / (B · d_t)) Σ_b ‖W u_b + c − t_b‖²

The teacher's vectors are computed once per corpus and kept on disk
(:func:`~ckdlab.engine.sentence_cache.cached_teacher_vectors`); training then never runs the
teacher. It runs on the one training loop: :class:`SentenceApproximationTrainer` is a
:class:`~ckdlab.engine.Trainer` on :data:`~ckdlab.data.tasks.TEXT_TASK` (no labels, no dev set)
whose only loss term, ``sentence``, looks each batch's teacher vectors up by the batch's ``row``.
With ``bilstm.stage1.map_init: least_squares`` the map starts at the least-squares readout of the
untrained encoder (:meth:`SentenceApproximationTrainer.start_map_at_least_squares`), so the steps go
to the encoder rather than to growing the map to the teacher's scale.

:func:`run_stage1` is one recorded run with an identity (:mod:`ckdlab.workspace.runs`): the
trained encoder is saved as a Hugging Face folder (``encoder/``, a ``BiLSTMModel`` + tokenizer)
with the learned map beside it (``projection.safetensors``), and a finished identical run is read
back instead of trained again. :func:`approximation_quality` measures on held-out sentences how
close the student gets to the teacher.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data import DynamicPaddingCollator, tokenize_dataset
from ckdlab.data.corpus import SentenceCorpus, load_corpus
from ckdlab.data.tasks import TEXT_TASK
from ckdlab.engine import Callback, TrainConfig, Trainer
from ckdlab.engine.sentence_cache import cached_teacher_vectors
from ckdlab.io import atomic_directory, atomic_write_json
from ckdlab.models import load_backbone
from ckdlab.models.bilstm import BiLSTMModel, build_bilstm_student
from ckdlab.objectives.sentence import SentenceApproximationLoss
from ckdlab.profiles import load_profile, profile_section
from ckdlab.workspace import RunIdentity, model_reference, open_run, runs_dir, training_identity
from ckdlab.workspace.runs import SUMMARY_FILE

ENCODER_DIR = "encoder"
PROJECTION_FILE = "projection.safetensors"
STAGE1_FILE = "stage1.json"
MAP_INITS = ("random", "least_squares")
MAP_FIT_SENTENCES = 5000


class SentenceApproximationTrainer(Trainer):
    """Stage 1 on the one training loop: the BiLSTM encoder (``model``, a :class:`BiLSTMModel`)
    and the loss's affine map are trained to make ``W u + c`` match ``teacher_vectors[row]``.

    ``sentences[i]`` belongs to ``teacher_vectors[i]``; the loop adds the ``row`` column to every
    batch, which is how a batch finds its teacher vectors (no teacher forward pass in training).
    """

    default_weights = {"sentence": 1.0}

    def __init__(self, model: BiLSTMModel, tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str],
                 teacher_vectors: Tensor, metric: str = "mse", config: TrainConfig | None = None,
                 out_dir: str | Path | None = None, callbacks: Iterable[Callback] = ()) -> None:
        if not isinstance(model, BiLSTMModel):
            raise ValueError(f"model must be a BiLSTMModel (the bare encoder), got {type(model).__name__}; "
                             "pass student.bilstm of a BiLSTMForSequenceClassification")
        sentences = list(sentences)
        if not sentences:
            raise ValueError("sentences is empty; stage 1 needs unlabeled text (see ckdlab.data.corpus)")
        if teacher_vectors.dim() != 2 or teacher_vectors.shape[0] != len(sentences):
            raise ValueError(f"teacher_vectors must be [len(sentences)={len(sentences)}, d], got {tuple(teacher_vectors.shape)}")
        super().__init__(model, tokenizer, TEXT_TASK, config, out_dir=out_dir,
                         train_dataset=Dataset.from_dict({"text": sentences}), dev_datasets={}, callbacks=callbacks)
        self.teacher_vectors = teacher_vectors.float()
        with torch.random.fork_rng(devices=[]):  # the map's init must not move the run's RNG stream
            torch.manual_seed(self.config.seed)
            self.approximation = SentenceApproximationLoss(model.config.sentence_size, teacher_vectors.shape[1], metric)

    def trainable_modules(self) -> list[torch.nn.Module]:
        return [self.model, self.approximation]

    def start_map_at_least_squares(self, rows: int) -> None:
        """Set the affine map to the least-squares readout (:func:`least_squares_map`) of the
        untrained encoder's vectors of the first ``rows`` sentences. Why: the encoder's pooled
        vectors start tiny (mean |u| ~ 0.03 for PCA embeddings) while the teacher's have norm ~5,
        so the map needs weights of order 1, and AdamW moves a weight by at most ~lr per step: from
        its random start the map was still far too small after a quick-sized run (held-out R² 0.10,
        below the 0.24 of the untrained encoder read out by least squares). Call before training."""
        if self._is_setup:
            raise RuntimeError("start_map_at_least_squares must be called before training starts")
        rows = min(int(rows), len(self._train_dataset))
        features = sentence_vectors(self.model, self.tokenizer, self._train_dataset["text"][:rows], self.config.max_length)
        weights = least_squares_map(features, self.teacher_vectors[:rows])
        with torch.no_grad():
            self.approximation.projection.weight.copy_(weights[:-1].T)
            self.approximation.projection.bias.copy_(weights[-1])

    def _after_setup(self) -> None:
        self.approximation = self._prepared_modules[1]
        self.teacher_vectors = self.teacher_vectors.to(self.accelerator.device)

    def compute_terms(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        pooled = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output
        return {"sentence": self.approximation(pooled, self.teacher_vectors[batch["row"]])}


# --------------------------------------------------------------------------- settings and corpus


def stage1_settings(profile: str | dict) -> dict[str, Any]:
    """The profile's ``bilstm`` section with its ``stage1`` settings checked."""
    section = profile_section(profile, "bilstm")
    stage1 = section.get("stage1") or {}
    for key in ("corpus", "train"):
        if key not in stage1:
            raise ValueError(f"profile '{load_profile(profile)['name']}': bilstm.stage1 needs '{key}' (see ckdlab/configs/profiles/quick.yaml)")
    return section


def stage1_corpus(profile: str | dict, data_dir: str | Path | None = None) -> tuple[SentenceCorpus, list[str]]:
    """``(training corpus, held-out sentences)`` of the profile's ``bilstm.stage1.corpus``.

    Both come from one seeded permutation of the corpus: training takes its first ``limit``
    sentences, the held-out set the next ``heldout`` (never trained on; the corpus is
    de-duplicated, so no held-out sentence equals a training one).
    """
    options = dict(stage1_settings(profile)["stage1"]["corpus"])
    limit, heldout = options.get("limit"), options.get("heldout", 0)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"bilstm.stage1.corpus.limit={limit!r} must be a positive integer or null (every sentence)")
    if isinstance(heldout, bool) or not isinstance(heldout, int) or heldout < 0:
        raise ValueError(f"bilstm.stage1.corpus.heldout={heldout!r} must be an integer >= 0")
    if options.get("name", "offline") == "offline":
        options.setdefault("data_dir", None if data_dir is None else str(data_dir))
    full = _corpus(json.dumps(options, sort_keys=True, default=str))
    cut = len(full) - heldout if limit is None else min(limit, len(full) - heldout)
    if cut < 1:
        raise ValueError(f"the corpus {full.name} has {len(full)} sentences: too few for {heldout} held-out ones; "
                         "lower bilstm.stage1.corpus.heldout")
    train = SentenceCorpus(full.sentences[:cut], name=full.name, counts=full.counts, removed_heldout=full.removed_heldout)
    return train, full.sentences[cut:]


@lru_cache(maxsize=4)
def _corpus(options_json: str) -> SentenceCorpus:
    """The corpus of one options set, read once per process (the offline one reads every training
    and held-out split of the shared data: tens of seconds)."""
    options = json.loads(options_json)
    name, limit, heldout = options.pop("name", "offline"), options.pop("limit", None), options.pop("heldout", 0)
    return load_corpus(name, limit=None if limit is None else limit + heldout, **options)


# --------------------------------------------------------------------------- the run


@dataclass
class Stage1Result:
    """A finished stage-1 run: its folder, the saved encoder, the step log and what it trained on."""

    out_dir: Path
    encoder_dir: Path
    log: pd.DataFrame
    info: dict[str, Any]
    heldout: list[str]
    state: str

    def encoder(self) -> BiLSTMModel:
        return BiLSTMModel.from_pretrained(self.encoder_dir)

    def projection(self) -> SentenceApproximationLoss:
        """The learned affine map (inside the loss module it was trained in)."""
        weights = load_file(str(self.out_dir / PROJECTION_FILE))
        out_features, in_features = weights["projection.weight"].shape
        loss = SentenceApproximationLoss(in_features, out_features, self.info["metric"])
        loss.load_state_dict(weights)
        return loss


def stage1_identity(profile: str | dict, seed: int, teacher: str, corpus: SentenceCorpus, config: TrainConfig,
                    section: dict[str, Any]) -> RunIdentity:
    vectors = section["stage1"].get("teacher_vectors") or {}
    return RunIdentity("bilstm-stage1", seed, {
        "teacher": model_reference(teacher), "student": section["student"], "init": section.get("init", "pca"),
        "corpus": {"name": corpus.name, "sentences": len(corpus), "fingerprint": corpus.fingerprint()},
        "teacher_vectors": {"pooling": vectors.get("pooling", "mean"), "layers": vectors.get("layers"),
                            "max_length": vectors.get("max_length", config.max_length)},
        "metric": section["stage1"].get("metric", "mse"), "map_init": section["stage1"].get("map_init", "random"),
        "train": training_identity(config),
    })


def run_stage1(profile: str = "quick", seed: int = 0, data_dir: str | Path | None = None, resume: bool = True,
               progress: bool | None = None, **train_overrides: Any) -> Stage1Result:
    """Stage 1 for the profile's ``bilstm`` student (see the module docstring); trained only when no
    finished identical run exists. ``train_overrides`` change ``bilstm.stage1.train`` options."""
    prof = load_profile(profile)
    section = stage1_settings(prof)
    stage1 = section["stage1"]
    train = {**stage1["train"], **{k: v for k, v in train_overrides.items() if v is not None}}
    if progress is not None:
        train["progress"] = progress
    config = TrainConfig.from_dict({**train, "seed": seed})
    map_init = stage1.get("map_init", "random")
    if map_init not in MAP_INITS:
        raise ValueError(f"bilstm.stage1.map_init={map_init!r} must be one of {MAP_INITS}")
    corpus, heldout = stage1_corpus(prof, data_dir)
    teacher_name = str(prof["teacher"])
    identity = stage1_identity(prof, seed, teacher_name, corpus, config, section)
    spec = section["student"]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)
    out = runs_dir() / prof["name"] / "bilstm" / "stage1" / safe / f"seed{seed}-{identity.short}"
    state = open_run(out, identity, resume)
    if state == "finished":
        return _finished(out, heldout, state)
    start = time.perf_counter()
    teacher, tokenizer = load_backbone(teacher_name)
    vectors = teacher_vectors(teacher, tokenizer, corpus.sentences, section, config.max_length, progress=config.progress)
    student = build_bilstm_student(teacher, spec, num_labels=1, init=section.get("init", "pca"), seed=seed).bilstm
    del teacher
    trainer = SentenceApproximationTrainer(student, tokenizer, corpus.sentences, vectors.vectors, stage1.get("metric", "mse"),
                                           config=config, out_dir=out)
    if map_init == "least_squares" and state != "resume":
        trainer.start_map_at_least_squares(MAP_FIT_SENTENCES)
    summary = trainer.train(resume=state == "resume")
    if not summary["finished"]:
        raise RuntimeError(f"stage 1 stopped at step {summary['steps']} of {summary['total_steps']}; run it again to resume")
    with atomic_directory(out / ENCODER_DIR) as tmp:
        trainer.unwrapped_model().save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    approximation = trainer.accelerator.unwrap_model(trainer.approximation)
    save_file({k: v.detach().cpu().contiguous() for k, v in approximation.state_dict().items()}, str(out / PROJECTION_FILE))
    info = {"corpus": corpus.name, "sentences": len(corpus), "counts": corpus.counts, "removed_heldout": corpus.removed_heldout,
            "heldout": len(heldout), "teacher": teacher_name, "student": spec, "init": section.get("init", "pca"),
            "metric": stage1.get("metric", "mse"), "map_init": map_init, "vectors_reused": vectors.reused, "vectors_path": str(vectors.path),
            "seed": seed, "max_length": config.max_length, "steps": summary["steps"],
            "wall_time_s": time.perf_counter() - start, "run_id": identity.run_id}
    atomic_write_json(out / STAGE1_FILE, info)
    return _finished(out, heldout, state)


def _finished(out: Path, heldout: list[str], state: str) -> Stage1Result:
    if not (out / STAGE1_FILE).exists():
        raise RuntimeError(f"{out} holds a finished stage-1 run without {STAGE1_FILE}; rerun with resume=False")
    info = json.loads((out / STAGE1_FILE).read_text(encoding="utf-8"))
    log_path = out / "train_log.csv"
    log = pd.DataFrame(columns=["step"])
    if log_path.exists():  # long (step, epoch, name, value) -> one row per step
        log = pd.read_csv(log_path).pivot_table(index="step", columns="name", values="value").reset_index()
        log.columns.name = None
    return Stage1Result(out, out / ENCODER_DIR, log, info, heldout, state)


def teacher_vectors(teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str],
                    section: dict[str, Any], max_length: int, progress: bool = False):
    """The profile's teacher sentence vectors of ``sentences``, from the disk cache when present."""
    options = section["stage1"].get("teacher_vectors") or {}
    return cached_teacher_vectors(teacher, tokenizer, sentences, runs_dir() / "cache" / "sentence_vectors",
                                  pooling=options.get("pooling", "mean"), layers=options.get("layers"),
                                  max_length=int(options.get("max_length", max_length)), progress=progress)


# --------------------------------------------------------------------------- how close it gets


@torch.no_grad()
def sentence_vectors(encoder: BiLSTMModel, tokenizer: PreTrainedTokenizerBase, sentences: Sequence[str],
                     max_length: int = 128, batch_size: int = 128) -> Tensor:
    """The encoder's pooled sentence vectors [N, 4H] of ``sentences`` (eval mode, batches of similar length)."""
    if not sentences:
        raise ValueError("sentences is empty; pass the sentences to encode")
    encoded = tokenize_dataset(Dataset.from_dict({"text": list(sentences)}), tokenizer, TEXT_TASK, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    collate = DynamicPaddingCollator(tokenizer)
    was_training = encoder.training
    encoder.eval()
    out = torch.empty(len(order), encoder.config.sentence_size)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = collate([encoded[i] for i in rows])
            out[torch.tensor(rows)] = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).pooler_output.float()
    finally:
        encoder.train(was_training)
    return out


@dataclass
class Approximation:
    """Stage 1 on held-out sentences. ``cosines``: one row per (model, sentence) with the cosine
    between its estimate of the teacher's sentence vector and the true one; ``summary``: per model,
    mean / median cosine and R² = 1 − Σ‖t − t̂‖² / Σ‖t − t̄‖² (t̄: the mean training vector);
    ``teacher`` and ``student`` [M, d_t]: the held-out teacher vectors and the stage-1 estimates."""

    cosines: pd.DataFrame
    summary: pd.DataFrame
    teacher: Tensor
    student: Tensor


def least_squares_map(features: Tensor, targets: Tensor, ridge: float = 1e-3) -> Tensor:
    """``W`` [d_s + 1, d_t] minimising ‖[u, 1] W − t‖² + λ‖W‖² (λ = ``ridge`` × mean diagonal of
    the Gram matrix, bias included; float64)."""
    design = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)
    gram = design.T @ design
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=torch.float64)
    return torch.linalg.solve(gram, design.T @ targets.double())


def approximation_quality(result: Stage1Result, profile: str | dict = "quick", data_dir: str | Path | None = None,
                          fit_sentences: int = 5000) -> Approximation:
    """How close the stage-1 student's mapped vectors ``W u + c`` get to the teacher's on the
    held-out sentences, against two references that had no stage 1:

    - *untrained student + least squares*: the student as stage 1 started it (same init and
      seed), read out by the best affine map fitted on ``fit_sentences`` training sentences;
    - *mean teacher vector*: one constant guess, the mean of the training corpus's teacher vectors.
    """
    prof = load_profile(profile)
    section = stage1_settings(prof)
    corpus, heldout = stage1_corpus(prof, data_dir)
    if not heldout:
        raise ValueError("bilstm.stage1.corpus.heldout is 0: there are no held-out sentences to measure on")
    teacher, tokenizer = load_backbone(str(prof["teacher"]))
    max_length = int(result.info["max_length"])
    held = teacher_vectors(teacher, tokenizer, heldout, section, max_length).vectors
    train = teacher_vectors(teacher, tokenizer, corpus.sentences, section, max_length).vectors
    with torch.no_grad():
        estimates = {"stage-1 student": result.projection().projection(sentence_vectors(result.encoder(), tokenizer, heldout, max_length))}
        start = build_bilstm_student(teacher, result.info["student"], num_labels=1, init=result.info["init"], seed=result.info["seed"]).bilstm
        fit = min(int(fit_sentences), len(corpus))
        weights = least_squares_map(sentence_vectors(start, tokenizer, corpus.sentences[:fit], max_length), train[:fit])
        untrained = sentence_vectors(start, tokenizer, heldout, max_length).double()
        estimates["untrained student + least squares"] = (torch.cat([untrained, torch.ones(len(untrained), 1, dtype=torch.float64)], 1) @ weights).float()
        mean = train.mean(dim=0)
        estimates["mean teacher vector"] = mean.expand_as(held)
    total = ((held - mean) ** 2).sum()
    rows, summary = [], []
    for name, estimate in estimates.items():
        cosine = torch.nn.functional.cosine_similarity(estimate, held, dim=-1)
        rows.append(pd.DataFrame({"model": name, "sentence": np.arange(len(heldout)), "cosine": cosine.numpy()}))
        summary.append({"model": name, "mean cosine": float(cosine.mean()), "median cosine": float(cosine.median()),
                        "R²": float(1 - ((held - estimate) ** 2).sum() / total), "sentences": len(heldout)})
    return Approximation(pd.concat(rows, ignore_index=True), pd.DataFrame(summary), held, estimates["stage-1 student"])
