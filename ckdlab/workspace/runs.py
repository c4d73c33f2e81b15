"""Run identity: every run folder says which run it holds, and holds only that run.

A run's identity is its whole resolved configuration: task, teacher (path and fingerprint),
student, objective, weights, layer map, temperature, training config, the data files read, and
the seed. ``run.json`` in the run folder stores it (with the package version and git commit,
which are not part of the identity). :func:`open_run` decides what a new request means:

* the folder holds the same run, finished: nothing is trained again (``"finished"``);
* the same run, interrupted: it resumes from its checkpoint (``"resume"``);
* nothing yet: a new run (``"new"``);
* another run: an error naming the folder and both configurations' differences, unless
  ``resume=False`` (``--no-resume``), which discards the old run's files first.

Default run folders carry the identity in their name (``seed0-1a2b3c4d``), so changing a setting
gives a fresh folder instead of an error; an explicit ``--out`` is checked strictly.

:func:`plan_run` makes the same decision without writing anything, so a study can check a
folder before it loads models or data; :func:`check_writable` probes a folder and, with
``create=False``, leaves the file system as it found it. :func:`guard_new_run` removes what a new
run wrote when it fails before its first checkpoint, so a failed command leaves no half-written
run folder behind.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ckdlab.errors import UserError
from ckdlab.io import atomic_write_json
from ckdlab.workspace.records import git_commit

IDENTITY_FILE = "run.json"
SUMMARY_FILE = "summary.json"
# What ckdlab writes into a run folder; --no-resume removes these and nothing else.
RUN_ENTRIES = (IDENTITY_FILE, SUMMARY_FILE, "best", "checkpoint", "final_state.json", "best_metrics.json", "train_log.csv", "eval_log.csv",
               "events.jsonl", "tb", "size.json", "width", "depth")


def fingerprint(values: Any) -> str:
    """A short stable hash of JSON-able ``values`` (keys sorted)."""
    text = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def package_version() -> str:
    try:
        return metadata.version("ckdlab")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class RunIdentity:
    """What decides a run's numbers. ``run_id`` covers everything; ``config_id`` everything but
    the seed (records with equal ``config_id`` are seeds of one configuration)."""

    kind: str
    seed: int
    config: Mapping[str, Any] = field(hash=False)

    @property
    def config_id(self) -> str:
        return f"{self.kind}-{fingerprint(self.config)}"

    @property
    def run_id(self) -> str:
        return f"{self.kind}-{fingerprint({'config': self.config, 'seed': self.seed})}"

    @property
    def short(self) -> str:
        """Eight hex digits of ``run_id``, for folder names."""
        return self.run_id.split("-", 1)[1][:8]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "run_id": self.run_id, "config_id": self.config_id, "seed": self.seed,
            "config": json.loads(json.dumps(dict(self.config), default=str)),
            "package_version": package_version(), "git_commit": git_commit(),
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
        }


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, Mapping):
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): values}


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any], limit: int = 6) -> str:
    """``'lr: 0.0001 -> 0.0003; temperature: 2.0 -> 4.0'`` for the settings that differ."""
    a, b = _flatten({"seed": old.get("seed"), **old.get("config", {})}), _flatten({"seed": new.get("seed"), **new.get("config", {})})
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    parts = [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"... and {len(keys) - limit} more")
    return "; ".join(parts) or "the stored run.json is from another kind of run"


def read_identity(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / IDENTITY_FILE
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is unreadable ({type(err).__name__}: {err}); run with --no-resume (resume=False) "
                        "to start this run folder afresh") from err
    if not isinstance(stored, dict) or "run_id" not in stored:
        raise UserError(f"{path} is not a ckdlab run.json; run with --no-resume (resume=False) to start afresh")
    return stored


def is_finished(folder: str | os.PathLike) -> bool:
    """The run in ``folder`` trained to its last step and saved its best model."""
    summary = Path(folder) / SUMMARY_FILE
    if not summary.exists():
        return False
    try:
        return bool(json.loads(summary.read_text(encoding="utf-8")).get("finished"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False


def discard_run(folder: str | os.PathLike) -> None:
    """Remove what ckdlab wrote into ``folder`` (and nothing else)."""
    folder = Path(folder)
    for name in RUN_ENTRIES:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def check_writable(folder: str | os.PathLike, option: str = "--out", create: bool = True, fix: str | None = None) -> Path:
    """Prove now, before any training, that files can be written into ``folder`` (a :class:`UserError`
    naming ``option`` otherwise). ``create=False`` removes again any folder the probe had to create."""
    folder = Path(folder).expanduser()
    missing = []
    parent = folder
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    try:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(20, f"{parent} is a file")
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".ckdlab-write-test-{os.getpid()}"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        if isinstance(err, NotADirectoryError) or (parent.exists() and not parent.is_dir()):
            reason = f"{parent} is a file, not a folder"
        raise UserError(f"{option} {folder} is not a writable folder ({reason}); {fix or f'choose another {option}'}") from err
    finally:
        if not create:
            for created in missing:  # deepest first
                if created.is_dir() and not any(created.iterdir()):
                    created.rmdir()
    return folder


def check_results_writable(results_dir: str | os.PathLike) -> None:
    """Prove before a run trains that its record can be written (a UserError naming the folder otherwise)."""
    check_writable(Path(results_dir) / "records", "the results folder", create=False,
                   fix="set CKDLAB_RESULTS to a writable folder, or pass record=False to keep the run without a record")


def plan_run(folder: str | os.PathLike, identity: RunIdentity, resume: bool = True, option: str = "--out") -> str:
    """What :func:`open_run` would decide for ``folder`` (``"new"``, ``"resume"``, ``"finished"``, or a
    :class:`UserError` for a folder holding another run), without writing anything."""
    folder = Path(folder)
    stored = read_identity(folder) if resume and folder.is_dir() else None
    if stored is not None:
        if stored["run_id"] == identity.run_id:
            return "finished" if is_finished(folder) else "resume"
        raise UserError(
            f"{option} {folder} holds another run ({describe_difference(stored, identity.to_json())}). Use another "
            f"{option} for this run, or add --no-resume (resume=False) to discard the old one."
        )
    if resume and folder.is_dir() and any((folder / name).exists() for name in RUN_ENTRIES):
        raise UserError(
            f"{option} {folder} holds run files but no {IDENTITY_FILE} (an older ckdlab made them, or a run was copied "
            f"without it), so whether it is this run cannot be checked. Use another {option}, or add --no-resume "
            "(resume=False) to discard them."
        )
    return "new"


def existing_ancestor(folder: str | os.PathLike) -> Path:
    """``folder`` itself when it exists, else its nearest existing parent (what a failed run must not remove)."""
    folder = Path(folder).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


@contextmanager
def guard_new_run(folder: str | os.PathLike, state: str, existed: str | os.PathLike) -> Iterator[None]:
    """Around the training of a run opened as ``state``: when a new run fails (any exception but an
    interruption) before it wrote a checkpoint, remove what it wrote, and the folders it created up
    to ``existed`` (:func:`existing_ancestor` taken before the run was opened), so nothing
    half-written is left to be mistaken for a run."""
    try:
        yield
    except Exception:
        folder = Path(folder).expanduser().absolute()
        if state == "new" and not (folder / "checkpoint").exists():
            discard_run(folder)
            keep = Path(existed).absolute()
            while folder != keep and keep in folder.parents and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
        raise


def open_run(folder: str | os.PathLike, identity: RunIdentity, resume: bool = True, option: str = "--out") -> str:
    """Prepare ``folder`` for the run ``identity``: ``"new"``, ``"resume"`` or ``"finished"`` (see the
    module docstring). Writes ``run.json`` for a new run; raises :class:`UserError` on a conflict."""
    folder = check_writable(folder, option)
    state = plan_run(folder, identity, resume, option)
    if state != "new":
        return state
    discard_run(folder)
    atomic_write_json(folder / IDENTITY_FILE, identity.to_json())
    return "new"
