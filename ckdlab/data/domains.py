"""Domains and ordered domain pairs for compression under domain shift (AMoC).

A :class:`Domain` is one distribution of one task; a :class:`DomainPair` trains on its ``source``
and is judged on its ``target``. Every domain reads four roles, each from data the other roles never
touch (dev/test discipline):

=============== ===========================================================================
``train``       labelled source training data (the base model and the candidates)
``source_dev``  labelled data for choices made at selection time (candidates' source score)
``unlabeled``   target text with no labels (the ATE is measured on it); text columns only
``test``        the labelled split the reported target numbers come from
=============== ===========================================================================

Where a corpus has no labelled test split (GLUE's test labels are hidden), its dev split is the
reported ``test`` and ``source_dev`` is a held-out slice of train: a fixed seeded 20 % of the
training rows, at most 2,000 (:data:`HELD_OUT_FRACTION`, :data:`HELD_OUT_CAP`, :data:`SPLIT_SEED`),
removed from ``train``. ``unlabeled`` is the domain's whole training text, labels never read.

Families (``Domain.describe()`` says where each role comes from):

- ``sentiment``: movie reviews (SST-2) <-> English tweets (XLM-T, negative/positive only, relabelled
  to SST-2's ids 0 = negative, 1 = positive, neutral dropped, text column ``sentence``); ``minilm-l6``.
  SST-2's ``test`` is its GLUE dev split, its ``source_dev`` a held-out train slice (SST-2's train
  rows are phrases of its training sentences: in-domain, not unseen sentences -- fine for ranking
  candidates, all it is used for).
- ``stsb-genre``: STS-B's genres ``main-news``, ``main-captions``, ``main-forum`` (dev spells it
  ``main-forums``), Spearman; needs GLUE's original TSVs (the hub copy has no genre column).
- ``tweets-language``: XLM-T's 8 languages, 3 classes, ``me5-small``.
- ``mnli-genre`` (hub ``nyu-mll/multi_nli``) and ``amazon-category`` (hub :data:`AMAZON_HUB_ID`:
  English reviews, 1-2 stars negative, 4-5 positive, 3 dropped, as Blitzer et al. and AMoC binarise).
"""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Callable, Mapping, Sequence

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, Value

from ckdlab.data import glue
from ckdlab.data.glue import find_glue_file, load_task, read_glue_tsv, take_subset
from ckdlab.data.hub import DataNotFoundError, hub_split
from ckdlab.data.sentiment import (
    SENTIMENT_ISO_CODES,
    SENTIMENT_LABELS,
    SENTIMENT_LANGUAGES,
    check_sentiment_language,
    load_sentiment,
)
from ckdlab.data.tasks import SENTIMENT_TASK, TaskSpec, get_task

ROLES = ("train", "source_dev", "unlabeled", "test")
HELD_OUT_FRACTION, HELD_OUT_CAP, SPLIT_SEED = 0.2, 2000, 0

STSB_GENRES = ("main-news", "main-captions", "main-forum")
MNLI_HUB_ID = "nyu-mll/multi_nli"
MNLI_GENRES = ("fiction", "government", "slate", "telephone", "travel")
AMAZON_HUB_ID = "mgb-dx-meetup/product-reviews"
"""A public parquet subset of the Multilingual Amazon Reviews Corpus (20,000 train / 1,500 test reviews
in en/de/fr) with its ``product_category``, ``stars``, ``review_body`` and ``language`` columns. The
full corpus (``amazon_reviews_multi``) has been withdrawn from the hub; any copy with these columns
works through ``amazon_category_domain(..., hub_id=...)``."""
AMAZON_CATEGORIES = ("book", "electronics", "kitchen", "beauty")
"""Blitzer et al.'s classic domains are books, DVD, electronics and kitchen; the corpus has no DVD
category, so beauty (one of AMoC's own Amazon domains) takes its place."""

# Tweets use the cross-lingual sentiment task's spec (labels negative / neutral / positive).
TWEET_SENTIMENT_TASK = SENTIMENT_TASK


# --------------------------------------------------------------------------- shared helpers


