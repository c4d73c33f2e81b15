"""Teacher outputs shared by the runs of a grid (one process).

A grid of distillations (students x methods on one task and seed) reads the same teacher outputs
on the same training set: the first run builds a :class:`~ckdlab.engine.teacher_cache.TeacherCache`
(every hidden state when it fits the budget) and the pool hands it to the next. Only the latest
training set's cache is kept, which bounds memory to one cache; grids loop over tasks and seeds
outside students and methods, so each cache is built once.
"""
from __future__ import annotations

from typing import Any, Hashable

from ckdlab.engine import TeacherCache


class TeacherCachePool:
    """At most one cache, keyed by what decides the teacher's outputs (teacher, training set, length)."""

    def __init__(self) -> None:
        self._key: Hashable | None = None
        self._cache: TeacherCache | None = None

    def get(self, key: Hashable, layers: list[int]) -> TeacherCache | None:
        """The cache for ``key`` when it holds every hidden-state index in ``layers``."""
        if key != self._key or self._cache is None or not set(layers) <= set(self._cache.layers):
            return None
        return self._cache

    def put(self, key: Hashable, cache: TeacherCache | None) -> None:
        if cache is not None:
            self._key, self._cache = key, cache

    def clear(self) -> None:
        self._key, self._cache = None, None


def cache_key(teacher: dict[str, Any], task: str, train: dict[str, Any], data: dict[str, Any]) -> str:
    """A hashable key from the identity parts that decide the cached outputs."""
    from ckdlab.workspace.runs import fingerprint

    return fingerprint({"teacher": teacher, "task": task, "train_limit": train.get("train_limit"), "seed": train.get("seed"),
                        "max_length": train.get("max_length"), "data": data.get("train")})


POOL = TeacherCachePool()
