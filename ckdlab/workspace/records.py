"""Run records: one JSON file per finished run under ``results/records/``.

A record holds what a table needs (kind, profile, task, teacher, student, method, seed, score,
metrics, sizes, wall time) and the run's identity: ``run_id`` (the hash of its whole resolved
config, seed included) and ``config_id`` (the same without the seed). The file is named after
``run_id`` and written atomically, so a run recorded twice is one record, concurrent runs never
interleave, and tables can pool exactly the records that differ only in their seed.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
import uuid
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from ckdlab.errors import UserError
from ckdlab.io import atomic_write_json

RECORD_FIELDS = ("run_id", "config_id", "kind", "profile", "task", "teacher", "student", "method", "seed", "score", "wall_time_s")


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The current commit of the checkout (``+dirty`` when there are uncommitted changes)."""
    cwd = cwd or Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def record_path(results_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(results_dir) / "records" / f"{run_id}.json"


def record_run(record: dict[str, Any], results_dir: str | os.PathLike) -> Path:
    """Write one run record atomically and return its path. Adds time and commit; a record without
    a ``run_id`` gets a unique one (a run that has no identity, e.g. from old code)."""
    record = dict(record)
    for key in ("kind", "task", "metrics"):
        if key not in record:
            raise ValueError(f"a run record needs '{key}'")
    record.setdefault("run_id", f"{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:8]}")
    record.setdefault("time", _dt.datetime.now().isoformat(timespec="seconds"))
    record.setdefault("git_commit", git_commit())
    return atomic_write_json(record_path(results_dir, record["run_id"]), record)


def save_record(record: dict[str, Any], results_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """:func:`record_run`, turning a failure to write (a full disk, a folder made read-only meanwhile)
    into a UserError that says the trained model is safe and how to record it."""
    try:
        return record_run(record, results_dir)
    except OSError as err:
        raise UserError(
            f"the run finished and its model is saved in {out_dir}, but its record could not be written to "
            f"{Path(results_dir) / 'records'} ({err.strerror or type(err).__name__}). Free space or fix that folder "
            "(CKDLAB_RESULTS), then run the same command again: a finished run is recorded without training again."
        ) from err


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """A record, or ``None`` with a warning naming the file when it is unreadable (a table must
    not fail because one file is corrupt)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        warnings.warn(f"skipping the unreadable run record {path} ({type(err).__name__}: {err}); delete it or run that "
                      "run again", stacklevel=3)
        return None
    if not isinstance(record, dict) or not all(key in record for key in ("kind", "task", "metrics")):
        warnings.warn(f"skipping the run record {path}: it is not a ckdlab record (needs kind, task, metrics)", stacklevel=3)
        return None
    return record


def load_runs(results_dir: str | os.PathLike, **filters: Any) -> pd.DataFrame:
    """All records as a DataFrame; metrics become ``metric.<name>`` columns. Filters are equality
    tests (a list/tuple/set value means "one of"). Unreadable records are skipped with a warning."""
    folder = Path(results_dir) / "records"
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.exists() else []:
        record = read_record(path)
        if record is None:
            continue
        row = {k: v for k, v in record.items() if not isinstance(v, dict)}
        row.update({f"metric.{k}": v for k, v in (record.get("metrics") or {}).items() if isinstance(v, (int, float))})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for key, value in filters.items():
        if key not in frame.columns:
            return frame.iloc[0:0]
        values = value if isinstance(value, (list, tuple, set)) else [value]
        frame = frame[frame[key].isin(values)]
    return frame.reset_index(drop=True)
