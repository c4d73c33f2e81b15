"""The ``amoc`` section of a profile: which families and pairs, which model, how many candidates, what sizes.

::

    amoc:
      families:                 # family (ckdlab.data.domains.FAMILIES) -> its pairs and overrides
        sentiment: {pairs: all}
        stsb-genre: {pairs: [stsb-news->stsb-captions, ...], base: {epochs: 3}}
        tweets-language: {options: {n_pairs: 8, seed: 0}}   # options go to domain_pairs()
      base_model: null          # null: each family's own model; else a name or hub id for all
      base_shrink: null         # a config: spec cutting a small model out of it (smoke tests)
      max_removed: null         # null: default_max_removed(depth) (3 for 6 layers, 2 for 12)
      candidates_per_source: 15 # a seeded sample of the candidate sets; null: every set
      seed: 0
      limits: {train, candidate_train, source_dev, unlabeled, test}   # rows per role; null: all
      base: {...}               # TrainConfig keys of the base model's fine-tuning
      candidate: {...}          # TrainConfig keys of a candidate's brief fine-tuning
      eval: {batch_size, max_length}

A family may override ``base``, ``candidate`` and ``limits`` keys. Every profile is merged over ``defaults.yaml``.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ckdlab.data.domains import FAMILIES, DomainPair, domain_pairs
from ckdlab.engine import TrainConfig
from ckdlab.profiles import study_settings

LIMIT_KEYS = ("train", "candidate_train", "source_dev", "unlabeled", "test")
SECTION_KEYS = ("families", "base_model", "base_shrink", "max_removed", "candidates_per_source", "seed", "limits",
                "base", "candidate", "eval")
FAMILY_KEYS = ("pairs", "options", "base", "candidate", "limits")


# --------------------------------------------------------------------------- settings


def load_amoc_settings(profile: str | os.PathLike | Mapping[str, Any] = "quick") -> dict[str, Any]:
    """The ``amoc`` section of a profile (``smoke`` | ``quick`` | ``paper`` or a YAML path) with the
    profile's ``name``, checked; a mapping is taken as the section itself."""
    settings = study_settings(profile, "amoc")
    unknown = sorted(set(settings) - set(SECTION_KEYS) - {"name"})
    if unknown:
        raise ValueError(f"amoc settings: unknown key(s) {unknown}; valid keys are {list(SECTION_KEYS)}")
    for key, default in (("base_model", None), ("base_shrink", None), ("max_removed", None),
                         ("candidates_per_source", None), ("seed", 0), ("base", {}), ("candidate", {}), ("eval", {})):
        settings.setdefault(key, default)
    families = settings.get("families")
    if not isinstance(families, Mapping) or not families:
        raise ValueError("amoc settings: 'families' must map family names to {pairs: all | [source->target, ...]}")
    for family, entry in families.items():
        if family not in FAMILIES:
            raise ValueError(f"amoc settings: family {family!r} is not one of {list(FAMILIES)}")
        bad = sorted(set(entry or {}) - set(FAMILY_KEYS))
        if bad:
            raise ValueError(f"amoc settings: families.{family} has unknown key(s) {bad}; valid: {list(FAMILY_KEYS)}")
        _check_limits((entry or {}).get("limits") or {}, f"families.{family}.limits")
    settings["limits"] = {key: None for key in LIMIT_KEYS} | _check_limits(settings.get("limits") or {}, "limits")
    return settings


def _check_limits(limits: Mapping[str, Any], where: str) -> dict[str, Any]:
    bad = sorted(set(limits) - set(LIMIT_KEYS))
    if bad:
        raise ValueError(f"amoc settings: {where} has unknown key(s) {bad}; valid: {list(LIMIT_KEYS)}")
    for key, value in limits.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"amoc settings: {where}.{key}={value!r} must be a positive int or null (all rows)")
    return dict(limits)


