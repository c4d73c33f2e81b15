"""Profiles (``smoke`` | ``quick`` | ``paper``) are data: one YAML schema in ``ckdlab/configs/profiles``.

A profile names the teacher and the tasks, and has one section per study:

=============  ========================================================================
section        read by
=============  ========================================================================
``finetune``   the teachers (notebook 01): ``defaults`` + per-task ``tasks`` overrides
``distill``    distillation (notebooks 02, 03): the same, plus ``students``,
               ``student_init``, ``student_overrides``, ``temperature``, ``seeds``
``zero_shot``  zero-shot cross-lingual transfer (notebook 04)
``ablations``  the CKD ablation grids (notebook 05); variants in ``defaults.yaml``
``dynabert``   DynaBERT (notebook 05)
=============  ========================================================================

Every profile is merged over ``defaults.yaml`` (dicts key by key, other values replaced), so
shared settings are written once. ``profile_config(profile, "finetune", "sst2")`` merges a stage's
defaults and task overrides into a :class:`~ckdlab.engine.config.TrainConfig`. A task's override
may hold one key that is not a training option: ``intermediate:``, a stage trained before the task
(:func:`stage_intermediate`; e.g. ``rte: {intermediate: {task: mnli, train_limit: 9000, epochs: 1,
head_init: nli}}``, see :mod:`ckdlab.workspace.intermediate`). A path to your own YAML file works
wherever a profile name does.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from ckdlab.data.tasks import get_task
from ckdlab.engine.config import TrainConfig

PROFILE_DIR = Path(__file__).resolve().parent / "configs" / "profiles"
PAPER_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "paper"
DEFAULTS_FILE = PROFILE_DIR / "defaults.yaml"
PROFILES = ("smoke", "quick", "paper")
REQUIRED = ("name", "teacher", "finetune")
# Keys of a task's override that are stages of their own, not TrainConfig options.
STAGE_KEYS = ("intermediate",)


def merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``change`` applied: nested dicts merge key by key, other values replace."""
    out = copy.deepcopy(base)
    for key, value in change.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        values = yaml.safe_load(handle)
    if not isinstance(values, dict):
        raise ValueError(f"profile file {path} must hold a YAML mapping (name:, teacher:, finetune:, ...)")
    return values


def load_profile(name_or_path: str | os.PathLike | dict[str, Any]) -> dict[str, Any]:
    """The profile's settings merged over ``defaults.yaml``; a dict is returned as it is."""
    if isinstance(name_or_path, dict):
        return name_or_path
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.exists() or path.resolve() == DEFAULTS_FILE:
        raise FileNotFoundError(f"profile '{name_or_path}' not found; use one of {PROFILES} or a path to a YAML file")
    profile = merge(_read_yaml(DEFAULTS_FILE), _read_yaml(path))
    missing = [key for key in REQUIRED if key not in profile]
    if missing:
        raise ValueError(f"profile file {path} lacks the required key(s) {missing}")
    return profile


def profile_section(profile: dict[str, Any] | str, section: str) -> dict[str, Any]:
    """One study's section of a profile, with a message naming the profile when it is missing."""
    profile = load_profile(profile)
    if section not in profile:
        raise ValueError(f"profile '{profile['name']}' has no '{section}' section; add one (see {PROFILE_DIR / 'quick.yaml'})")
    return profile[section]


def study_settings(profile: str | os.PathLike | Mapping[str, Any], section: str) -> dict[str, Any]:
    """A study's section of a profile as a fresh dict with the profile's ``name``; a mapping is taken
    as the section itself (named "custom" unless it says otherwise)."""
    if isinstance(profile, Mapping):
        return {"name": "custom", **copy.deepcopy(dict(profile))}
    full = load_profile(profile)
    return dict(copy.deepcopy(profile_section(full, section)), name=full["name"])


def profile_config(profile: dict[str, Any] | str, stage: str, task: str, **overrides: Any) -> TrainConfig:
    """The TrainConfig for ``stage`` ('finetune' | 'distill') of ``task`` under ``profile``."""
    section = profile_section(profile, stage)
    values = dict(section.get("defaults", {}))
    values.update({k: v for k, v in ((section.get("tasks") or {}).get(task) or {}).items() if k not in STAGE_KEYS})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values)


def stage_intermediate(profile: dict[str, Any] | str, stage: str, task: str) -> dict[str, Any] | None:
    """The ``intermediate:`` settings of ``task`` in ``stage`` (None when it has none), with the
    stage's ``defaults`` under them: ``task`` and ``head_init`` plus the intermediate run's training
    options, which start from the stage's defaults (not from ``task``'s own overrides)."""
    section = profile_section(profile, stage)
    settings = ((section.get("tasks") or {}).get(task) or {}).get("intermediate")
    if settings is None:
        return None
    if not isinstance(settings, dict) or "task" not in settings:
        raise ValueError(f"finetune.tasks.{task}.intermediate must be a mapping with a 'task' key, e.g. "
                         "{task: mnli, train_limit: 9000, epochs: 1, head_init: nli}")
    return {**dict(section.get("defaults", {})), **settings}


def paper_configs(tasks: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """The CKD paper's per-task settings, ``ckdlab/configs/paper/<task>.yaml`` (shipped in the package)."""
    configs = {}
    for path in sorted(PAPER_CONFIG_DIR.glob("*.yaml")):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        configs[config["task"]] = config
    wanted = [get_task(t).name for t in tasks] if tasks else list(configs)
    missing = [t for t in wanted if t not in configs]
    if missing:
        raise ValueError(f"no paper config for {missing}; available: {sorted(configs)} in {PAPER_CONFIG_DIR}")
    return {t: configs[t] for t in wanted}
