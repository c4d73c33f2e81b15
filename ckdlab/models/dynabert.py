"""DynaBERT's adaptive width and depth (Hou et al., NeurIPS 2020): masks, importance, rewiring, slicing.

1. **Importance** (on *training* data; the official code used the dev set, which leaks it).
   A head mask ``m_h`` multiplies each head's context vector and a neuron mask ``m_n`` each FFN
   activation (both all-ones, so the model is unchanged). With the task loss L,

       I_head[l, h]   = | Σ_batches ∂L/∂m_h[l, h] |      (Michel et al. 2019)
       I_neuron[l, n] = | Σ_batches ∂L/∂m_n[l, n] |

   (``absolute="per_batch"`` gives Σ_batches |∂L/∂m| instead.) ∂L/∂m_n = Σ_tokens a_n ∂L/∂a_n,
   the first-order Taylor estimate of the loss change when neuron n is removed.
2. **Rewiring**: per layer, heads (rows of query/key/value, columns of attention.output.dense)
   and FFN neurons (rows of intermediate.dense, columns of output.dense) are permuted in place by
   descending importance. The function computed is unchanged (tested).
3. **Sub-networks**. Width multiplier m keeps the first ``max(1, round(m·H))`` heads and
   ``max(1, round(m·I))`` FFN neurons of every layer. Depth multiplier d keeps, as the official
   code does, layers ``floor(i / d)`` for i = 0 .. round(d·L) − 1 (0-based): d = 0.5 keeps
   0, 2, 4, ...; d = 0.75 of 12 layers keeps 0,1,2, 4,5,6, 8,9,10, i.e. drops every fourth
   layer. Student hidden state j is matched with teacher hidden state ``kept[j]`` (with
   ``kept[depth] = L``), so j = 0 is the embedding output and the last is last-vs-last.
   During training a sub-network is the full model with 0/1 masks and a shortened layer list
   (exactly the sliced network, whose weights are shared); :func:`extract_subnetwork` slices a
   standalone smaller model for latency and deployment.

The training procedure (two stages, DynaBERT's loss or CKD + KD) is the study
:mod:`ckdlab.studies.dynabert`; the loss is the registered objective ``dynabert``
(:mod:`ckdlab.objectives.dynabert`).
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ckdlab.models.heads import task_loss
from ckdlab.models.outputs import model_inputs

WIDTHS = (0.25, 0.5, 0.75, 1.0)
DEPTHS = (0.5, 0.75, 1.0)

# --------------------------------------------------------------------------- sizes and rules


def _check_multiplier(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name}={value!r} must be a number in (0, 1], e.g. 0.25, 0.5, 0.75 or 1.0")
    return float(value)


def kept_count(total: int, width: float) -> int:
    """Heads or neurons a width multiplier keeps: ``max(1, round(width · total))``."""
    return max(1, round(_check_multiplier("width", width) * total))


def kept_layers(n_layers: int, depth: float) -> list[int]:
    """0-based layers kept at depth multiplier ``depth``: ``floor(i / depth)``, i < round(depth·L)."""
    depth = _check_multiplier("depth", depth)
    return [math.floor(i / depth) for i in range(max(1, round(depth * n_layers)))]


def depth_layer_map(n_layers: int, depth: float) -> list[tuple[int, int]]:
    """``(teacher hidden-state index, student hidden-state index)`` pairs of a depth sub-network."""
    kept = kept_layers(n_layers, depth) + [n_layers]
    return [(kept[j], j) for j in range(len(kept))]


def _encoder(model: PreTrainedModel) -> nn.Module:
    base = model.base_model
    if not hasattr(base, "encoder") or not hasattr(base.encoder, "layer"):
        raise ValueError(f"DynaBERT needs a BERT-style model (base_model.encoder.layer), got {type(model).__name__}")
    return base


def _geometry(model: PreTrainedModel) -> tuple[int, int, int, int]:
    """(layers, heads, head size, FFN neurons) of the full model."""
    first = _encoder(model).encoder.layer[0]
    attention = first.attention.self
    return len(_encoder(model).encoder.layer), attention.num_attention_heads, attention.attention_head_size, first.intermediate.dense.out_features


# --------------------------------------------------------------------------- masks


@contextlib.contextmanager
def masked(model: PreTrainedModel, head_mask: Tensor | None = None, neuron_mask: Tensor | None = None) -> Iterator[None]:
    """Multiply each head's context vector by ``head_mask[l, h]`` and each FFN activation by
    ``neuron_mask[l, n]`` inside the block (forward hooks; removed on exit)."""
    layers = _encoder(model).encoder.layer
    n_layers, heads, head_size, ffn = _geometry(model)
    if head_mask is not None and tuple(head_mask.shape) != (n_layers, heads):
        raise ValueError(f"head_mask must have shape [layers, heads] = {(n_layers, heads)}, got {tuple(head_mask.shape)}")
    if neuron_mask is not None and tuple(neuron_mask.shape) != (n_layers, ffn):
        raise ValueError(f"neuron_mask must have shape [layers, ffn] = {(n_layers, ffn)}, got {tuple(neuron_mask.shape)}")
    handles = []
    for index, layer in enumerate(layers):
        if head_mask is not None:
            def head_hook(module, args, output, index=index):
                context, weights = output
                shape = context.shape
                scaled = context.view(*shape[:-1], heads, head_size) * head_mask[index].to(context.dtype)[:, None]
                return scaled.view(shape), weights

            handles.append(layer.attention.self.register_forward_hook(head_hook))
        if neuron_mask is not None:
            def neuron_hook(module, args, output, index=index):
                return output * neuron_mask[index].to(output.dtype)

            handles.append(layer.intermediate.register_forward_hook(neuron_hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def width_masks(model: PreTrainedModel, width: float) -> tuple[Tensor, Tensor]:
    """0/1 masks keeping the first ``kept_count`` heads and neurons of every layer."""
    n_layers, heads, _, ffn = _geometry(model)
    device = next(model.parameters()).device
    head_mask = torch.zeros(n_layers, heads, device=device)
    head_mask[:, : kept_count(heads, width)] = 1.0
    neuron_mask = torch.zeros(n_layers, ffn, device=device)
    neuron_mask[:, : kept_count(ffn, width)] = 1.0
    return head_mask, neuron_mask


@contextlib.contextmanager
def subnetwork(model: PreTrainedModel, width: float = 1.0, depth: float = 1.0) -> Iterator[PreTrainedModel]:
    """Run ``model`` as its (width, depth) sub-network inside the block; weights stay shared.

    Width uses 0/1 masks (exactly the sliced network: masked heads and neurons add nothing);
    depth temporarily shortens the encoder's layer list to :func:`kept_layers`.
    """
    from transformers.utils.output_capturing import maybe_install_capturing_hooks

    base = _encoder(model)
    # Hidden-state hooks are installed lazily on the layers present at the first call; install
    # them on the full list now so a shortened list never leaves dropped layers without them.
    maybe_install_capturing_hooks(base)
    full = base.encoder.layer
    kept = kept_layers(len(full), depth)
    stack = contextlib.ExitStack()
    if width < 1.0:
        stack.enter_context(masked(model, *width_masks(model, width)))
    with stack:
        if len(kept) < len(full):
            base.encoder.layer = nn.ModuleList([full[i] for i in kept])
        try:
            yield model
        finally:
            base.encoder.layer = full


# --------------------------------------------------------------------------- importance and rewiring


def compute_importance(
    model: PreTrainedModel,
    batches: Iterable[dict[str, Tensor]],
    regression: bool = False,
    absolute: str = "after_sum",
) -> tuple[Tensor, Tensor]:
    """Head importance ``[layers, heads]`` and FFN-neuron importance ``[layers, ffn]``.

    ``I = |Σ_batches ∂L/∂m|`` (``absolute="after_sum"``, the definition of Michel et al. 2019) or
    ``Σ_batches |∂L/∂m|`` (``"per_batch"``), L the task loss (cross-entropy, MSE for regression)
    of the model in eval mode, m all-ones head / neuron masks. Batches need ``labels``.
    """
    if absolute not in ("after_sum", "per_batch"):
        raise ValueError(f"absolute={absolute!r}: use 'after_sum' (|Σ grad|) or 'per_batch' (Σ |grad|)")
    n_layers, heads, _, ffn = _geometry(model)
    device = next(model.parameters()).device
    head_mask = torch.ones(n_layers, heads, device=device, requires_grad=True)
    neuron_mask = torch.ones(n_layers, ffn, device=device, requires_grad=True)
    head_total = torch.zeros(n_layers, heads, dtype=torch.float64, device=device)
    neuron_total = torch.zeros(n_layers, ffn, dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with masked(model, head_mask, neuron_mask):
            for batch in batches:
                if "labels" not in batch:
                    raise ValueError(f"importance needs labelled batches; this batch has keys {sorted(batch)}")
                inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
                loss = task_loss(model(**inputs).logits, batch["labels"].to(device), regression)
                g_head, g_neuron = torch.autograd.grad(loss, [head_mask, neuron_mask])
                if absolute == "per_batch":
                    g_head, g_neuron = g_head.abs(), g_neuron.abs()
                head_total += g_head.double()
                neuron_total += g_neuron.double()
                seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("compute_importance got no batches; pass a non-empty iterable of training batches")
    return head_total.abs().float(), neuron_total.abs().float()


def importance_order(importance: Tensor) -> Tensor:
    """Per-row indices by descending importance (ties keep the original order)."""
    return torch.sort(importance, dim=-1, descending=True, stable=True).indices


@torch.no_grad()
def rewire(model: PreTrainedModel, head_importance: Tensor, neuron_importance: Tensor) -> PreTrainedModel:
    """Permute every layer's heads and FFN neurons in place, most important first; returns ``model``."""
    layers = _encoder(model).encoder.layer
    n_layers, heads, head_size, ffn = _geometry(model)
    if tuple(head_importance.shape) != (n_layers, heads) or tuple(neuron_importance.shape) != (n_layers, ffn):
        raise ValueError(
            f"importance shapes {tuple(head_importance.shape)} / {tuple(neuron_importance.shape)} do not match the "
            f"model's [layers, heads] = {(n_layers, heads)} / [layers, ffn] = {(n_layers, ffn)}"
        )
    head_orders, neuron_orders = importance_order(head_importance), importance_order(neuron_importance)
    for layer, head_order, neuron_order in zip(layers, head_orders, neuron_orders):
        rows = (head_order.to(torch.long)[:, None] * head_size + torch.arange(head_size)).flatten()
        attention = layer.attention
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            linear.weight.copy_(linear.weight[rows.to(linear.weight.device)])
            linear.bias.copy_(linear.bias[rows.to(linear.bias.device)])
        dense = attention.output.dense
        dense.weight.copy_(dense.weight[:, rows.to(dense.weight.device)])
        neurons = neuron_order.to(layer.intermediate.dense.weight.device)
        layer.intermediate.dense.weight.copy_(layer.intermediate.dense.weight[neurons])
        layer.intermediate.dense.bias.copy_(layer.intermediate.dense.bias[neurons])
        layer.output.dense.weight.copy_(layer.output.dense.weight[:, neurons])
    return model


