"""Checkpoints of the training loop: written atomically, found after a crash, checked when read.

A checkpoint is a folder (``<run>/checkpoint``): Accelerate's ``save_state`` files (model,
optimiser, scheduler, RNG states) plus ``trainer_state.json`` (step, epoch, position in the
epoch, best score, loss weights). It is written into a temporary sibling folder and renamed into
place, so a crash at any moment leaves either the previous checkpoint or the new one:

- killed while writing: the old ``checkpoint`` is intact; the temporary ``.checkpoint.*``
  folder is stale and removed on the next resume;
- killed between the two renames of :func:`ckdlab.io.atomic_directory`: only
  ``.checkpoint.old`` exists, a complete checkpoint, which :func:`find_checkpoint` puts back.

Under several processes (``accelerate launch``) every process writes its own RNG state into the
one temporary folder, which the main process renames into place once all have written.

A checkpoint that cannot be read (a truncated file, a corrupt ``trainer_state.json``) is a
:class:`~ckdlab.errors.UserError` naming the file and saying that ``--no-resume`` starts afresh.

When a run finishes, its checkpoint is only needed to resume it, which a finished run never does; the
optimiser's two moments make it about three times the size of the model in ``best/`` (a quick
``make reproduce`` kept about 20 GB of them). So by default (``TrainConfig.keep_checkpoint`` false)
:func:`finish` keeps the loop state alone, as ``final_state.json``, and removes the checkpoint.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ckdlab.errors import UserError
from ckdlab.io import atomic_directory, atomic_write_json

CHECKPOINT = "checkpoint"
STATE_FILE = "trainer_state.json"
FINAL_STATE = "final_state.json"
STATE_KEYS = ("global_step", "epoch", "batches_into_epoch", "best_score", "best_step", "weights")


def _recover(folder: Path, name: str) -> Path:
    """``folder/name`` after undoing an interrupted atomic replacement of it (see the module docstring)."""
    path = folder / name
    old = folder / f".{name}.old"
    if not path.exists() and old.is_dir():
        os.replace(old, path)
    elif old.exists() and path.exists():
        shutil.rmtree(old, ignore_errors=True)
    for stale in folder.glob(f".{name}.*"):
        if stale.is_dir() and stale.name != old.name:
            shutil.rmtree(stale, ignore_errors=True)
    return path


def recover_run_folder(out_dir: Path) -> None:
    """Undo what a crash in the middle of an atomic folder replacement left (checkpoint and best model)."""
    if not out_dir.is_dir():
        return
    for name in (CHECKPOINT, "best"):
        _recover(out_dir, name)


def find_checkpoint(out_dir: Path | None) -> Path | None:
    """The run's checkpoint folder, or None when the run has none yet (call :func:`recover_run_folder`
    first, on one process)."""
    if out_dir is None or not out_dir.is_dir():
        return None
    path = out_dir / CHECKPOINT
    return path if path.is_dir() and any(path.iterdir()) else None


def save(accelerator: Any, out_dir: Path, loop_state: dict[str, Any]) -> Path:
    """Accelerate's state plus the loop state, atomically, as ``out_dir/checkpoint`` (every process
    calls this)."""
    path = out_dir / CHECKPOINT
    if accelerator.num_processes == 1:
        with atomic_directory(path) as tmp:
            accelerator.save_state(str(tmp))
            atomic_write_json(tmp / STATE_FILE, loop_state)
        return path
    # One folder for all processes (a folder per process would each replace the others'); its name
    # starts with '.checkpoint.', so a resume after a crash removes it as stale.
    staging = out_dir / f".{CHECKPOINT}.staging"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(staging / STATE_FILE, loop_state)
        _replace_directory(staging, path)
    accelerator.wait_for_everyone()
    return path


def finish(accelerator: Any, out_dir: Path, loop_state: dict[str, Any], keep_checkpoint: bool) -> Path:
    """The end of a finished run (every process calls this): a checkpoint as usual when
    ``keep_checkpoint``, otherwise ``final_state.json`` (the loop state: steps, best score, the
    weights used) written atomically, then the checkpoint removed. Returns what holds the state."""
    if keep_checkpoint:
        return save(accelerator, out_dir, loop_state)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        # The state first: a crash between the two leaves a redundant checkpoint, never a run with neither.
        atomic_write_json(out_dir / FINAL_STATE, loop_state)
        shutil.rmtree(out_dir / CHECKPOINT, ignore_errors=True)
        for stale in out_dir.glob(f".{CHECKPOINT}.*"):
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return out_dir / FINAL_STATE


def refuse_finished(out_dir: Path | None) -> None:
    """A UserError when ``out_dir`` holds a finished run whose checkpoint was dropped: resuming it would
    otherwise train it again from step 0 without a word."""
    if out_dir is not None and (out_dir / FINAL_STATE).exists():
        raise UserError(
            f"{out_dir} holds a finished run whose checkpoint was dropped at its end (keep_checkpoint false), so "
            "there is nothing to resume: it is done. Use another --out for a new run, or --no-resume (resume=False) "
            "to train this one again."
        )


def final_state(out_dir: Path) -> dict[str, Any]:
    """The loop state a run ended with: its checkpoint's, or ``final_state.json`` when the
    checkpoint was dropped at the end (see :func:`finish`)."""
    checkpoint = find_checkpoint(out_dir)
    return read_state(checkpoint) if checkpoint is not None else read_state(out_dir, FINAL_STATE)


def _replace_directory(source: Path, path: Path) -> None:
    """Put the complete folder ``source`` at ``path`` with the renames of :func:`ckdlab.io.atomic_directory`."""
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(source, path)
    shutil.rmtree(old, ignore_errors=True)


def _unreadable(path: Path, reason: str) -> UserError:
    return UserError(
        f"the checkpoint file {path} is unreadable ({reason}), so this run cannot resume from it. Run the same "
        "command with --no-resume (resume=False) to start the run afresh, or use another --out."
    )


def read_state(path: Path, name: str = STATE_FILE) -> dict[str, Any]:
    """``trainer_state.json`` of the checkpoint ``path`` (or the file ``name`` in ``path``), checked."""
    state_file = path / name
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise _unreadable(state_file, "it is missing") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _unreadable(state_file, f"{type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        raise _unreadable(state_file, f"it lacks some of {list(STATE_KEYS)}")
    return state


def _check_file(path: Path) -> None:
    """Raise when one checkpoint file cannot be read on its own."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    elif path.suffix in (".bin", ".pkl", ".pt"):
        import torch

        torch.load(path, map_location="cpu", weights_only=False)
    elif path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))


def load(accelerator: Any, path: Path) -> dict[str, Any]:
    """Restore Accelerate's state from ``path`` and return the loop state; a :class:`UserError` naming
    the file when one is unreadable."""
    state = read_state(path)
    try:
        accelerator.load_state(str(path))
    except Exception as err:
        # Which file? Try each on its own; if none fails alone, the failure is not the file's (a bug).
        for file in sorted(p for p in path.iterdir() if p.is_file()):
            try:
                _check_file(file)
            except Exception as file_err:
                raise _unreadable(file, f"{type(file_err).__name__}: {file_err}") from err
        raise
    return state