def held_out_split(ds: Dataset) -> tuple[Dataset, Dataset]:
    """``(rest, held_out)``: a fixed seeded slice of ``HELD_OUT_FRACTION`` of the rows (at most
    ``HELD_OUT_CAP``) and the remaining rows, both in their original order."""
    n_held_out = min(HELD_OUT_CAP, round(HELD_OUT_FRACTION * len(ds)))
    if n_held_out < 1 or n_held_out >= len(ds):
        raise ValueError(f"a split of {len(ds)} rows is too small to hold out a source dev slice from it")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(ds))
    return ds.select(np.sort(order[n_held_out:])), ds.select(np.sort(order[:n_held_out]))


def _labelled(ds: Dataset, task: TaskSpec) -> Dataset:
    """Keep the task's text columns and ``label``, typed as the task's labels."""
    label = Value("float32") if task.is_regression else ClassLabel(names=list(task.label_names))
    ds = ds.select_columns([*task.text_fields, "label"])
    return ds.cast(datasets.Features({**{f: Value("string") for f in task.text_fields}, "label": label}))


def _by_role(role: str, read_train: Callable[[], Dataset], read_dev: Callable[[], Dataset] | None,
             read_test: Callable[[], Dataset]) -> Dataset:
    """The four roles from a corpus's train, dev (``None``: hold a slice of train out) and test reads."""
    if role == "test":
        return read_test()
    if role == "source_dev" and read_dev is not None:
        return read_dev()
    train = read_train()
    if role == "unlabeled" or read_dev is not None:
        return train
    rest, held_out = held_out_split(train)
    return rest if role == "train" else held_out


def _hub(path: str, split: str, hint: str) -> Dataset:
    ds = hub_split(path, None, split, missing=f"{path} split {split!r} is read from the Hugging Face hub only. {hint}",
                   fix="give this machine network access to the hub, or a warm datasets cache.")
    if not isinstance(ds, Dataset):
        raise ValueError(f"{path} split {split!r}: expected one datasets.Dataset, got {type(ds).__name__}")
    return ds


