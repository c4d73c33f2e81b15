"""Layer removal for AMoC (Rotman, Feder & Reichart, TACL 2021): candidates that bypass whole layers.

An AMoC candidate is the fine-tuned base model with a set ``C`` of its transformer layers removed:
each kept layer reads the output of the kept layer below it (the embeddings for the lowest one).
Because nothing else changes, such a model *is* an ordinary BERT with fewer layers, so
:func:`remove_layers` returns exactly that -- the same class, ``config.num_hidden_layers`` reduced,
the kept layers' weights -- and any ``from_pretrained`` loader reads it back. The config also
records where the layers came from::

    config.kept_layers                 original indices of the layers still there, bottom up
    config.removed_layers              original indices of the layers taken out
    config.original_num_hidden_layers  depth of the model before any removal

Indices are 0-based throughout (the authors' command lines count layers from 1). Removing layers
from an already reduced model composes: ``layers`` then name the reduced model's own positions and
the recorded indices stay those of the original model.

The set of candidates (:func:`candidate_sets`) is every set of 1..k layers, or a seeded sample that
always keeps the two fixed baselines, :func:`top_layers` and :func:`evenly_spaced_layers`.
:func:`freeze_for_candidate` applies the authors' brief fine-tuning rule (see its docstring).
"""
from __future__ import annotations

import copy
import itertools
from typing import Iterable, Sequence

