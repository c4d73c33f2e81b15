"""XNLI / MNLI-sample / UMSAB sentiment readers: real shared files, synthetic edge cases, hub fallback."""
from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest

from ckdlab.data import hub, paths
from ckdlab.data.sentiment import SENTIMENT_ISO_CODES, SENTIMENT_LANGUAGES, load_sentiment
from ckdlab.data.xnli import (
    XNLI_LABELS,
    XNLI_LANGUAGES,
    load_mnli_english_train,
    load_xnli,
    multilingual_unlabeled_sentences,
)

HF_TEST_LANGUAGES = ("ar", "de", "en", "es", "fr", "hi", "sw", "tr", "ur", "vi", "zh")
shared = pytest.mark.skipif(
    paths.find_local("xnli/xtreme/dev-en.tsv") is None or paths.find_local("umsab_sentiment/english") is None,
    reason="the shared offline data is not available (set CKDLAB_DATA to the shared data folder)",
)


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """No data root but an empty folder, and a hub that is unreachable."""
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setattr(paths, "candidate_roots", lambda data_dir=None: [empty])

    def offline(path, name, split):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(hub, "load_dataset", offline)
    return empty


# --------------------------------------------------------------------------- XNLI, real shared files


@shared
def test_real_xnli_dev_and_test_for_all_languages():
    for language in XNLI_LANGUAGES:
        dev, test = load_xnli(language, "validation"), load_xnli(language, "test")
        assert len(dev) == 2490 and len(test) == 5010, language
        assert Counter(dev["label"]) == {0: 830, 1: 830, 2: 830}, language
        assert Counter(test["label"]) == {0: 1670, 1: 1670, 2: 1670}, language
        assert dev.column_names == ["premise", "hypothesis", "label"]
        assert dev.features["label"].names == list(XNLI_LABELS)
        assert all(p and h for p, h in zip(dev["premise"][:50], dev["hypothesis"][:50]))
    english = load_xnli("en", "dev")
    # First row of XTREME's dev-en.tsv (premise / hypothesis / "neutral").
    assert english[0] == {
        "premise": "And he said, Mama, I'm home.",
        "hypothesis": "He called his mom as soon as the school bus dropped him off.",
        "label": XNLI_LABELS.index("neutral"),
    }
    assert load_xnli("EN", "dev")["premise"] == english["premise"]


@shared
@pytest.mark.parametrize("language", HF_TEST_LANGUAGES)
def test_real_xnli_test_layouts_agree(language):
    tsv, jsonl = load_xnli(language, "test", layout="xtreme"), load_xnli(language, "test", layout="hf")
    assert tsv["label"] == jsonl["label"]
    # XTREME strips surrounding whitespace; otherwise the rows are the same.
    assert tsv["premise"] == [p.strip() for p in jsonl["premise"]]
    assert tsv["hypothesis"] == [h.strip() for h in jsonl["hypothesis"]]


@shared
def test_real_xnli_test_without_hf_file_uses_xtreme_and_derived_labels(monkeypatch):
    def offline(path, name, split):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(hub, "load_dataset", offline)
    reference = load_xnli("en", "test")["label"]
    for language in sorted(set(XNLI_LANGUAGES) - set(HF_TEST_LANGUAGES)):  # bg el ru th
        assert load_xnli(language, "test")["label"] == reference
        with pytest.raises(FileNotFoundError, match=f"xnli/hf/test-{language}.jsonl"):
            load_xnli(language, "test", layout="hf")


@shared
def test_real_mnli_sample_and_unlabeled_sentences():
    train = load_mnli_english_train()
    assert len(train) == 9000 and Counter(train["label"]) == {0: 3000, 1: 3000, 2: 3000}
    sentences = multilingual_unlabeled_sentences(["en", "de"], split="dev")
    english = load_xnli("en", "dev")
    assert len(sentences) == len(set(sentences))
    assert set(english["premise"]) | set(english["hypothesis"]) <= set(sentences)
    # 830 premises (each with 3 hypotheses) + 2490 hypotheses per language, minus repeats.
    assert 2 * 3000 < len(sentences) <= 2 * 3320
    sample = multilingual_unlabeled_sentences(XNLI_LANGUAGES, limit_per_language=40, seed=3)
    assert len(sample) <= 15 * 40 and len(sample) > 15 * 39
    assert sample == multilingual_unlabeled_sentences(XNLI_LANGUAGES, limit_per_language=40, seed=3)


# --------------------------------------------------------------------------- XNLI, synthetic files

DEV_ROWS = [
    ("A man sleeps.", "Someone rests.", "entailment"),
    ("Kids play\u2028outside.", "Nobody is outside.", "contradiction"),  # U+2028 must not split the row
    ("It rains.", "It is cold.", "neutral"),
]