def _require_columns(ds: Dataset, columns: Sequence[str], source: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {ds.column_names}")


# --------------------------------------------------------------------------- family readers


def _read_sentiment(key: str, role: str, data_dir: str | os.PathLike | None) -> Dataset:
    task = get_task("sst2")
    if key == "sst2":
        return _by_role(role, lambda: _labelled(load_task(task, "train", data_dir), task), None,
                        lambda: _labelled(load_task(task, "dev", data_dir), task))

    def tweets(split: str, keep_neutral: bool = False) -> Dataset:
        ds = load_sentiment(key, split, data_dir).rename_column("text", "sentence")
        if keep_neutral:
            return ds
        to_sst2 = {SENTIMENT_LABELS.index(name): task.label_names.index(name) for name in ("negative", "positive")}
        ds = ds.filter(lambda label: label in to_sst2, input_columns="label")
        ds = ds.cast_column("label", Value("int64"))
        ds = ds.map(lambda label: {"label": to_sst2[label]}, input_columns="label")
        return _labelled(ds, task)

    if role == "unlabeled":  # labels are never read, so neutral tweets stay: real unlabelled text has them
        return tweets("train", keep_neutral=True)
    return _by_role(role, lambda: tweets("train"), lambda: tweets("validation"), lambda: tweets("test"))


def _stsb_genre_split(genre: str, split: str, data_dir: str | os.PathLike | None) -> Dataset:
    path = find_glue_file("stsb", split, data_dir)
    if path is None:
        raise DataNotFoundError(
            f"STS-B genre domains need GLUE's original STS-B {split} TSV (glue_data/STS-B/*.tsv); the hub copy has "
            "no genre column. Fix: set CKDLAB_DATA (or data_dir=) to the folder holding glue_data/."
        )
    ds = read_glue_tsv(path, "stsb")
    # read_glue_tsv keeps only text and score; the genre column comes from the same lines, same order.
    lines = glue._read_lines(path)
    position = lines[0].split("\t").index("genre")
    genres = [_stsb_genre_name(line.split("\t")[position]) for line in lines[1:]]
    if len(genres) != len(ds):
        raise ValueError(f"{path}: {len(genres)} genre values for {len(ds)} rows; the file changed while reading")
    keep = [i for i, value in enumerate(genres) if value == genre]
    if not keep:
        raise ValueError(f"{path}: no rows of genre {genre!r} (found {sorted(set(genres))})")
    return _labelled(ds.select(keep), get_task("stsb"))


def _stsb_genre_name(value: str) -> str:
    # GLUE's STS-B train says "main-forum" where dev says "main-forums"; one genre, one name.
    return "main-forum" if value == "main-forums" else value


def _read_stsb_genre(key: str, role: str, data_dir: str | os.PathLike | None) -> Dataset:
    return _by_role(role, lambda: _stsb_genre_split(key, "train", data_dir), None,
                    lambda: _stsb_genre_split(key, "dev", data_dir))


def _read_tweets_language(key: str, role: str, data_dir: str | os.PathLike | None) -> Dataset:
    def read(split: str) -> Dataset:
        return _labelled(load_sentiment(key, split, data_dir), TWEET_SENTIMENT_TASK)

    return _by_role(role, lambda: read("train"), lambda: read("validation"), lambda: read("test"))


def _mnli_genre_split(genre: str, split: str) -> Dataset:
    task = get_task("mnli")
    ds = _hub(MNLI_HUB_ID, split, "MultiNLI is not in the offline data.")
    source = f"{MNLI_HUB_ID} split {split!r}"
    _require_columns(ds, ["premise", "hypothesis", "label", "genre"], source)
    feature = ds.features["label"]
    if isinstance(feature, ClassLabel) and tuple(feature.names) != task.label_names:
        raise ValueError(f"{source}: label names {feature.names} differ from {list(task.label_names)}; class ids would mix")
    # MultiNLI marks pairs without a gold label with -1; they cannot be scored, so they are dropped.
    ds = ds.filter(lambda g, label: g == genre and label >= 0, input_columns=["genre", "label"])
    if len(ds) == 0:
        raise ValueError(f"{source}: no labelled rows of genre {genre!r}; genres are {list(MNLI_GENRES)}")
    if max(ds["label"]) >= task.num_labels:
        raise ValueError(f"{source}: labels outside 0..{task.num_labels - 1} in genre {genre!r}")
    return _labelled(ds, task)


def _read_mnli_genre(key: str, role: str, data_dir: str | os.PathLike | None) -> Dataset:
    return _by_role(role, lambda: _mnli_genre_split(key, "train"), None,
                    lambda: _mnli_genre_split(key, "validation_matched"))


def _amazon_split(hub_id: str, category: str, split: str, binary: bool) -> Dataset:
    task = get_task("sst2")
    ds = _hub(hub_id, split, "Amazon reviews are not in the offline data.")
    source = f"{hub_id} split {split!r}"
    _require_columns(ds, ["review_body", "stars", "product_category", "language"], source)
    ds = ds.filter(lambda c, lang: c == category and lang == "en", input_columns=["product_category", "language"])
    if len(ds) == 0:
        raise ValueError(f"{source}: no English reviews of category {category!r}")
    ds = ds.rename_column("review_body", "sentence")
    if not binary:
        return ds.select_columns(["sentence"])
    ds = ds.filter(lambda stars: stars != 3, input_columns="stars")
    bad = [s for s in set(ds["stars"]) if s not in (1, 2, 4, 5)]
    if bad:
        raise ValueError(f"{source}: star ratings {sorted(bad)} are not in 1..5")
    ds = ds.map(lambda stars: {"label": task.label_names.index("positive" if stars >= 4 else "negative")},
                input_columns="stars")
    return _labelled(ds, task)


def _read_amazon(key: str, role: str, data_dir: str | os.PathLike | None) -> Dataset:
    hub_id, category = key.split("::", 1)
    if role == "unlabeled":  # every review of the category, 3-star ones included: no label is read
        return _amazon_split(hub_id, category, "train", binary=False)
    return _by_role(role, lambda: _amazon_split(hub_id, category, "train", True), None,
                    lambda: _amazon_split(hub_id, category, "test", True))


@dataclass(frozen=True)
class _Family:
    task: TaskSpec
    base_model: str
    read: Callable[[str, str, str | os.PathLike | None], Dataset]
    sources: Mapping[str, str]


_HELD_OUT = f"a fixed seeded {HELD_OUT_FRACTION:.0%} slice of train (at most {HELD_OUT_CAP:,} rows), removed from train"
FAMILIES: Mapping[str, _Family] = MappingProxyType({
    "sentiment": _Family(get_task("sst2"), "minilm-l6", _read_sentiment, MappingProxyType({
        "train": "SST-2: GLUE train minus the source dev slice; tweets: XLM-T train, negative/positive only",
        "source_dev": f"SST-2: {_HELD_OUT}; tweets: XLM-T validation, negative/positive only",
        "unlabeled": "SST-2: GLUE train sentences; tweets: every XLM-T train tweet (neutral included), no labels",
        "test": "SST-2: GLUE dev (the test labels are hidden); tweets: XLM-T test, negative/positive only",
    })),
    "stsb-genre": _Family(get_task("stsb"), "minilm-l6", _read_stsb_genre, MappingProxyType({
        "train": "the genre's rows of GLUE STS-B train minus the source dev slice",
        "source_dev": f"{_HELD_OUT} (of the genre's rows)",
        "unlabeled": "the sentence pairs of the genre's train rows, no scores",
        "test": "the genre's rows of GLUE STS-B dev (the test scores are hidden)",
    })),
    "tweets-language": _Family(TWEET_SENTIMENT_TASK, "me5-small", _read_tweets_language, MappingProxyType({
        "train": "XLM-T train of the language (3 classes)",
        "source_dev": "XLM-T validation of the language",
        "unlabeled": "the XLM-T train tweets of the language, no labels",
        "test": "XLM-T test of the language",
    })),
    "mnli-genre": _Family(get_task("mnli"), "minilm-l6", _read_mnli_genre, MappingProxyType({
        "train": f"the genre's rows of {MNLI_HUB_ID} train minus the source dev slice",
        "source_dev": f"{_HELD_OUT} (of the genre's rows)",
        "unlabeled": "the premise/hypothesis pairs of the genre's train rows, no labels",
        "test": f"the genre's rows of {MNLI_HUB_ID} validation_matched (the test labels are not public)",
    })),
    "amazon-category": _Family(get_task("sst2"), "minilm-l6", _read_amazon, MappingProxyType({
        "train": "English train reviews of the category, 1-2 stars negative, 4-5 positive, minus the source dev slice",
        "source_dev": f"{_HELD_OUT} (of the category's binary reviews)",
        "unlabeled": "every English train review of the category (3 stars included), no labels",
        "test": "English test reviews of the category, binarised as train",
    })),
})


# --------------------------------------------------------------------------- domains and pairs


@dataclass(frozen=True)
class Domain:
    """One domain: its ``name``, ``family`` (a key of :data:`FAMILIES`) and the ``key`` its reader takes."""

    name: str
    family: str
    key: str

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family={self.family!r} is not one of {list(FAMILIES)}")

    @property
    def task(self) -> TaskSpec:
        """The task spec the domain's datasets follow (text columns, labels, headline metric)."""
        return FAMILIES[self.family].task

    @property
    def base_model(self) -> str:
        """The teacher this workbench fine-tunes on the domain's family."""
        return FAMILIES[self.family].base_model

    def describe(self) -> dict[str, str]:
        """Where each role's data comes from, in words."""
        return dict(FAMILIES[self.family].sources)

    def load(self, role: str, data_dir: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0) -> Dataset:
        """The ``role`` (one of :data:`ROLES`) as a ``Dataset``: the task's text columns plus ``label``
        (``unlabeled``: text columns only). ``limit`` keeps a seeded random subset, in order."""
        if role not in ROLES:
            raise ValueError(f"role={role!r} is not one of {ROLES}")
        ds = FAMILIES[self.family].read(self.key, role, data_dir)
        ds = ds.select_columns([*self.task.text_fields, *([] if role == "unlabeled" else ["label"])])
        return take_subset(ds, limit, seed)


@dataclass(frozen=True)
class DomainPair:
    """Train on ``source``, deploy on ``target`` (both of one family, so one model fits both)."""

    source: Domain
    target: Domain

    def __post_init__(self) -> None:
        if self.source.family != self.target.family:
            raise ValueError(f"source {self.source.name!r} ({self.source.family}) and target {self.target.name!r} "
                             f"({self.target.family}) must be of one family")
        if self.source == self.target:
            raise ValueError(f"source and target are both {self.source.name!r}; a pair needs two domains")

    @property
    def name(self) -> str:
        return f"{self.source.name}->{self.target.name}"

    def source_train(self, data_dir: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0) -> Dataset:
        return self.source.load("train", data_dir, limit, seed)

    def source_dev(self, data_dir: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0) -> Dataset:
        return self.source.load("source_dev", data_dir, limit, seed)

    def target_unlabeled(self, data_dir: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0) -> Dataset:
        return self.target.load("unlabeled", data_dir, limit, seed)

    def target_test(self, data_dir: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0) -> Dataset:
        return self.target.load("test", data_dir, limit, seed)


def ordered_pairs(domains: Sequence[Domain]) -> list[DomainPair]:
    """Every ordered pair of distinct domains: n (n - 1) pairs."""
    return [DomainPair(s, t) for s, t in itertools.permutations(domains, 2)]


def sentiment_domains() -> list[Domain]:
    return [Domain("sst2", "sentiment", "sst2"), Domain("tweets-en-binary", "sentiment", "english")]


def stsb_genre_domains() -> list[Domain]:
    return [Domain(f"stsb-{genre.split('-', 1)[1]}", "stsb-genre", genre) for genre in STSB_GENRES]


def tweet_language_domains(languages: Sequence[str] = SENTIMENT_LANGUAGES) -> list[Domain]:
    names = dict.fromkeys(check_sentiment_language(language) for language in languages)
    iso = {name: code for code, name in SENTIMENT_ISO_CODES.items()}
    return [Domain(f"tweets-{iso[name]}", "tweets-language", name) for name in names]


def tweet_language_pairs(n_pairs: int | None = 8, seed: int = 0,
                         languages: Sequence[str] = SENTIMENT_LANGUAGES) -> list[DomainPair]:
    """A seeded subset of ``n_pairs`` ordered language pairs (``None``: all 56), in a fixed order."""
    pairs = ordered_pairs(tweet_language_domains(languages))
    if n_pairs is None or n_pairs >= len(pairs):
        return pairs
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, int) or n_pairs < 1:
        raise ValueError(f"n_pairs must be a positive int or None (all pairs), got {n_pairs!r}")
    chosen = np.random.default_rng(seed).choice(len(pairs), size=n_pairs, replace=False)
    return [pairs[i] for i in sorted(int(i) for i in chosen)]


