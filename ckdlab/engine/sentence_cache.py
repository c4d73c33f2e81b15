"""Teacher sentence vectors for stage-1 BiLSTM distillation, computed once and kept on disk.

The teacher runs once over a corpus (eval mode, no gradients, batches of similar length so that
little padding is computed) and its sentence vectors (:func:`ckdlab.objectives.sentence.teacher_sentence_vector`)
are stored under ``<cache_dir>/<key>/`` as ``vectors.safetensors`` + ``meta.json``. The key is a
SHA-256 fingerprint of everything the vectors depend on:

- the teacher: its encoder's weights (every tensor of ``base_model.state_dict()``, byte for byte)
  and its architecture config (names, paths, label maps and library versions left out), so a
  fine-tuned head or a new folder name does not invalidate the cache but any weight change does;
- the tokenizer (its full serialisation), the pooling and its layers, ``max_length``;
- the corpus sentences, in order.

A second call with the same inputs reads the file and does not run the teacher. Writes are atomic
(a temporary folder renamed into place), so an interrupted run never leaves a half-written cache.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.data.corpus import sentences_fingerprint
from ckdlab.io import atomic_directory
from ckdlab.objectives.sentence import check_pooling, teacher_sentence_vector

CACHE_FORMAT = 1
_CONFIG_KEYS_IGNORED = {
    "_name_or_path", "name_or_path", "transformers_version", "architectures", "id2label", "label2id",
    "num_labels", "problem_type", "dtype", "torch_dtype", "output_hidden_states", "return_dict",
}


@dataclass(frozen=True)
class TeacherVectors:
    """``vectors`` [N, d] (row i belongs to sentence i), the cache key, its folder, and whether
    the vectors were read from disk (``reused``) rather than computed."""

    vectors: Tensor
    fingerprint: str
    path: Path
    reused: bool


def teacher_fingerprint(teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 of the teacher encoder's weights and architecture config and of the tokenizer."""
    digest = hashlib.sha256()
    for name, tensor in sorted(teacher.base_model.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes())
    config = {k: v for k, v in teacher.config.to_dict().items() if k not in _CONFIG_KEYS_IGNORED}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(f"{type(tokenizer).__name__}|{_tokenizer_state(tokenizer)}".encode())
    return digest.hexdigest()


def _tokenizer_state(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return json.dumps(sorted(tokenizer.get_vocab().items()))
    # The serialisation also records the truncation/padding of the last call, which every
    # tokenizer(...) call rewrites; they are call arguments, not part of the tokenizer.
    state = json.loads(backend.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    return json.dumps(state, sort_keys=True)


def vectors_fingerprint(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    pooling: str = "mean",
    layers: Sequence[int] | None = None,
    max_length: int = 128,
) -> str:
    """The cache key of :func:`cached_teacher_vectors` (see the module docstring)."""
    pooling, layers = check_pooling(pooling, layers)
    parts = {
        "format": CACHE_FORMAT,
        "teacher": teacher_fingerprint(teacher, tokenizer),
        "pooling": pooling,
        "layers": layers,
        "max_length": int(max_length),
        "sentences": sentences_fingerprint(sentences),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def compute_teacher_vectors(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    pooling: str = "mean",
    layers: Sequence[int] | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    progress: bool = False,
) -> Tensor:
    """The teacher's sentence vectors [N, d] (float32, CPU), in the order of ``sentences``."""
    pooling, layers = check_pooling(pooling, layers)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length={max_length!r} must be an integer >= 2 (room for [CLS] and [SEP])")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
    if not sentences:
        raise ValueError("sentences is empty; pass the corpus sentences to encode")
    encoded = tokenizer(list(sentences), truncation=True, max_length=max_length)
    features = [dict(zip(encoded.keys(), row)) for row in zip(*encoded.values())]
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    encoder = teacher.base_model
    device = next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()
    vectors: Tensor | None = None
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="teacher vectors", disable=not progress, leave=False):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad([features[i] for i in rows], return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            out = encoder(**batch, output_hidden_states=pooling == "mean-layers")
            states = out.hidden_states if pooling == "mean-layers" else (out.last_hidden_state,)
            pooled = teacher_sentence_vector(states, batch["attention_mask"], pooling, layers).float().cpu()
            if vectors is None:
                vectors = torch.empty(len(features), pooled.shape[1])
            vectors[torch.tensor(rows)] = pooled
    finally:
        teacher.train(was_training)
    return vectors


def cached_teacher_vectors(
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    sentences: Sequence[str],
    cache_dir: str | os.PathLike,
    pooling: str = "mean",
    layers: Sequence[int] | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    progress: bool = False,
) -> TeacherVectors:
    """:func:`compute_teacher_vectors`, read from ``cache_dir`` when an identical run stored them."""
    sentences = list(sentences)
    key = vectors_fingerprint(teacher, tokenizer, sentences, pooling, layers, max_length)
    folder = Path(cache_dir) / key[:24]
    stored = _read(folder, key, len(sentences))
    if stored is not None:
        return TeacherVectors(stored, key, folder, reused=True)
    vectors = compute_teacher_vectors(teacher, tokenizer, sentences, pooling, layers, max_length, batch_size, progress)
    pooling, layers = check_pooling(pooling, layers)
    meta = {
        "format": CACHE_FORMAT, "fingerprint": key, "rows": len(sentences), "width": vectors.shape[1],
        "pooling": pooling, "layers": layers, "max_length": max_length,
        "teacher": getattr(teacher.config, "_name_or_path", "") or type(teacher).__name__,
    }
    with atomic_directory(folder) as tmp:
        save_file({"vectors": vectors.contiguous()}, str(tmp / "vectors.safetensors"))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return TeacherVectors(vectors, key, folder, reused=False)


def _read(folder: Path, key: str, rows: int) -> Tensor | None:
    """The stored vectors when the folder holds this exact key and row count, else ``None``."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("fingerprint") != key or meta.get("rows") != rows:
            return None
        vectors = load_file(str(folder / "vectors.safetensors"))["vectors"]
    except (OSError, ValueError, KeyError, SafetensorError):  # absent or unreadable: recompute and overwrite
        return None
    return vectors if vectors.shape == (rows, meta.get("width")) else None
