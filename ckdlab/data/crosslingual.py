"""Cross-lingual tasks for zero-shot transfer: train on one language, evaluate on many.

A :class:`ZeroShotTask` couples a task's :class:`~ckdlab.data.tasks.TaskSpec` (XNLI or XLM-T tweet
sentiment) with its languages and its readers: the source-language training set, labelled dev/test
splits per language, and unlabeled sentences for task-agnostic distillation.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import datasets

from ckdlab.data.sentiment import SENTIMENT_ISO_CODES, load_sentiment
from ckdlab.errors import UserError
from ckdlab.data.tasks import SENTIMENT_TASK, XNLI_TASK, TaskSpec
from ckdlab.data.xnli import XNLI_LANGUAGES, load_mnli_english_train, load_xnli, multilingual_unlabeled_sentences


@dataclass(frozen=True)
class ZeroShotTask:
    """A cross-lingual task: its :class:`TaskSpec`, its languages, and how to read each split.

    ``train`` reads the source-language training set; ``split(language, "dev"|"test")`` a labelled
    evaluation split; ``unlabeled(languages)`` sentences for task-agnostic distillation.
    """

    spec: TaskSpec
    languages: tuple[str, ...]
    source_language: str
    _train: Callable[..., datasets.Dataset]
    _split: Callable[..., datasets.Dataset]
    _unlabeled: Callable[..., list[str]]

    def check_languages(self, languages: Iterable[str] | None) -> list[str]:
        """``languages`` lower-cased and validated (``None`` = all of the task's languages)."""
        if languages is None:
            return list(self.languages)
        if isinstance(languages, str):
            languages = [languages]
        codes = [str(code).strip().lower() for code in languages]
        unknown = [code for code in codes if code not in self.languages]
        if unknown:
            raise UserError(f"languages {unknown} are not {self.spec.name} languages; choose from {', '.join(self.languages)}")
        if not codes:
            raise UserError(f"languages is empty; pass some of {', '.join(self.languages)}")
        return list(dict.fromkeys(codes))

    def train(self, data_dir: str | os.PathLike | None = None, limit: int | None = None, seed: int = 0) -> datasets.Dataset:
        return self._train(data_dir=data_dir, limit=limit, seed=seed)

    def split(self, language: str, split: str, data_dir: str | os.PathLike | None = None,
              limit: int | None = None, seed: int = 0) -> datasets.Dataset:
        if split not in ("dev", "test"):
            raise UserError(f"split={split!r}: zero-shot evaluation reads 'dev' (for selection) or 'test' (for reporting)")
        (language,) = self.check_languages([language])
        return self._split(language, split, data_dir=data_dir, limit=limit, seed=seed)

    def unlabeled(self, languages: Iterable[str] | None = None, data_dir: str | os.PathLike | None = None,
                  limit_per_language: int | None = None, seed: int = 0) -> list[str]:
        return self._unlabeled(self.check_languages(languages), data_dir=data_dir, limit_per_language=limit_per_language, seed=seed)


def _sentiment_unlabeled(languages, data_dir=None, limit_per_language=None, seed=0) -> list[str]:
    texts: dict[str, None] = {}
    for language in languages:
        for text in load_sentiment(language, "dev", data_dir=data_dir, limit=limit_per_language, seed=seed)["text"]:
            texts.setdefault(text, None)
    return list(texts)


ZERO_SHOT_TASKS: Mapping[str, ZeroShotTask] = MappingProxyType({
    "xnli": ZeroShotTask(
        XNLI_TASK, XNLI_LANGUAGES, "en",
        _train=load_mnli_english_train,
        _split=lambda language, split, **kw: load_xnli(language, split, **kw),
        # XNLI dev sentences (labels dropped): the offline stand-in for multilingual pre-training text.
        _unlabeled=lambda languages, **kw: multilingual_unlabeled_sentences(languages, "dev", **kw),
    ),
    "sentiment": ZeroShotTask(
        SENTIMENT_TASK, tuple(SENTIMENT_ISO_CODES), "en",
        _train=lambda **kw: load_sentiment("en", "train", **kw),
        _split=lambda language, split, **kw: load_sentiment(language, split, **kw),
        _unlabeled=_sentiment_unlabeled,
    ),
})


def get_zero_shot_task(task: str | ZeroShotTask) -> ZeroShotTask:
    if isinstance(task, ZeroShotTask):
        return task
    key = str(task).strip().lower()
    if key not in ZERO_SHOT_TASKS:
        raise UserError(f"unknown zero-shot task {task!r}; use one of {', '.join(ZERO_SHOT_TASKS)}")
    return ZERO_SHOT_TASKS[key]