def _sliced_linear(linear: nn.Linear, rows: slice = slice(None), cols: slice = slice(None)) -> nn.Linear:
    weight = linear.weight[rows, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias[rows])
    return new


def extract_subnetwork(model: PreTrainedModel, width: float = 1.0, depth: float = 1.0) -> PreTrainedModel:
    """A standalone copy holding only the (width, depth) sub-network: the first heads and neurons
    of the kept layers, sliced out of every matrix.

    The copy runs exactly like ``subnetwork(model, width, depth)``. Its config records
    ``num_hidden_layers`` and ``intermediate_size`` of the slice and ``dynabert`` = {width, depth,
    heads, layers}; ``num_attention_heads`` keeps the full count because the head size
    (hidden / heads) must stay the same, so reload the saved weights through this function, not
    ``from_pretrained``.
    """
    n_layers, heads, head_size, ffn = _geometry(model)
    keep_heads, keep_ffn, kept = kept_count(heads, width), kept_count(ffn, width), kept_layers(n_layers, depth)
    sub = copy.deepcopy(model)
    base = _encoder(sub)
    base.encoder.layer = nn.ModuleList([base.encoder.layer[i] for i in kept])
    qkv = slice(0, keep_heads * head_size)
    for layer in base.encoder.layer:
        attention = layer.attention
        attention.self.query = _sliced_linear(attention.self.query, rows=qkv)
        attention.self.key = _sliced_linear(attention.self.key, rows=qkv)
        attention.self.value = _sliced_linear(attention.self.value, rows=qkv)
        attention.self.num_attention_heads = keep_heads
        attention.self.all_head_size = keep_heads * head_size
        attention.output.dense = _sliced_linear(attention.output.dense, cols=qkv)
        layer.intermediate.dense = _sliced_linear(layer.intermediate.dense, rows=slice(0, keep_ffn))
        layer.output.dense = _sliced_linear(layer.output.dense, cols=slice(0, keep_ffn))
    sub.config.num_hidden_layers = len(kept)
    sub.config.intermediate_size = keep_ffn
    sub.config.dynabert = {"width": width, "depth": depth, "heads": keep_heads, "layers": kept}
    return sub
