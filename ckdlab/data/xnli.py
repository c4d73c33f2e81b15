"""XNLI (15 languages) and the English MultiNLI training data used for zero-shot cross-lingual NLI.

Where each split comes from, first match wins (data roots as in :mod:`ckdlab.data.paths`):

* ``validation`` (alias ``dev``): ``xnli/xtreme/dev-<lang>.tsv`` -- the XTREME per-language files: no
  header, CRLF line ends, ``premise \\t hypothesis \\t label-name``;
* ``test``: ``xnli/xtreme/test-<lang>.tsv`` (``premise \\t hypothesis``: XTREME strips the labels)
  with the line-aligned ``xnli/xtreme/test-labels.DERIVED.txt`` (one label name per line, valid for
  every language); else ``xnli/hf/test-<lang>.jsonl`` (``{"premise", "hypothesis", "label": 0|1|2}``,
  11 languages);
* else the hub: ``datasets.load_dataset("facebook/xnli", <lang>, split=...)``.

Every reader returns a ``datasets.Dataset`` with columns ``premise``, ``hypothesis`` and ``label``
(a ``ClassLabel`` over :data:`XNLI_LABELS`, ids 0/1/2 in the Hugging Face order).

    >>> dev = load_xnli("de", "validation", limit=100, seed=0)
    >>> dev.features["label"].names
    ['entailment', 'neutral', 'contradiction']
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import datasets

from ckdlab.data import paths
from ckdlab.data.hub import hub_split
from ckdlab.errors import UserError
from ckdlab.data.subsets import subset_indices
from ckdlab.data.tasks import XNLI_TASK

XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
XNLI_LABELS = XNLI_TASK.label_names
XNLI_HUB_ID = "facebook/xnli"
MNLI_HUB_ID, MNLI_HUB_CONFIG = "nyu-mll/glue", "mnli"

XTREME_DIR = "xnli/xtreme"
HF_DIR = "xnli/hf"
TEST_LABELS_FILE = f"{XTREME_DIR}/test-labels.DERIVED.txt"
MNLI_SAMPLE_FILE = XNLI_TASK.splits["train"].file  # xnli/hf/train-en-sample9k.jsonl

# split name a user may pass -> canonical split (hub split names)
_SPLITS = {"validation": "validation", "dev": "validation", "test": "test"}
TEST_LAYOUTS = ("auto", "xtreme", "hf")


def xnli_features() -> datasets.Features:
    """The columns every XNLI/MNLI reader returns."""
    return datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(XNLI_LABELS)),
        }
    )


# --------------------------------------------------------------------------- file readers


def _lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` for every line, CRLF or LF; a final empty line (trailing newline) dropped.

    Splits on ``\\n`` only: ``str.splitlines`` would also break rows at U+2028, U+0085, \\x1c...,
    which occur inside sentences.
    """
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    rows = text.split("\n")
    if rows and rows[-1] == "":
        rows.pop()
    return [(number, row[:-1] if row.endswith("\r") else row) for number, row in enumerate(rows, start=1)]


def _label_id(name: str, path: Path, number: int) -> int:
    if name not in XNLI_LABELS:
        raise UserError(f"{path}, line {number}: label {name!r} is not one of {list(XNLI_LABELS)}")
    return XNLI_LABELS.index(name)