def test_synthetic_dev_crlf_and_lf(tmp_path):
    for ending in ("\r\n", "\n"):
        root = tmp_path / repr(ending)
        write(root / "xnli/xtreme/dev-fr.tsv", "".join("\t".join(row) + ending for row in DEV_ROWS))
        dev = load_xnli("fr", "dev", data_dir=root)
        assert dev["premise"] == [row[0] for row in DEV_ROWS]
        assert dev["hypothesis"] == [row[1] for row in DEV_ROWS]
        assert dev["label"] == [0, 2, 1]


def test_synthetic_dev_errors_name_file_and_line(tmp_path):
    cases = {
        "missing label": ("A.\tB.\tneutral\r\nC.\tD.\r\n", r"dev-de\.tsv, line 2: expected 3 .* found 2"),
        "extra column": ("A.\tB.\tneutral\tX\r\n", r"dev-de\.tsv, line 1: expected 3 .* found 4"),
        "bad label": ("A.\tB.\tneutral\r\nC.\tD.\tentails\r\n", r"dev-de\.tsv, line 2: label 'entails'"),
    }
    for name, (content, message) in cases.items():
        root = tmp_path / name.replace(" ", "-")
        write(root / "xnli/xtreme/dev-de.tsv", content)
        with pytest.raises(ValueError, match=message):
            load_xnli("de", "validation", data_dir=root)


def test_synthetic_test_layouts_agree_and_validate(tmp_path):
    rows = [(p.strip(), h) for p, h, _ in DEV_ROWS]
    labels = [label for *_, label in DEV_ROWS]
    write(tmp_path / "xnli/xtreme/test-sw.tsv", "".join(f"{p}\t{h}\r\n" for p, h in rows))
    write(tmp_path / "xnli/xtreme/test-labels.DERIVED.txt", "".join(f"{label}\n" for label in labels))
    write(tmp_path / "xnli/hf/test-sw.jsonl", "".join(
        json.dumps({"premise": p, "hypothesis": h, "label": XNLI_LABELS.index(label)}) + "\n"
        for (p, h), label in zip(rows, labels)
    ))
    from_tsv = load_xnli("sw", "test", data_dir=tmp_path, layout="xtreme")
    from_jsonl = load_xnli("sw", "test", data_dir=tmp_path, layout="hf")
    assert from_tsv[:] == from_jsonl[:] == load_xnli("sw", "test", data_dir=tmp_path)[:]
    assert from_tsv["label"] == [0, 2, 1]

    write(tmp_path / "xnli/xtreme/test-labels.DERIVED.txt", "entailment\nneutral\n")
    with pytest.raises(ValueError, match="has 3 rows but its label file has 2 lines"):
        load_xnli("sw", "test", data_dir=tmp_path, layout="xtreme")
    write(tmp_path / "xnli/hf/test-sw.jsonl", '{"premise": "a", "hypothesis": "b", "label": 3}\n')
    with pytest.raises(ValueError, match=r"test-sw\.jsonl, line 1: label 3"):
        load_xnli("sw", "test", data_dir=tmp_path, layout="hf")
    write(tmp_path / "xnli/hf/test-sw.jsonl", '{"premise": "a", "label": 0}\n')
    with pytest.raises(ValueError, match=r"line 1: missing field\(s\) \['hypothesis'\]"):
        load_xnli("sw", "test", data_dir=tmp_path, layout="hf")


def test_bad_language_split_layout_and_limit():
    with pytest.raises(ValueError, match="unknown XNLI language 'xx'; choose one of ar, bg, de"):
        load_xnli("xx", "dev")
    with pytest.raises(ValueError, match="unknown XNLI split 'train'"):
        load_xnli("en", "train")
    with pytest.raises(ValueError, match="layout='tsv'"):
        load_xnli("en", "test", layout="tsv")
    for limit in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="limit="):
            load_xnli("en", "dev", limit=limit)
    with pytest.raises(ValueError, match="unknown XNLI language 'english'"):
        multilingual_unlabeled_sentences(["en", "english"])


def test_no_data_anywhere_gives_one_actionable_error(no_hub):
    with pytest.raises(FileNotFoundError) as info:
        load_xnli("th", "dev")
    message = str(info.value)
    for expected in ("xnli/xtreme/dev-th.tsv", str(no_hub), "CKDLAB_DATA", "--data-dir", "hub", "ConnectionError"):
        assert expected in message
    with pytest.raises(FileNotFoundError, match="train-en-sample9k.jsonl"):
        load_mnli_english_train()
    tried = r"test-th\.tsv \+ xnli/xtreme/test-labels.DERIVED.txt; xnli/hf/test-th"
    with pytest.raises(FileNotFoundError, match=tried):
        load_xnli("th", "test")


