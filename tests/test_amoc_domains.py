"""AMoC domains: real shared files (SST-2, tweets, STS-B genres, XLM-T languages), hub readers on fakes."""
from __future__ import annotations

import csv
from collections import Counter

import datasets
import pandas as pd
import pytest

from ckdlab.data import paths
from ckdlab.data.domains import (
    AMAZON_HUB_ID,
    MNLI_HUB_ID,
    ROLES,
    Domain,
    DomainPair,
    amazon_category_domain,
    domain_pairs,
    mnli_genre_domains,
    sentiment_domains,
    stsb_genre_domains,
    tweet_language_domains,
    tweet_language_pairs,
)
from ckdlab.data.glue import find_glue_file, load_task
from ckdlab.data.hub import DataNotFoundError
from ckdlab.data.sentiment import load_sentiment
from ckdlab.data.tasks import get_task

shared = pytest.mark.skipif(
    find_glue_file("sst2", "train") is None or paths.find_local("umsab_sentiment/english") is None,
    reason="the shared offline data is not available (set CKDLAB_DATA to the shared data folder)",
)


def by_name(domains):
    return {d.name: d for d in domains}


# --------------------------------------------------------------------------- sentiment: SST-2 <-> tweets


@shared
def test_tweets_binary_subset_relabelled_to_sst2_ids():
    tweets = by_name(sentiment_domains())["tweets-en-binary"]
    sst2 = get_task("sst2")
    assert tweets.task is sst2 and tweets.base_model == "minilm-l6"
    expected = {"train": (613, 613), "source_dev": (108, 108), "test": (290, 290)}
    original_split = {"train": "train", "source_dev": "validation", "test": "test"}
    for role, (negatives, positives) in expected.items():
        ds = tweets.load(role)
        assert ds.column_names == ["sentence", "label"]
        assert ds.features["label"].names == list(sst2.label_names) == ["negative", "positive"]
        assert Counter(list(ds["label"])) == {0: negatives, 1: positives}
        # The same tweets, in file order: negatives (0) stay 0, positives (2) become 1, neutrals (1) go.
        raw = load_sentiment("english", original_split[role])
        kept = [(text, {0: 0, 2: 1}[label]) for text, label in zip(list(raw["text"]), list(raw["label"])) if label != 1]
        assert list(zip(list(ds["sentence"]), list(ds["label"]))) == kept
    unlabeled = tweets.load("unlabeled")
    assert unlabeled.column_names == ["sentence"] and len(unlabeled) == 1839  # neutral tweets included


@shared
def test_sst2_roles_respect_dev_test_discipline():
    sst2 = by_name(sentiment_domains())["sst2"]
    train, dev, test = sst2.load("train"), sst2.load("source_dev"), sst2.load("test")
    assert (len(train), len(dev), len(test)) == (65_349, 2_000, 872)
    full_train = load_task("sst2", "train")
    assert sorted(list(train["sentence"]) + list(dev["sentence"])) == sorted(list(full_train["sentence"]))
    assert list(test["sentence"]) == list(load_task("sst2", "dev")["sentence"])  # GLUE dev is the labelled target set
    assert list(sst2.load("source_dev")["sentence"]) == list(dev["sentence"])  # a fixed slice, every time
    assert len(sst2.load("unlabeled")) == 67_349
    subset = list(sst2.load("train", limit=50, seed=1)["sentence"])
    assert len(subset) == 50 and subset == list(sst2.load("train", limit=50, seed=1)["sentence"])
    assert subset != list(sst2.load("train", limit=50, seed=2)["sentence"])


@shared
def test_sentiment_pairs_share_one_task():
    pairs = domain_pairs("sentiment")
    assert [p.name for p in pairs] == ["sst2->tweets-en-binary", "tweets-en-binary->sst2"]
    pair = pairs[0]
    assert pair.source_train(limit=5).column_names == pair.target_test(limit=5).column_names == ["sentence", "label"]
    assert pair.target_unlabeled(limit=5).column_names == ["sentence"]


