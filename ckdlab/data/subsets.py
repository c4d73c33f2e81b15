"""Seeded subsets: the one way any reader takes ``limit`` rows of a split."""
from __future__ import annotations

from typing import TypeVar

import numpy as np

from ckdlab.errors import UserError

T = TypeVar("T")


def check_subset_args(limit: int | None, seed: int) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise UserError(f"limit={limit!r} must be a positive int (number of examples) or None for all")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative int, got {seed!r}")


def subset_indices(n_rows: int, limit: int | None, seed: int = 0) -> list[int] | None:
    """Row indices of a seeded random subset of ``limit`` rows, in their original order; ``None`` = all rows.

    The rows are the first ``limit`` of one seeded permutation, so for a fixed seed a smaller subset
    is contained in a larger one. Not stratified: a small subset of an imbalanced split may
    under-represent (or miss) a class. ``limit=None`` or ``limit >= n_rows`` keeps every row.
    """
    check_subset_args(limit, seed)
    if limit is None or limit >= n_rows:
        return None
    return sorted(int(i) for i in np.random.default_rng(int(seed)).permutation(n_rows)[: int(limit)])


def take_subset(ds: T, limit: int | None, seed: int = 0) -> T:
    """:func:`subset_indices` applied to a ``datasets.Dataset`` (or anything with ``select``)."""
    keep = subset_indices(len(ds), limit, seed)
    return ds if keep is None else ds.select(keep)