def test_hub_fallback_selects_columns_and_casts(no_hub, monkeypatch):
    calls = []

    def fake_hub(path, name, split):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict(
            {"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"], "label": [2, 0, 1], "idx": [0, 1, 2]}
        )

    monkeypatch.setattr(hub, "load_dataset", fake_hub)
    test = load_xnli("de", "test")
    mnli = load_mnli_english_train(limit=2, seed=0)
    assert calls == [("facebook/xnli", "de", "test"), ("nyu-mll/glue", "mnli", "train")]
    assert test.column_names == ["premise", "hypothesis", "label"] and test["label"] == [2, 0, 1]
    assert test.features["label"].names == list(XNLI_LABELS)
    assert len(mnli) == 2


# --------------------------------------------------------------------------- limit / seed


def test_limit_is_a_seeded_stable_subset_in_file_order(tmp_path):
    rows = [(f"premise {i}", f"hypothesis {i}", XNLI_LABELS[i % 3]) for i in range(200)]
    write(tmp_path / "xnli/xtreme/dev-vi.tsv", "".join("\t".join(row) + "\r\n" for row in rows))
    full = load_xnli("vi", "dev", data_dir=tmp_path)
    first = load_xnli("vi", "dev", data_dir=tmp_path, limit=25, seed=7)
    assert first[:] == load_xnli("vi", "dev", data_dir=tmp_path, limit=25, seed=7)[:]
    assert len(first) == 25 and len(set(first["premise"])) == 25
    positions = [full["premise"].index(p) for p in first["premise"]]
    assert positions == sorted(positions)
    for row, position in zip(first, positions):
        assert row == full[position]
    assert first["premise"] != load_xnli("vi", "dev", data_dir=tmp_path, limit=25, seed=8)["premise"]
    assert load_xnli("vi", "dev", data_dir=tmp_path, limit=500)[:] == full[:]


# --------------------------------------------------------------------------- sentiment


@shared
def test_real_sentiment_all_languages_and_splits():
    sizes = {"train": 1839, "validation": 324, "test": 870}
    for language in SENTIMENT_LANGUAGES:
        for split, size in sizes.items():
            data = load_sentiment(language, split)
            assert len(data) == size and Counter(data["label"]) == {0: size // 3, 1: size // 3, 2: size // 3}
            assert data.column_names == ["text", "label"]
    assert data.features["label"].names == ["negative", "neutral", "positive"]
    for code, name in SENTIMENT_ISO_CODES.items():
        assert load_sentiment(code, "val")[:] == load_sentiment(name, "validation")[:]
    assert load_sentiment("de", "dev", limit=10, seed=1)[:] == load_sentiment("german", "val", limit=10, seed=1)[:]


def test_synthetic_sentiment_files(tmp_path):
    folder = tmp_path / "umsab_sentiment" / "italian"
    write(folder / "train_text.txt", "bello @user\nbrutto\u2028davvero\nmah \\u2764")
    write(folder / "train_labels.txt", "2\n0\n1")  # no newline at EOF, as distributed
    data = load_sentiment("it", "train", data_dir=tmp_path)
    assert data["text"] == ["bello @user", "brutto\u2028davvero", "mah \\u2764"]
    assert data["label"] == [2, 0, 1]
    write(folder / "train_labels.txt", "2\n0\n1\n")  # a trailing newline is tolerated
    assert load_sentiment("italian", "train", data_dir=tmp_path)["label"] == [2, 0, 1]

    write(folder / "train_labels.txt", "2\n0")
    with pytest.raises(ValueError, match=r"train_text\.txt has 3 lines but .*train_labels\.txt has 2"):
        load_sentiment("it", "train", data_dir=tmp_path)
    write(folder / "train_labels.txt", "2\n0\npositive")
    with pytest.raises(ValueError, match=r"train_labels\.txt, line 3: label 'positive' is not 0, 1 or 2"):
        load_sentiment("it", "train", data_dir=tmp_path)


def test_sentiment_bad_input_and_no_data(no_hub):
    with pytest.raises(ValueError, match=r"unknown UMSAB sentiment language 'nl'; choose one of ar \(arabic\)"):
        load_sentiment("nl", "train")
    with pytest.raises(ValueError, match="unknown sentiment split 'dev2'"):
        load_sentiment("en", "dev2")
    with pytest.raises(FileNotFoundError, match=r"(?s)umsab_sentiment/hindi/test_text\.txt.*CKDLAB_DATA"):
        load_sentiment("hi", "test")


def test_sentiment_hub_fallback(no_hub, monkeypatch):
    def fake_hub(path, name, split):
        assert (path, name, split) == ("cardiffnlp/tweet_sentiment_multilingual", "portuguese", "validation")
        return datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 2, 1]})

    monkeypatch.setattr(hub, "load_dataset", fake_hub)
    data = load_sentiment("pt", "val", limit=3, seed=0)
    assert len(data) == 3 and data.features["label"].names == ["negative", "neutral", "positive"]
