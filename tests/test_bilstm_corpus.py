"""Stage-1 data: the offline sentence corpus (training splits only), hub text corpora (faked hub),
and the disk cache of teacher sentence vectors (reuse and invalidation, counted teacher calls)."""
from __future__ import annotations

import datasets
import pytest
import torch

from ckdlab.data import TASKS, find_glue_file, load_task
from ckdlab.data.corpus import (
    OFFLINE_SOURCES,
    SentenceCorpus,
    clean_wikitext_line,
    hub_corpus,
    load_corpus,
    offline_corpus,
    split_sentences,
)
from ckdlab.data.paths import find_local
from ckdlab.data.sentiment import load_sentiment
from ckdlab.data.xnli import load_mnli_english_train, load_xnli
from ckdlab.models import load_backbone
from ckdlab.engine.sentence_cache import cached_teacher_vectors, compute_teacher_vectors

needs_shared = pytest.mark.skipif(
    any(find_local(p) is None for p in ("glue_data/SST-2/train.tsv", "xnli/hf/train-en-sample9k.jsonl", "umsab_sentiment/english")),
    reason="needs the shared offline data (set CKDLAB_DATA to the shared data folder)",
)


def key(text: str) -> str:
    return " ".join(text.split()).casefold()


def columns(dataset, names) -> list[str]:
    return [text for name in names for text in dataset[name]]


@pytest.fixture(scope="module")
def corpus() -> SentenceCorpus:
    return offline_corpus(seed=0)


@pytest.fixture(scope="module")
def every_heldout_sentence() -> set[str]:
    """Every dev/validation/test sentence the shared data holds, read independently of corpus.py."""
    texts: list[str] = []
    for name, spec in TASKS.items():
        for split in spec.splits:
            if split != "train" and find_glue_file(name, split) is not None:
                texts += columns(load_task(name, split), spec.text_fields)
    for split in ("validation", "test"):
        texts += load_sentiment("en", split)["text"]
        texts += columns(load_xnli("en", split), ("premise", "hypothesis"))
    return {key(t) for t in texts}


@needs_shared
def test_offline_corpus_holds_no_heldout_sentence(corpus, every_heldout_sentence):
    assert len(every_heldout_sentence) > 20_000
    keys = {key(s) for s in corpus.sentences}
    assert not keys & every_heldout_sentence
    assert corpus.removed_heldout > 0  # MRPC/STS-B/RTE/CoLA train share sentences with dev splits


@needs_shared
def test_offline_corpus_is_every_training_sentence_once(corpus, every_heldout_sentence):
    texts = []
    for task in ("sst2", "cola", "mrpc", "stsb", "rte"):
        texts += columns(load_task(task, "train"), TASKS[task].text_fields)
    texts += columns(load_mnli_english_train(), ("premise", "hypothesis"))
    texts += load_sentiment("en", "train")["text"]
    expected = {key(t) for t in texts if t.strip()} - every_heldout_sentence
    keys = [key(s) for s in corpus.sentences]
    assert len(keys) == len(set(keys)) == len(expected)
    assert set(keys) == expected
    assert sum(corpus.counts.values()) == len(corpus) and list(corpus.counts) == list(OFFLINE_SOURCES)


@needs_shared
def test_offline_corpus_order_is_seeded_and_limits_are_prefixes():
    sources = ("rte", "cola")
    full = offline_corpus(sources=sources, seed=0)
    small = offline_corpus(sources=sources, limit=50, seed=0)
    assert small.sentences == full.sentences[:50] and set(full.counts) == set(sources)
    other_seed = offline_corpus(sources=sources, seed=1)
    assert other_seed.sentences[:50] != small.sentences and sorted(other_seed.sentences) == sorted(full.sentences)
    assert small.fingerprint() != offline_corpus(sources=sources, limit=51, seed=0).fingerprint()
    assert small.fingerprint() == SentenceCorpus(list(small.sentences), name="copy").fingerprint()


def test_corpus_argument_errors():
    with pytest.raises(ValueError, match="choose one or more of"):
        offline_corpus(sources=["wikipedia"])
    with pytest.raises(ValueError, match="limit=0"):
        hub_corpus("x", loader=lambda *a, **k: datasets.Dataset.from_dict({"text": ["one two three"]}), limit=0)


def test_sentence_splitting_and_wikitext_cleaning():
    assert split_sentences("It rains. The streets are wet! Is it over? \"Yes,\" he said. 3 cats sat.") == [
        "It rains.", "The streets are wet!", "Is it over?", "\"Yes,\" he said.", "3 cats sat."
    ]
    assert split_sentences("Version 2.5 is out. e.g. this stays") == ["Version 2.5 is out. e.g. this stays"]
    assert split_sentences('He said "stop." Then (quietly) he left.') == ['He said "stop."', "Then (quietly) he left."]
    assert clean_wikitext_line(" = = Early life = = \n") == ""
    assert clean_wikitext_line("   \n") == ""
    assert clean_wikitext_line(" The 1998 – 99 season @-@ opener . \n") == "The 1998 – 99 season-opener ."
    assert clean_wikitext_line(" The state @-@ of @-@ the @-@ art costs 1 @,@ 000 or 3 @.@ 5 units . \n") == (
        "The state-of-the-art costs 1,000 or 3.5 units ."
    )


WIKITEXT_ROWS = [
    "",
    " = Valkyria Chronicles III = \n",
    "",
    " Senjō no Valkyria 3 is a tactical role @-@ playing game . It was released in January 2011 . Too short . \n",
    " = = Gameplay = = \n",
    " It was released in January 2011 . The game 's battle system returns from previous entries . \n",
]