def mnli_genre_domains(genres: Sequence[str] = MNLI_GENRES) -> list[Domain]:
    unknown = [g for g in genres if g not in MNLI_GENRES]
    if unknown:
        raise ValueError(f"genres {unknown} are not MultiNLI train genres; choose from {list(MNLI_GENRES)}")
    return [Domain(f"mnli-{genre}", "mnli-genre", genre) for genre in genres]


def amazon_category_domain(category: str, hub_id: str = AMAZON_HUB_ID) -> Domain:
    if not category or "::" in category or "::" in hub_id:
        raise ValueError(f"category={category!r} / hub_id={hub_id!r}: give a product_category value and a hub id")
    return Domain(f"amazon-{category}", "amazon-category", f"{hub_id}::{category}")


def domain_pairs(family: str, **options: object) -> list[DomainPair]:
    """The pairs a study runs for ``family``: all ordered pairs of its domains (``tweets-language``:
    :func:`tweet_language_pairs` with ``options``; ``mnli-genre``: ``genres=``; ``amazon-category``:
    ``categories=``, ``hub_id=``)."""
    if family == "sentiment":
        return ordered_pairs(sentiment_domains())
    if family == "stsb-genre":
        return ordered_pairs(stsb_genre_domains())
    if family == "tweets-language":
        return tweet_language_pairs(**options)  # type: ignore[arg-type]
    if family == "mnli-genre":
        return ordered_pairs(mnli_genre_domains(**options))  # type: ignore[arg-type]
    if family == "amazon-category":
        categories = options.pop("categories", AMAZON_CATEGORIES)
        return ordered_pairs([amazon_category_domain(c, **options) for c in categories])  # type: ignore[arg-type, union-attr]
    raise ValueError(f"family={family!r} is not one of {list(FAMILIES)}")