def family_limits(settings: Mapping[str, Any], family: str) -> dict[str, int | None]:
    """Rows per role for ``family``: the section's ``limits`` with the family's own over them."""
    return {**settings["limits"], **dict((settings["families"][family] or {}).get("limits") or {})}


def configure(profile: str | os.PathLike | Mapping[str, Any] = "quick", families: Sequence[str] | None = None,
              candidates_per_source: int | None = None, **overrides: Any) -> dict[str, Any]:
    """The profile's AMoC settings with a notebook's parameters applied: ``families`` keeps only those
    families, ``candidates_per_source`` replaces the sample size, ``overrides`` replace section keys."""
    settings = load_amoc_settings(profile)
    if families is not None:
        missing = [f for f in families if f not in settings["families"]]
        if missing:
            raise ValueError(f"families={list(families)}: {missing} not in this profile's amoc.families {list(settings['families'])}")
        settings["families"] = {f: settings["families"][f] for f in families}
    if candidates_per_source is not None:
        settings["candidates_per_source"] = candidates_per_source
    unknown = sorted(set(overrides) - set(SECTION_KEYS))
    if unknown:
        raise ValueError(f"unknown amoc option(s) {unknown}; valid: {list(SECTION_KEYS)}")
    settings.update(copy.deepcopy(overrides))
    return load_amoc_settings(settings)


def study_pairs(settings: Mapping[str, Any]) -> dict[str, list[DomainPair]]:
    """family -> the ordered pairs the study runs (``pairs: all`` or a list of ``"source->target"`` names).
    Leave-one-pair-out needs two pairs per family."""
    plan = {}
    for family, entry in settings["families"].items():
        entry = entry or {}
        available = domain_pairs(family, **dict(entry.get("options") or {}))
        wanted = entry.get("pairs", "all")
        if wanted == "all":
            pairs = available
        else:
            by_name = {p.name: p for p in available}
            missing = [name for name in wanted if name not in by_name]
            if missing:
                raise ValueError(f"amoc settings: families.{family}.pairs {missing} are not pairs of {family}; "
                                 f"choose from {list(by_name)}")
            pairs = [by_name[name] for name in wanted]
        if len(pairs) < 2:
            raise ValueError(f"amoc settings: family {family!r} has {len(pairs)} pair(s); leave-one-pair-out needs at least 2")
        plan[family] = pairs
    return plan


def stage_config(settings: Mapping[str, Any], family: str, stage: str, train_limit: int | None) -> TrainConfig:
    """The TrainConfig of ``stage`` (``base`` | ``candidate``): the section's, then the family's overrides."""
    values = {**dict(settings.get(stage) or {}), **dict((settings["families"][family] or {}).get(stage) or {})}
    if stage == "candidate":
        values.setdefault("progress", False)  # dozens of brief runs: one bar over the candidates instead
    return TrainConfig.from_dict({**values, "seed": settings["seed"], "train_limit": train_limit})


def describe_settings(settings: Mapping[str, Any]) -> str:
    """A few lines: families and pairs, models, candidates, sizes, training."""
    lines = [f"profile={settings['name']}  seed={settings['seed']}  candidates per source="
             f"{settings['candidates_per_source'] or 'all'}  max removed={settings['max_removed'] or 'default'}"]
    for family, pairs in study_pairs(settings).items():
        model = settings["base_model"] or FAMILIES[family].base_model
        shrink = f" cut to {settings['base_shrink']}" if settings["base_shrink"] else ""
        entry = settings["families"][family] or {}
        changes = "".join(f"; {stage} training {entry[stage]}" for stage in ("base", "candidate") if entry.get(stage))
        lines.append(f"{family} ({model}{shrink}, {FAMILIES[family].task.headline}): {', '.join(p.name for p in pairs)}{changes}")
    lines.append(f"limits={settings['limits']}" + "".join(
        f"; {family}: {entry['limits']}" for family, entry in settings["families"].items() if (entry or {}).get("limits")))
    lines.append(f"base training={settings['base']}  candidate training={settings['candidate']}")
    return "\n".join(lines)