def test_hub_corpus_through_a_faked_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split))
        return datasets.Dataset.from_dict({"text": WIKITEXT_ROWS})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    corpus = load_corpus("wikitext", config="wikitext-103-raw-v1", seed=0)
    assert calls == [("wikitext", "wikitext-103-raw-v1", "train")]
    assert sorted(corpus.sentences) == sorted([
        "Senjō no Valkyria 3 is a tactical role-playing game .",
        "It was released in January 2011 .",
        "The game 's battle system returns from previous entries .",
    ])  # headings, blanks, the 2-word sentence and the repeated sentence are gone
    assert corpus.name == "hub:wikitext/wikitext-103-raw-v1:train" and corpus.counts == {corpus.name: 3}
    assert hub_corpus("wikitext", "wikitext-103-raw-v1", limit=2, seed=0).sentences == corpus.sentences[:2]


def test_hub_corpus_errors(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="offline_corpus"):
        hub_corpus("wikitext", "wikitext-2-raw-v1")
    table = datasets.Dataset.from_dict({"sentence": ["a b c"]})
    with pytest.raises(ValueError, match="text_column='text'.*'sentence'"):
        hub_corpus("glue", loader=lambda *a, **k: table)


# --------------------------------------------------------------------------- teacher-vector cache

SENTENCES = [
    "A man is playing a guitar on the street.",
    "hi",
    "The committee approved the budget after a long and heated debate about schools.",
    "Cats sleep.",
    "Nobody expected the ending, least of all the director.",
]


@pytest.fixture
def counted_teacher():
    teacher, tokenizer = load_backbone("tiny-random", num_labels=2)
    calls = []
    teacher.base_model.register_forward_hook(lambda module, args, output: calls.append(1))
    return teacher, tokenizer, calls


def test_cached_vectors_equal_one_sentence_at_a_time(counted_teacher):
    teacher, tokenizer, _ = counted_teacher
    teacher.train()  # the cache must switch to eval mode (no dropout) and restore the mode
    vectors = compute_teacher_vectors(teacher, tokenizer, SENTENCES, batch_size=2)
    assert teacher.training
    teacher.eval()
    with torch.no_grad():
        for row, sentence in enumerate(SENTENCES):
            alone = teacher.base_model(**tokenizer(sentence, return_tensors="pt")).last_hidden_state[0].mean(dim=0)
            torch.testing.assert_close(vectors[row], alone, rtol=0, atol=1e-5)
        cls = compute_teacher_vectors(teacher, tokenizer, SENTENCES, pooling="cls")
        torch.testing.assert_close(cls[1], teacher.base_model(**tokenizer(SENTENCES[1], return_tensors="pt")).last_hidden_state[0, 0])


def test_cache_is_reused_without_running_the_teacher(counted_teacher, tmp_path):
    teacher, tokenizer, calls = counted_teacher
    first = cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path, batch_size=2)
    assert not first.reused and len(calls) == 3  # 5 sentences in batches of 2
    assert (first.path / "vectors.safetensors").exists() and (first.path / "meta.json").exists()
    tokenizer(["other", "calls"], truncation=True, max_length=4, padding="max_length")  # must not change the key
    second = cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path, batch_size=2)
    assert second.reused and len(calls) == 3
    assert torch.equal(first.vectors, second.vectors) and second.path == first.path


def test_cache_is_invalidated_by_teacher_corpus_and_settings(counted_teacher, tmp_path):
    teacher, tokenizer, calls = counted_teacher
    base = cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path)
    runs = len(calls)
    changed_corpus = cached_teacher_vectors(teacher, tokenizer, [*SENTENCES, "One more sentence."], tmp_path)
    reordered = cached_teacher_vectors(teacher, tokenizer, SENTENCES[::-1], tmp_path)
    other_pooling = cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path, pooling="mean-layers", layers=[1, 2])
    shorter = cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path, max_length=6)
    for result in (changed_corpus, reordered, other_pooling, shorter):
        assert not result.reused and result.fingerprint != base.fingerprint
    assert len(calls) == runs + 4
    with torch.no_grad():
        teacher.base_model.encoder.layer[0].output.dense.weight[0, 0] += 1e-3
    retrained = cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path)
    assert not retrained.reused and not torch.equal(retrained.vectors, base.vectors)
    with torch.no_grad():
        teacher.classifier.weight.add_(1.0)  # the head does not change sentence vectors: still cached
    assert cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path).reused


def test_a_damaged_cache_is_recomputed(counted_teacher, tmp_path):
    teacher, tokenizer, calls = counted_teacher
    first = cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path)
    (first.path / "vectors.safetensors").write_bytes(b"not a safetensors file")
    again = cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path)
    assert not again.reused and torch.equal(again.vectors, first.vectors)
    assert cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path).reused
    assert not list(tmp_path.glob(".*"))  # no temporary folders left behind


def test_cache_argument_errors(counted_teacher, tmp_path):
    teacher, tokenizer, _ = counted_teacher
    with pytest.raises(ValueError, match="sentences is empty"):
        compute_teacher_vectors(teacher, tokenizer, [])
    with pytest.raises(ValueError, match="max_length"):
        compute_teacher_vectors(teacher, tokenizer, SENTENCES, max_length=1)
    with pytest.raises(ValueError, match="pooling='first' is not known"):
        cached_teacher_vectors(teacher, tokenizer, SENTENCES, tmp_path, pooling="first")
