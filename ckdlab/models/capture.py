"""Capture the self-attention query/key/value projections of a BERT encoder with forward hooks.

Attention-based objectives (TinyBERT, MiniLM) need Q, K, V per layer. transformers 5 runs BERT with the
sdpa kernel by default, which never materialises attention weights, and ``output_attentions=True`` would
force the slower eager path. Hooking the ``query``/``key``/``value`` ``nn.Linear`` modules of
``encoder.layer[i].attention.self`` gets the same tensors on any attention implementation; they are the
very tensors the attention consumes, so gradients flow through them.

Usage::

    with capture_qkv(student) as qkv:
        out = student(**inputs, output_hidden_states=True)
    # qkv == [(q, k, v), ...], one per captured layer, each [B, L, d] (heads not split)
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

_PROJECTIONS = ("query", "key", "value")


def find_self_attention_layers(model: nn.Module) -> tuple[nn.Module, list[nn.Module]]:
    """Return ``(encoder, [layer.attention.self for each layer])`` of a BERT-style model.

    Works for a bare ``BertModel`` and for task models that wrap one (``model.base_model`` is the
    ``BertModel`` of e.g. ``BertForSequenceClassification``).
    """
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(
            f"capture_qkv could not find encoder.layer on {type(model).__name__}; it expects a BERT-style "
            "transformers model (model.base_model.encoder.layer[i].attention.self.query/key/value)"
        )
    attentions = []
    for i, layer in enumerate(layers):
        attn = getattr(getattr(layer, "attention", None), "self", None)
        if attn is None or not all(isinstance(getattr(attn, p, None), nn.Linear) for p in _PROJECTIONS):
            raise ValueError(
                f"capture_qkv: encoder.layer[{i}] of {type(model).__name__} has no attention.self with "
                "query/key/value nn.Linear modules; only BERT-style self-attention is supported"
            )
        attentions.append(attn)
    return encoder, attentions


def _normalise_layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    chosen = []
    for i in layers:
        if not isinstance(i, int) or isinstance(i, bool) or not -n_layers <= i < n_layers:
            raise ValueError(
                f"capture_qkv layers must be ints in [-{n_layers}, {n_layers}) for a {n_layers}-layer encoder, "
                f"got {i!r}"
            )
        chosen.append(i % n_layers)
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"capture_qkv layers must be a non-empty list of distinct layers, got {list(layers)!r}")
    return sorted(chosen)


@contextmanager
def capture_qkv(
    model: nn.Module, layers: Sequence[int] | None = None
) -> Iterator[list[tuple[Tensor, Tensor, Tensor]]]:
    """Hook Q/K/V of a BERT encoder; yield a list filled with ``(q, k, v)`` per layer after each forward.

    Args:
        model: a transformers 5 ``BertModel`` or a task model wrapping one.
        layers: 0-based encoder layer indices (negative ones count from the end), or ``None`` for all.
            The list holds the captured layers in ascending layer order.

    Each forward pass of the encoder replaces the list's contents, so after several forwards inside the
    block it holds the last one; the list keeps its contents after the block exits. All hooks are removed
    on exit, also when the block raises. Training with gradient checkpointing is refused: the backward
    recomputation would run the hooks again and (with reentrant checkpointing) the captured tensors
    would carry no gradient.
    """
    encoder, attentions = find_self_attention_layers(model)
    chosen = _normalise_layers(layers, len(attentions))
    captured: list[tuple[Tensor, Tensor, Tensor]] = []
    slots: dict[int, dict[str, Tensor]] = {}
    # Only record between the encoder's pre- and post-hook, i.e. during a real forward pass.
    active = [False]

    def start(module: nn.Module, args: tuple) -> None:
        if module.training and any(getattr(layer, "gradient_checkpointing", False) for layer in encoder.layer):
            raise ValueError(
                "capture_qkv cannot capture Q/K/V while training with gradient checkpointing; call "
                "model.activation_checkpointing_disable() or put the model in eval mode"
            )
        slots.clear()
        active[0] = True

    def finish(module: nn.Module, args: tuple, output: object) -> None:
        active[0] = False
        missing = [i for i in chosen if len(slots.get(i, {})) != len(_PROJECTIONS)]
        if missing:
            raise RuntimeError(f"capture_qkv: the forward pass did not run query/key/value of layers {missing}")
        captured[:] = [tuple(slots[i][p] for p in _PROJECTIONS) for i in chosen]
        slots.clear()

    def recorder(layer: int, projection: str):
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            if active[0]:
                slots.setdefault(layer, {})[projection] = output

        return hook

    handles = []
    try:
        handles.append(encoder.register_forward_pre_hook(start))
        handles.append(encoder.register_forward_hook(finish))
        for i in chosen:
            for p in _PROJECTIONS:
                handles.append(getattr(attentions[i], p).register_forward_hook(recorder(i, p)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()
        active[0] = False
        slots.clear()
