"""The one way ckdlab reads a split from the Hugging Face hub when no local copy exists, and its one error.

Every reader (GLUE, XNLI, tweet sentiment, text corpora, domain datasets) looks for local files
first (:mod:`ckdlab.data.paths`) and then calls :func:`hub_split`; when the hub cannot provide the
split (offline, no cache, a moved dataset, authentication) the user gets one
:class:`DataNotFoundError` saying what was looked for where, the hub call that failed, and the fix.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ckdlab.errors import UserError


class DataNotFoundError(UserError, FileNotFoundError):
    """No local copy of a split was found and the hub could not provide it either."""


def load_dataset(path: str, name: str | None, split: str) -> Any:
    """``datasets.load_dataset`` (looked up at call time, so tests and mirrors can replace it)."""
    import datasets

    return datasets.load_dataset(path, name, split=split)


def hub_split(path: str, name: str | None, split: str, *, missing: str, fix: str,
              loader: Callable[..., Any] | None = None) -> Any:
    """``load_dataset(path, name, split=split)``, or a :class:`DataNotFoundError` built from ``missing``
    (what was looked for, where) and ``fix`` (how to provide it) when the hub cannot answer."""
    load = loader if loader is not None else load_dataset
    try:
        return load(path, name, split=split)
    except Exception as error:  # offline, no cache, auth, a moved dataset: all mean "not available here"
        call = f"load_dataset({path!r}, {name!r}, split={split!r})" if name is not None else f"load_dataset({path!r}, split={split!r})"
        raise DataNotFoundError(
            f"{missing}\nHugging Face hub tried: {call} failed with {type(error).__name__}: {error}\nFix: {fix}"
        ) from error