def read_xtreme_tsv(path: str | os.PathLike, labels: Sequence[str] | None = None) -> dict[str, list]:
    """Read an XTREME XNLI TSV: 3 columns (with label name), or 2 columns plus ``labels`` (line-aligned).

    Returns ``{"premise": [...], "hypothesis": [...], "label": [ids]}``. A row with the wrong number
    of columns, or an unknown label name, raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    columns = 3 if labels is None else 2
    premises, hypotheses, label_ids = [], [], []
    rows = _lines(path)
    if labels is not None and len(labels) != len(rows):
        raise UserError(f"{path} has {len(rows)} rows but its label file has {len(labels)} lines; they must align")
    for index, (number, row) in enumerate(rows):
        fields = row.split("\t")
        if len(fields) != columns:
            raise UserError(
                f"{path}, line {number}: expected {columns} tab-separated columns "
                f"({'premise, hypothesis, label' if columns == 3 else 'premise, hypothesis'}), found {len(fields)}"
            )
        premises.append(fields[0])
        hypotheses.append(fields[1])
        label = fields[2] if labels is None else labels[index]
        label_ids.append(_label_id(label, path, number))
    return {"premise": premises, "hypothesis": hypotheses, "label": label_ids}


def read_label_names(path: str | os.PathLike) -> list[str]:
    """One label name per line (the derived XNLI test labels)."""
    path = Path(path)
    names = [row for _, row in _lines(path)]
    for number, name in enumerate(names, start=1):
        _label_id(name, path, number)
    return names


def read_nli_jsonl(path: str | os.PathLike) -> dict[str, list]:
    """Read ``{"premise", "hypothesis", "label"}`` JSON lines (label id 0/1/2, HF order)."""
    path = Path(path)
    premises, hypotheses, label_ids = [], [], []
    for number, row in _lines(path):
        if not row.strip():
            continue
        try:
            record = json.loads(row)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}, line {number}: not valid JSON ({error.msg})") from error
        missing = {"premise", "hypothesis", "label"} - set(record)
        if missing:
            raise UserError(f"{path}, line {number}: missing field(s) {sorted(missing)}")
        label = record["label"]
        if isinstance(label, bool) or label not in range(len(XNLI_LABELS)):
            raise UserError(f"{path}, line {number}: label {label!r} is not an id in 0..{len(XNLI_LABELS) - 1}")
        premises.append(record["premise"])
        hypotheses.append(record["hypothesis"])
        label_ids.append(label)
    return {"premise": premises, "hypothesis": hypotheses, "label": label_ids}


# --------------------------------------------------------------------------- helpers


def check_language(language: str) -> str:
    """``language`` lower-cased if it is an XNLI language, else a ``ValueError`` listing them."""
    code = str(language).strip().lower()
    if code not in XNLI_LANGUAGES:
        raise UserError(f"unknown XNLI language {language!r}; choose one of {', '.join(XNLI_LANGUAGES)}")
    return code


def check_split(split: str) -> str:
    canonical = _SPLITS.get(str(split).strip().lower())
    if canonical is None:
        raise UserError(f"unknown XNLI split {split!r}; choose one of {sorted(_SPLITS)}")
    return canonical


def _finish(columns: dict[str, list], limit: int | None, seed: int) -> datasets.Dataset:
    dataset = datasets.Dataset.from_dict(columns, features=xnli_features())
    keep = subset_indices(len(dataset), limit, seed)
    return dataset if keep is None else dataset.select(keep)


def _from_hub(
    path: str,
    name: str,
    split: str,
    tried: Iterable[str],
    data_dir: str | os.PathLike | None,
    limit: int | None,
    seed: int,
) -> datasets.Dataset:
    roots = ", ".join(str(root) for root in paths.candidate_roots(data_dir))
    dataset = hub_split(
        path, name, split,
        missing=f"no local copy of {path} ({name}, {split}).\nTried: {'; '.join(tried)} under each data root ({roots}).",
        fix="point CKDLAB_DATA (or data_dir= / --data-dir) at a folder holding xnli/, or allow network access to the Hugging Face hub.",
    )
    dataset = dataset.select_columns(["premise", "hypothesis", "label"]).cast(xnli_features())
    keep = subset_indices(len(dataset), limit, seed)
    return dataset if keep is None else dataset.select(keep)


# --------------------------------------------------------------------------- public readers


def load_xnli(
    language: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    *,
    layout: str = "auto",
) -> datasets.Dataset:
    """XNLI ``split`` (``validation``/``dev`` or ``test``) of ``language`` as ``Dataset[premise, hypothesis, label]``.

    ``limit`` keeps a seeded random subset of that many rows (file order). ``layout`` picks the test
    files: ``"xtreme"`` (TSV + derived labels), ``"hf"`` (jsonl), or ``"auto"`` (xtreme, then hf);
    all of them fall back to the hub when the local files are missing.
    """
    language, split = check_language(language), check_split(split)
    if layout not in TEST_LAYOUTS:
        raise UserError(f"layout={layout!r} is not one of {TEST_LAYOUTS}")
    tried: list[str] = []
    if split == "validation":
        relative = f"{XTREME_DIR}/dev-{language}.tsv"
        tried.append(relative)
        found = paths.find_local(relative, data_dir)
        if found is not None:
            return _finish(read_xtreme_tsv(found), limit, seed)
    else:
        if layout in ("auto", "xtreme"):
            relative = f"{XTREME_DIR}/test-{language}.tsv"
            tried.append(f"{relative} + {TEST_LABELS_FILE}")
            found, labels = paths.find_local(relative, data_dir), paths.find_local(TEST_LABELS_FILE, data_dir)
            if found is not None and labels is not None:
                return _finish(read_xtreme_tsv(found, labels=read_label_names(labels)), limit, seed)
        if layout in ("auto", "hf"):
            relative = f"{HF_DIR}/test-{language}.jsonl"
            tried.append(relative)
            found = paths.find_local(relative, data_dir)
            if found is not None:
                return _finish(read_nli_jsonl(found), limit, seed)
    return _from_hub(XNLI_HUB_ID, language, split, tried, data_dir, limit, seed)


def load_mnli_english_train(
    data_dir: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0
) -> datasets.Dataset:
    """English NLI training pairs for zero-shot XNLI, as ``Dataset[premise, hypothesis, label]``.

    Locally this is ``xnli/hf/train-en-sample9k.jsonl``: a 9,000-pair class-balanced SAMPLE
    (3,000 per class) of MultiNLI train, not the full 392,702-pair set -- fine for smoke tests and
    small runs, not for reproducing published XNLI numbers. Without it, the full MultiNLI train
    split comes from the hub (``nyu-mll/glue``, ``mnli``).
    """
    found = paths.find_local(MNLI_SAMPLE_FILE, data_dir)
    if found is not None:
        return _finish(read_nli_jsonl(found), limit, seed)
    return _from_hub(MNLI_HUB_ID, MNLI_HUB_CONFIG, "train", [MNLI_SAMPLE_FILE], data_dir, limit, seed)


def multilingual_unlabeled_sentences(
    languages: Sequence[str] | str,
    split: str = "dev",
    data_dir: str | os.PathLike | None = None,
    limit_per_language: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Unique premise and hypothesis sentences of XNLI ``split`` in ``languages`` (labels ignored).

    For task-agnostic distillation. Per language: premises and hypotheses in file order, first
    occurrence kept (each premise appears with three hypotheses); ``limit_per_language`` keeps a
    seeded random subset of those unique sentences (file order). Languages are concatenated in the
    order given; a sentence shared by two languages is kept once.
    """
    if isinstance(languages, str):
        languages = [languages]
    codes = [check_language(language) for language in languages]
    if not codes:
        raise UserError(f"languages is empty; pass some of {', '.join(XNLI_LANGUAGES)}")
    sentences: dict[str, None] = {}
    for code in codes:
        dataset = load_xnli(code, split, data_dir=data_dir)
        unique = list(dict.fromkeys(s for pair in zip(dataset["premise"], dataset["hypothesis"]) for s in pair))
        keep = subset_indices(len(unique), limit_per_language, seed)
        for sentence in unique if keep is None else (unique[i] for i in keep):
            sentences.setdefault(sentence, None)
    return list(sentences)