import numpy as np
from torch import nn
from transformers import PreTrainedModel


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ``ModuleList`` of transformer layers of a BERT-style model (BERT, RoBERTa, XLM-R, ELECTRA)."""
    base = getattr(model, "base_model", model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"model: {type(model).__name__} has no base_model.encoder.layer list; layer removal supports "
            "BERT-style encoders (BERT, RoBERTa, XLM-R, ELECTRA), e.g. models from ckdlab.models.load_backbone"
        )
    return layers


def _check_layer_indices(layers: Iterable[int], n_layers: int, argument: str) -> tuple[int, ...]:
    values = list(layers)
    bad_type = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
    if bad_type:
        raise ValueError(f"{argument} must hold integer layer indices, got {bad_type!r}")
    values = [int(v) for v in values]
    out_of_range = [v for v in values if not 0 <= v < n_layers]
    if out_of_range:
        raise ValueError(f"{argument}: layers {out_of_range} are out of range 0..{n_layers - 1} for this {n_layers}-layer model")
    if len(set(values)) != len(values):
        raise ValueError(f"{argument}: each layer may be named once, got {values!r}")
    return tuple(sorted(values))


def remove_layers(model: PreTrainedModel, layers: Iterable[int]) -> PreTrainedModel:
    """A copy of ``model`` without the transformer layers ``layers`` (0-based, this model's numbering).

    The copy is the same class with ``config.num_hidden_layers`` reduced and the kept layers (and the
    embeddings, pooler and head) unchanged, so its forward pass is the original one with the removed
    layers bypassed. ``model`` itself is not modified. At least one layer must stay.
    """
    encoder_layers = _encoder_layers(model)
    n_layers = len(encoder_layers)
    removed = _check_layer_indices(layers, n_layers, "layers")
    if len(removed) == n_layers:
        raise ValueError(f"layers: removing all {n_layers} layers leaves no transformer; keep at least one")
    config = model.config
    original_positions = list(getattr(config, "kept_layers", None) or range(n_layers))
    if len(original_positions) != n_layers:
        raise ValueError(
            f"model: config.kept_layers has {len(original_positions)} entries but the model has {n_layers} layers; "
            "the config does not describe this model"
        )
    original_depth = int(getattr(config, "original_num_hidden_layers", None) or n_layers)

    reduced = copy.deepcopy(model)
    kept_positions = [i for i in range(n_layers) if i not in removed]
    new_layers = nn.ModuleList([_encoder_layers(reduced)[i] for i in kept_positions])
    for new_index, layer in enumerate(new_layers):
        # Attention modules carry their position for key/value caches; keep it truthful.
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    getattr(reduced, "base_model", reduced).encoder.layer = new_layers

    new_config = reduced.config
    new_config.num_hidden_layers = len(kept_positions)
    layer_types = getattr(new_config, "layer_types", None)
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == n_layers:
        new_config.layer_types = [layer_types[i] for i in kept_positions]
    kept_original = [original_positions[i] for i in kept_positions]
    new_config.kept_layers = kept_original
    new_config.removed_layers = [i for i in range(original_depth) if i not in kept_original]
    new_config.original_num_hidden_layers = original_depth
    return reduced


def _removal_runs(removed: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive indices as ``(first, last)``: (1, 2, 4) -> [(1, 2), (4, 4)]."""
    runs: list[tuple[int, int]] = []
    for index in sorted(removed):
        if runs and index == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def freeze_for_candidate(model: PreTrainedModel, removed: Iterable[int]) -> list[str]:
    """Set ``requires_grad`` for a candidate's brief fine-tuning; return the trainable parameter names.

    ``model`` is the REDUCED model from :func:`remove_layers`; ``removed`` are the removed layers in
    the original numbering (checked against ``config.removed_layers`` when the config records them).
    Trainable, as in the authors' code: for every removed layer, the layer directly below it, whose
    output now feeds a layer it was not trained for. "Directly below" means:

    - for removed layer 0: the embeddings;
    - for a run of consecutive removed layers ``a..b``: the kept layer ``a - 1`` (the embeddings when
      ``a == 0``), i.e. the one layer whose output now skips the whole gap; the layers of the run have
      no kept layer between them, so each run unfreezes exactly one block.

    Also trainable: the head -- the classifier and the pooler (our choice: the authors' head, a CNN on
    a scalar mix of all layers, had no pooler; BERT's pooler is the first layer of its head and now
    reads a different top layer). Everything else is frozen.
    """
    n_kept = len(_encoder_layers(model))
    config = model.config
    recorded = getattr(config, "removed_layers", None)
    removed_list = list(removed)
    if recorded is None:  # a plain reduced BERT: the removed layers say how deep the original was
        original_depth = n_kept + len(removed_list)
    else:
        original_depth = int(getattr(config, "original_num_hidden_layers", None) or n_kept + len(recorded))
    removed = _check_layer_indices(removed_list, original_depth, "removed")
    if recorded is not None and tuple(sorted(recorded)) != removed:
        raise ValueError(
            f"removed={list(removed)} does not match the model's config.removed_layers={sorted(recorded)}; "
            "pass the layers that remove_layers took out of this model"
        )
    kept = list(getattr(config, "kept_layers", None) or [i for i in range(original_depth) if i not in removed])
    if len(kept) != n_kept:
        raise ValueError(
            f"removed: a {original_depth}-layer model without {len(removed)} layers has {original_depth - len(removed)} "
            f"layers, but model has {n_kept}; pass the REDUCED model returned by remove_layers"
        )

    base = getattr(model, "base_model", model)
    prefix = f"{model.base_model_prefix}." if base is not model else ""
    trainable_prefixes = [f"{prefix}pooler."]
    for first, _last in _removal_runs(removed):
        if first == 0:
            trainable_prefixes.append(f"{prefix}embeddings.")
        else:
            trainable_prefixes.append(f"{prefix}encoder.layer.{kept.index(first - 1)}.")

    trainable: list[str] = []
    for name, parameter in model.named_parameters():
        in_head = bool(prefix) and not name.startswith(prefix)
        parameter.requires_grad = in_head or any(name.startswith(p) for p in trainable_prefixes)
        if parameter.requires_grad:
            trainable.append(name)
    return trainable


def top_layers(n_layers: int, k: int) -> tuple[int, ...]:
    """The baseline that removes the top ``k`` of ``n_layers`` layers: ``(n - k, ..., n - 1)``."""
    _check_depth(n_layers, k)
    return tuple(range(n_layers - k, n_layers))


def evenly_spaced_layers(n_layers: int, k: int) -> tuple[int, ...]:
    """The baseline that removes ``k`` layers spread evenly over the depth (our definition).

    Depth is cut into ``k`` equal blocks of ``n / k`` layers and the middle layer of each block is
    removed (the lower middle when a block has an even number of layers): index
    ``floor(j * n / k + (n / k - 1) / 2)`` for ``j = 0..k-1``. For 12 layers and ``k = 6`` that is
    0, 2, ..., 10 -- the authors' "remove every other layer" example -- and the top layer stays.
    """
    _check_depth(n_layers, k)
    # floor(j n/k + (n/k - 1)/2) in integers, so no rounding error can move a layer.
    return tuple((2 * j * n_layers + n_layers - k) // (2 * k) for j in range(k))


def _check_depth(n_layers: int, k: int) -> None:
    for name, value in (("n_layers", n_layers), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n_layers < 2:
        raise ValueError(f"n_layers={n_layers}: layer removal needs a model with at least 2 layers")
    if not 1 <= k < n_layers:
        raise ValueError(f"k={k}: remove between 1 and {n_layers - 1} of the {n_layers} layers (one must stay)")


def default_max_removed(n_layers: int) -> int:
    """How many layers the candidates remove at most: 3 for a base of up to 6 layers, 2 for deeper ones
    (C(12,3) = 220 more candidates is too many fine-tuning runs); never all layers."""
    _check_depth(n_layers, 1)
    return min(3, n_layers - 1) if n_layers <= 6 else 2


def candidate_sets(n_layers: int, max_removed: int, limit: int | None = None, seed: int = 0) -> list[tuple[int, ...]]:
    """Every set of 1..``max_removed`` of ``n_layers`` layers, sorted by size then lexicographically.

    41 sets for 6 layers and ``max_removed = 3``; 78 for 12 layers and 2. With ``limit`` smaller than
    that, a seeded sample of ``limit`` sets: the baselines :func:`top_layers` and
    :func:`evenly_spaced_layers` of every size are always in it (so the baselines can be read off
    the candidates table), the rest of the budget is spread as evenly as possible over the sizes
    (each size stays represented for the per-level choice), and sets within a size are drawn
    uniformly without replacement. Same arguments, same sets.
    """
    _check_depth(n_layers, max_removed)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    by_size = {k: list(itertools.combinations(range(n_layers), k)) for k in range(1, max_removed + 1)}
    total = sum(len(sets) for sets in by_size.values())
    if limit is None or limit >= total:
        return [s for k in sorted(by_size) for s in by_size[k]]
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit must be a positive int or None (all sets), got {limit!r}")

    chosen = {k: {top_layers(n_layers, k), evenly_spaced_layers(n_layers, k)} for k in by_size}
    n_anchors = sum(len(sets) for sets in chosen.values())
    if limit < n_anchors:
        raise ValueError(
            f"limit={limit} is below the {n_anchors} baseline sets (top and evenly spaced layers for each of "
            f"1..{max_removed} removed layers) that every sample keeps; use limit >= {n_anchors}"
        )
    # Water-filling: give each size one more set in turn until the budget is spent or the size is full.
    budget = int(limit) - n_anchors
    extra = {k: 0 for k in by_size}
    while budget > 0:
        open_sizes = [k for k in sorted(by_size) if len(chosen[k]) + extra[k] < len(by_size[k])]
        if not open_sizes:
            break
        for k in open_sizes:
            if budget == 0:
                break
            extra[k] += 1
            budget -= 1
    rng = np.random.default_rng(int(seed))
    for k in sorted(by_size):
        pool = [s for s in by_size[k] if s not in chosen[k]]
        for index in rng.choice(len(pool), size=extra[k], replace=False):
            chosen[k].add(pool[int(index)])
    return [s for k in sorted(chosen) for s in sorted(chosen[k])]
