"""Profiles (``smoke`` | ``quick`` | ``paper``) are data: YAML files in ``ckdlab/configs/profiles``.

A profile names the teacher, the tasks, and per-stage training defaults with per-task overrides.
``profile_config(profile, "finetune", "sst2")`` merges them into a :class:`TrainConfig`.
A path to your own YAML file works wherever a profile name does.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ckdlab.engine.config import TrainConfig

PROFILE_DIR = Path(__file__).resolve().parents[1] / "configs" / "profiles"
PROFILES = ("smoke", "quick", "paper")


def load_profile(name_or_path: str | os.PathLike) -> dict[str, Any]:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"profile '{name_or_path}' not found; use one of {PROFILES} or a path to a YAML file")
    with path.open(encoding="utf-8") as handle:
        profile = yaml.safe_load(handle)
    for key in ("name", "teacher", "finetune"):
        if key not in profile:
            raise ValueError(f"profile file {path} lacks the required key '{key}'")
    return profile


def profile_config(profile: dict[str, Any] | str, stage: str, task: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig for ``stage`` ('finetune' | 'distill') of ``task`` under ``profile``."""
    if isinstance(profile, str):
        profile = load_profile(profile)
    if stage not in profile:
        raise ValueError(f"profile '{profile['name']}' has no '{stage}' section")
    section = profile[stage]
    values = dict(section.get("defaults", {}))
    values.update((section.get("tasks") or {}).get(task, {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)
