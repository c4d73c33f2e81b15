"""Unlabeled English sentences for task-agnostic (stage-1) distillation.

Offline (:func:`offline_corpus`): every sentence of the shared data's *training* splits, read with
ckdlab's own readers — SST-2, CoLA, MRPC (both sentences), STS-B (both), RTE (both), the 9k MultiNLI
training sample (premise and hypothesis) and the English tweets of UMSAB train. Labels are ignored.

Held-out guard: a sentence that also occurs in a held-out split (the dev splits of those GLUE
tasks and of every other GLUE task found locally, UMSAB English val and test, XNLI English dev and
test) is dropped, so stage 1 never sees a sentence that a later evaluation scores.

With the hub (:func:`hub_corpus`): any ``datasets`` text corpus by name, e.g.
``hub_corpus("wikitext", "wikitext-103-raw-v1")``; its lines are cleaned and cut into sentences.

Both give a :class:`SentenceCorpus`: sentences de-duplicated (compared case- and
whitespace-insensitively, first spelling kept), in a seeded random order, at most ``limit`` of them;
for a fixed seed a smaller corpus is a prefix of a larger one.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ckdlab.data.glue import find_glue_file, load_task
from ckdlab.data.hub import hub_split
from ckdlab.data.sentiment import load_sentiment
from ckdlab.data.tasks import TASKS
from ckdlab.data.xnli import load_mnli_english_train, load_xnli

GLUE_SOURCES = ("sst2", "cola", "mrpc", "stsb", "rte")
OFFLINE_SOURCES = (*GLUE_SOURCES, "mnli_sample", "tweets_en")


@dataclass(frozen=True)
class SentenceCorpus:
    """Sentences plus where they came from.

    ``counts``: unique new sentences contributed by each source (in source order, after de-duplication);
    ``removed_heldout``: distinct sentences dropped because a held-out split contains them.
    """

    sentences: list[str]
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    removed_heldout: int = 0

    def __len__(self) -> int:
        return len(self.sentences)

    def fingerprint(self) -> str:
        """SHA-256 over the sentences in order: changes whenever the corpus does."""
        return sentences_fingerprint(self.sentences)


def sentences_fingerprint(sentences: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for sentence in sentences:
        encoded = sentence.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))  # length prefix: no two lists hash alike
        digest.update(encoded)
    return digest.hexdigest()


def normalise(sentence: str) -> str:
    """The comparison key of a sentence: whitespace collapsed, case folded."""
    return " ".join(sentence.split()).casefold()


def _check_sources(sources: Sequence[str]) -> tuple[str, ...]:
    if isinstance(sources, str):
        sources = [sources]
    unknown = [s for s in sources if s not in OFFLINE_SOURCES]
    if unknown or not sources:
        raise ValueError(f"sources={list(sources)!r}: choose one or more of {OFFLINE_SOURCES}")
    return tuple(dict.fromkeys(sources))


def _rows_text(dataset: Any, columns: Iterable[str]) -> list[str]:
    return [text for column in columns for text in dataset[column]]


def source_sentences(source: str, data_dir: str | os.PathLike | None = None) -> list[str]:
    """All texts of one training source, in file order (pairs: every first, then every second sentence)."""
    if source in GLUE_SOURCES:
        return _rows_text(load_task(source, "train", data_dir=data_dir), TASKS[source].text_fields)
    if source == "mnli_sample":
        return _rows_text(load_mnli_english_train(data_dir=data_dir), ("premise", "hypothesis"))
    if source == "tweets_en":
        return list(load_sentiment("en", "train", data_dir=data_dir)["text"])
    raise ValueError(f"unknown corpus source {source!r}; choose one of {OFFLINE_SOURCES}")


def heldout_sentences(sources: Sequence[str] = OFFLINE_SOURCES, data_dir: str | os.PathLike | None = None) -> set[str]:
    """Normalised texts of every held-out split that guards a corpus of ``sources``.

    The dev split of each GLUE source is read the same way as its train split (local or hub); other
    GLUE tasks' dev splits only when found locally; UMSAB English val/test for ``tweets_en``;
    XNLI English dev/test for ``mnli_sample`` (the zero-shot evaluation it serves).
    """
    sources = _check_sources(sources)
    texts: list[str] = []
    for name, spec in TASKS.items():
        for split in spec.splits:
            if split == "train":
                continue
            if name in sources or find_glue_file(name, split, data_dir) is not None:
                texts += _rows_text(load_task(name, split, data_dir=data_dir), spec.text_fields)
    if "tweets_en" in sources:
        for split in ("validation", "test"):
            texts += load_sentiment("en", split, data_dir=data_dir)["text"]
    if "mnli_sample" in sources:
        for split in ("validation", "test"):
            texts += _rows_text(load_xnli("en", split, data_dir=data_dir), ("premise", "hypothesis"))
    return {normalise(text) for text in texts}


def _finish(
    named_texts: Iterable[tuple[str, Iterable[str]]], name: str, limit: int | None, seed: int, exclude: set[str] = frozenset()
) -> SentenceCorpus:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ValueError(f"limit={limit!r} must be a positive integer or None (every sentence)")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    kept: dict[str, str] = {}
    counts: dict[str, int] = {}
    removed: set[str] = set()
    for source, texts in named_texts:
        before = len(kept)
        for text in texts:
            sentence = " ".join(text.split())
            key = sentence.casefold()
            if not key:
                continue
            if key in exclude:
                removed.add(key)
            elif key not in kept:
                kept[key] = sentence
        counts[source] = len(kept) - before
    unique = list(kept.values())
    order = np.random.default_rng(int(seed)).permutation(len(unique))
    if limit is not None:
        order = order[: int(limit)]
    return SentenceCorpus([unique[i] for i in order], name=name, counts=counts, removed_heldout=len(removed))


def offline_corpus(
    sources: Sequence[str] = OFFLINE_SOURCES,
    data_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    seed: int = 0,
    exclude_heldout: bool = True,
) -> SentenceCorpus:
    """The offline stage-1 corpus (see the module docstring) from the training splits of ``sources``."""
    sources = _check_sources(sources)
    exclude = heldout_sentences(sources, data_dir) if exclude_heldout else set()
    named = [(source, source_sentences(source, data_dir)) for source in sources]
    return _finish(named, name="offline:" + "+".join(sources), limit=limit, seed=seed, exclude=exclude)


# --------------------------------------------------------------------------- hub text corpora

_WIKITEXT_HEADING = re.compile(r"^=+\s.*\s=+$")
# wikitext's tokenised numbers and hyphens: "1 @,@ 000", "state @-@ of", "3 @.@ 5"
_WIKITEXT_MARKERS = re.compile(r" @([-,.])@ ")
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) before whitespace and an
# upper-case letter, digit or opening quote. A rule, not a trained splitter: abbreviations such as
# "Dr. Smith" are split too, which costs a few broken sentences in a pre-training corpus.
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(paragraph: str) -> list[str]:
    """Cut a paragraph into sentences with the rule above; whitespace is collapsed."""
    text = " ".join(paragraph.split())
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def clean_wikitext_line(line: str) -> str:
    """A wikitext line without its ``@-@``/``@,@``/``@.@`` markers; headings and blank lines -> ''."""
    stripped = line.strip()
    if not stripped or _WIKITEXT_HEADING.match(stripped):
        return ""
    return _WIKITEXT_MARKERS.sub(r"\1", f" {stripped} ").strip()


def hub_corpus(
    path: str,
    name: str | None = None,
    split: str = "train",
    text_column: str = "text",
    limit: int | None = None,
    seed: int = 0,
    min_words: int = 3,
    loader: Callable[..., Any] | None = None,
) -> SentenceCorpus:
    """Sentences of a hub text corpus, e.g. ``hub_corpus("wikitext", "wikitext-103-raw-v1")``.

    Each row's ``text_column`` is cleaned (:func:`clean_wikitext_line`: harmless for other corpora),
    split into sentences (:func:`split_sentences`), and sentences of fewer than ``min_words`` words
    (whitespace-separated tokens holding a letter or digit) are dropped. ``loader`` replaces ``datasets.load_dataset``.
    """
    dataset = hub_split(path, name, split, missing=f"the text corpus {path!r} (config {name!r}, split {split!r}) lives on the hub.",
                        fix="give this machine network access to the Hugging Face hub (or a warm cache); offline, use offline_corpus().",
                        loader=loader)
    columns = getattr(dataset, "column_names", None) or []
    if text_column not in columns:
        raise ValueError(f"text_column={text_column!r} is not a column of {path!r}; its columns are {columns}")

    def sentences() -> Iterable[str]:
        for line in dataset[text_column]:
            for sentence in split_sentences(clean_wikitext_line(line or "")):
                # words, not tokens: wikitext separates punctuation by spaces ("Too short .")
                if sum(any(ch.isalnum() for ch in token) for token in sentence.split()) >= min_words:
                    yield sentence

    label = f"hub:{path}" + (f"/{name}" if name else "") + f":{split}"
    return _finish([(label, sentences())], name=label, limit=limit, seed=seed)


def load_corpus(name: str = "offline", **kwargs: Any) -> SentenceCorpus:
    """``"offline"`` -> :func:`offline_corpus`; anything else is a hub dataset path -> :func:`hub_corpus`
    (``"wikitext"`` with ``config="wikitext-103-raw-v1"``, ...)."""
    if name == "offline":
        return offline_corpus(**kwargs)
    config = kwargs.pop("config", None)
    return hub_corpus(name, config, **kwargs)