# --------------------------------------------------------------------------- STS-B genres


@shared
def test_stsb_genres_and_their_sizes():
    genres = by_name(stsb_genre_domains())
    assert list(genres) == ["stsb-news", "stsb-captions", "stsb-forum"]
    sizes = {name: tuple(len(d.load(role)) for role in ROLES) for name, d in genres.items()}
    # (train, source dev, unlabeled, test); source dev = 20 % of the genre's train rows.
    assert sizes == {"stsb-news": (2639, 660, 3299, 500), "stsb-captions": (1600, 400, 2000, 625),
                     "stsb-forum": (360, 90, 450, 375)}
    # Independent check of the genre column with a different reader (dev spells it "main-forums").
    for split, role in (("train", "unlabeled"), ("dev", "test")):
        frame = pd.read_csv(find_glue_file("stsb", split), sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
        counts = frame["genre"].replace({"main-forums": "main-forum"}).value_counts().to_dict()
        for d in genres.values():
            assert counts[d.key] == len(d.load(role))
        forum = genres["stsb-forum"].load(role)
        expected = frame[frame["genre"].isin(["main-forum", "main-forums"])]
        assert list(forum["sentence1"]) == expected["sentence1"].tolist()
    test = genres["stsb-news"].load("test")
    assert test.features["label"].dtype == "float32" and 0.0 <= min(list(test["label"])) and max(list(test["label"])) <= 5.0
    assert [p.name for p in domain_pairs("stsb-genre")] == [
        "stsb-news->stsb-captions", "stsb-news->stsb-forum", "stsb-captions->stsb-news",
        "stsb-captions->stsb-forum", "stsb-forum->stsb-news", "stsb-forum->stsb-captions",
    ]


def test_stsb_genres_need_the_original_tsvs(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "candidate_roots", lambda data_dir=None: [tmp_path])
    with pytest.raises(DataNotFoundError, match="no genre column"):
        stsb_genre_domains()[0].load("test")


# --------------------------------------------------------------------------- XLM-T languages


@shared
def test_language_pairs_and_a_language_domain():
    pairs = tweet_language_pairs(n_pairs=8, seed=0)
    assert len(pairs) == len({p.name for p in pairs}) == 8
    assert all(p.source != p.target and p.source.family == "tweets-language" for p in pairs)
    assert [p.name for p in tweet_language_pairs(n_pairs=8, seed=0)] == [p.name for p in pairs]
    assert [p.name for p in tweet_language_pairs(n_pairs=8, seed=1)] != [p.name for p in pairs]
    assert len(tweet_language_pairs(n_pairs=None)) == 56
    german = by_name(tweet_language_domains(["de"]))["tweets-de"]
    assert german.base_model == "me5-small" and german.task.num_labels == 3
    sizes = {role: len(german.load(role)) for role in ROLES}
    assert sizes == {"train": 1839, "source_dev": 324, "unlabeled": 1839, "test": 870}
    assert Counter(list(german.load("test")["label"])) == {0: 290, 1: 290, 2: 290}
    with pytest.raises(ValueError, match="positive int"):
        tweet_language_pairs(n_pairs=0)


def test_domain_and_pair_validation():
    sst2, tweets = sentiment_domains()
    with pytest.raises(ValueError, match="role="):
        sst2.load("dev")
    with pytest.raises(ValueError, match="one family"):
        DomainPair(sst2, stsb_genre_domains()[0])
    with pytest.raises(ValueError, match="needs two domains"):
        DomainPair(sst2, sst2)
    with pytest.raises(ValueError, match="family="):
        Domain("x", "no-such-family", "x")
    with pytest.raises(ValueError, match="not MultiNLI train genres"):
        mnli_genre_domains(["9/11"])
    assert set(sst2.describe()) == set(ROLES)


# --------------------------------------------------------------------------- hub readers on small fakes


def fake_mnli(split):
    genres = ["fiction"] * 10 + ["travel"] * 6 + ["fiction"]
    labels = [i % 3 for i in range(16)] + [-1]  # the last pair has no gold label
    features = datasets.Features({
        "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
        "genre": datasets.Value("string"),
        "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
    })
    data = {"premise": [f"{split} premise {i}" for i in range(17)], "hypothesis": [f"hypothesis {i}" for i in range(17)],
            "genre": genres, "label": [0] * 17}
    ds = datasets.Dataset.from_dict(data, features=features)
    # ClassLabel refuses -1 at construction, as the hub files store it in the int column.
    return ds.cast_column("label", datasets.Value("int64")).map(lambda _, i: {"label": labels[i]}, with_indices=True)


def fake_amazon(split):
    stars = [1, 2, 3, 4, 5, 5, 1, 3, 4, 2, 5, 4]
    return datasets.Dataset.from_dict({
        "review_body": [f"{split} review {i}" for i in range(12)],
        "stars": stars,
        "product_category": ["kitchen"] * 10 + ["book"] * 2,
        "language": ["en"] * 9 + ["de"] + ["en"] * 2,
    }, features=datasets.Features({"review_body": datasets.Value("string"), "stars": datasets.Value("int32"),
                                   "product_category": datasets.Value("string"), "language": datasets.Value("string")}))


@pytest.fixture
def fake_hub(monkeypatch):
    calls = []

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        if path == MNLI_HUB_ID:
            return fake_mnli(split)
        if path == AMAZON_HUB_ID:
            return fake_amazon(split)
        raise ConnectionError(f"offline: {path}")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_mnli_genres_from_the_hub(fake_hub):
    fiction = by_name(mnli_genre_domains())["mnli-fiction"]
    train, dev, test = fiction.load("train"), fiction.load("source_dev"), fiction.load("test")
    # 10 labelled fiction pairs (the unlabelled one dropped): 2 held out for source dev, 8 train.
    assert (len(train), len(dev)) == (8, 2)
    assert sorted(list(train["premise"]) + list(dev["premise"])) == sorted(f"train premise {i}" for i in range(10))
    assert len(test) == 10 and all(p.startswith("validation_matched") for p in list(test["premise"]))
    assert test.features["label"].names == ["entailment", "neutral", "contradiction"]
    assert list(test["label"]) == [i % 3 for i in range(10)]
    assert fiction.load("unlabeled").column_names == ["premise", "hypothesis"]
    assert {call[0] for call in fake_hub} == {MNLI_HUB_ID}
    assert {call[2] for call in fake_hub} == {"train", "validation_matched"}
    assert len(domain_pairs("mnli-genre")) == 20


def test_amazon_categories_from_the_hub(fake_hub):
    kitchen = amazon_category_domain("kitchen")
    assert kitchen.name == "amazon-kitchen" and kitchen.task.name == "sst2"
    test = kitchen.load("test")
    # English kitchen reviews: stars 1 2 3 4 5 5 1 3 4 (the German one dropped); 3 stars dropped.
    assert list(test["sentence"]) == [f"test review {i}" for i in (0, 1, 3, 4, 5, 6, 8)]
    assert list(test["label"]) == [0, 0, 1, 1, 1, 0, 1]
    assert test.features["label"].names == ["negative", "positive"]
    unlabeled = kitchen.load("unlabeled")
    assert unlabeled.column_names == ["sentence"] and len(unlabeled) == 9  # 3-star reviews are text too
    assert len(kitchen.load("train")) + len(kitchen.load("source_dev")) == 7
    pairs = domain_pairs("amazon-category", categories=["kitchen", "book"])
    assert [p.name for p in pairs] == ["amazon-kitchen->amazon-book", "amazon-book->amazon-kitchen"]
    with pytest.raises(ValueError, match="no English reviews of category 'toy'"):
        amazon_category_domain("toy").load("test")


def test_hub_unreachable_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataNotFoundError, match="(?s)nyu-mll/multi_nli split 'validation_matched'.*network access"):
        mnli_genre_domains(["travel"])[0].load("test")
