"""XLM-T's UMSAB multilingual tweet sentiment (8 languages, 3 classes), a second cross-lingual task.

Local layout (TweetEval style, under a data root from :mod:`ckdlab.data.paths`)::

    umsab_sentiment/<language>/{train,val,test}_text.txt     one tweet per line
    umsab_sentiment/<language>/{train,val,test}_labels.txt   one integer per line, line-aligned

with no trailing newline at the end of the files. Labels: 0 = negative, 1 = neutral, 2 = positive.
Tweets are kept exactly as distributed (``@user`` anonymisation and literal ``\\uXXXX`` escapes are
original). Without local files the reader falls back to the hub copy,
``cardiffnlp/tweet_sentiment_multilingual`` (config = language name).

    >>> train = load_sentiment("en", "train")       # ISO codes and full names both work
    >>> train.features["label"].names
    ['negative', 'neutral', 'positive']
"""
from __future__ import annotations

import os
from pathlib import Path

import datasets

from ckdlab.data import paths
from ckdlab.data.hub import hub_split
from ckdlab.errors import UserError
from ckdlab.data.tasks import SENTIMENT_TASK
from ckdlab.data.subsets import subset_indices

SENTIMENT_LANGUAGES = ("arabic", "english", "french", "german", "hindi", "italian", "portuguese", "spanish")
SENTIMENT_ISO_CODES = {
    "ar": "arabic", "en": "english", "fr": "french", "de": "german",
    "hi": "hindi", "it": "italian", "pt": "portuguese", "es": "spanish",
}
SENTIMENT_LABELS = SENTIMENT_TASK.label_names
SENTIMENT_HUB_ID = "cardiffnlp/tweet_sentiment_multilingual"
SENTIMENT_DIR = "umsab_sentiment"

# split a user may pass -> (file prefix, hub split)
_SPLITS = {"train": ("train", "train"), "validation": ("val", "validation"), "val": ("val", "validation"),
           "dev": ("val", "validation"), "test": ("test", "test")}


def sentiment_features() -> datasets.Features:
    return datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(SENTIMENT_LABELS))}
    )


def check_sentiment_language(language: str) -> str:
    """The UMSAB folder name for ``language`` (a full name or an ISO 639-1 code)."""
    key = str(language).strip().lower()
    name = SENTIMENT_ISO_CODES.get(key, key)
    if name not in SENTIMENT_LANGUAGES:
        choices = ", ".join(f"{code} ({full})" for code, full in SENTIMENT_ISO_CODES.items())
        raise UserError(f"unknown UMSAB sentiment language {language!r}; choose one of {choices}")
    return name


def _read_lines(path: Path) -> list[str]:
    """Lines split on ``\\n`` only (a tweet may contain U+2028 etc.); a trailing newline is tolerated."""
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    if text == "":
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_umsab_split(text_file: str | os.PathLike, labels_file: str | os.PathLike) -> dict[str, list]:
    """``{"text": [...], "label": [...]}`` from a line-aligned text/labels pair of files.

    Different line counts, or a label that is not 0, 1 or 2, raise ``ValueError`` naming the file.
    """
    text_file, labels_file = Path(text_file), Path(labels_file)
    texts, raw_labels = _read_lines(text_file), _read_lines(labels_file)
    if len(texts) != len(raw_labels):
        raise UserError(
            f"{text_file} has {len(texts)} lines but {labels_file} has {len(raw_labels)}; "
            f"the text and label files must be line-aligned"
        )
    labels = []
    for number, raw in enumerate(raw_labels, start=1):
        value = raw.strip()
        if value not in ("0", "1", "2"):
            names = ", ".join(SENTIMENT_LABELS)
            raise UserError(f"{labels_file}, line {number}: label {raw!r} is not 0, 1 or 2 ({names})")
        labels.append(int(value))
    return {"text": texts, "label": labels}


def load_sentiment(
    language: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> datasets.Dataset:
    """UMSAB tweet sentiment ``split`` (train / validation (val, dev) / test) as ``Dataset[text, label]``.

    ``language`` is a full name (``"german"``) or ISO code (``"de"``); ``limit`` keeps a seeded random
    subset of that many rows, in file order.
    """
    name = check_sentiment_language(language)
    key = str(split).strip().lower()
    if key not in _SPLITS:
        raise UserError(f"unknown sentiment split {split!r}; choose one of {sorted(_SPLITS)}")
    prefix, hub_name = _SPLITS[key]
    folder = f"{SENTIMENT_DIR}/{name}"
    text_rel, labels_rel = f"{folder}/{prefix}_text.txt", f"{folder}/{prefix}_labels.txt"
    # Both files from the same folder: a text file from one root and labels from another would misalign.
    found = paths.find_local(folder, data_dir)
    text_file, labels_file = (found / f"{prefix}_text.txt", found / f"{prefix}_labels.txt") if found else (None, None)
    if found is not None and text_file.is_file() and labels_file.is_file():
        dataset = datasets.Dataset.from_dict(read_umsab_split(text_file, labels_file), features=sentiment_features())
    else:
        roots = ", ".join(str(root) for root in paths.candidate_roots(data_dir))
        dataset = hub_split(
            SENTIMENT_HUB_ID, name, hub_name,
            missing=f"no local UMSAB {name} {prefix} files.\nTried: {text_rel} + {labels_rel} under each data root ({roots}).",
            fix=f"point CKDLAB_DATA (or data_dir= / --data-dir) at a folder holding {SENTIMENT_DIR}/, or allow network "
                "access to the Hugging Face hub.",
        )
        dataset = dataset.select_columns(["text", "label"]).cast(sentiment_features())
    keep = subset_indices(len(dataset), limit, seed)
    return dataset if keep is None else dataset.select(keep)
