"""DynaBERT (Hou et al., NeurIPS 2020): one BERT whose width and depth can be cut at inference.

The CKD paper reports CKD "in combination with DynaBERT"; its authors never released that code,
so this module implements DynaBERT and lets either loss train it:

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
4. **Training stages**. Stage "width" (DynaBERT_W): every step sums the losses of all width
   sub-networks at full depth, so the gradients of all widths are summed. Stage "depth"
   (DynaBERT): every step sums over all width x depth sub-networks. The teacher is the
   fine-tuned full model in both stages (the official depth stage distils from the width-adaptive
   model at the same width instead).

Losses (``loss=``):

* ``"dynabert"`` (DynaBERT's own): ``dyna_logit`` = soft cross-entropy
  −(1/B) Σ_b Σ_c p_t[b,c] log p_s[b,c] (MSE on the output for regression) plus ``dyna_hidden`` =
  Σ_j mean over valid tokens and features of (h_s^j − h_t^{kept[j]})², embeddings included.
  Official weights: 1 and 0.1 in the width stage, 1 and 1 in the depth stage.
* ``"ckd+kd"``: the CKD relations (:mod:`ckdlab.objectives.ckd`) on the same matched states plus
  logit KD. A sub-network with too few layers for an LTR term (2 for pair, 3 for triplet) skips it.
"""
from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from ckdlab.engine.distill import Distiller
from ckdlab.engine.trainer import task_loss

WIDTHS = (0.25, 0.5, 0.75, 1.0)
DEPTHS = (0.5, 0.75, 1.0)
LOSSES = ("dynabert", "ckd+kd")
STAGE_WEIGHTS = {"width": {"dyna_logit": 1.0, "dyna_hidden": 0.1}, "depth": {"dyna_logit": 1.0, "dyna_hidden": 1.0}}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


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
                inputs = {k: batch[k].to(device) for k in MODEL_INPUTS if k in batch}
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


# --------------------------------------------------------------------------- losses


def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``−(1/B) Σ_b Σ_c softmax(z_t)[b,c] · log softmax(z_s)[b,c]`` (DynaBERT's logit loss, T = 1)."""
    return -(F.softmax(teacher_logits.detach().float(), dim=-1) * F.log_softmax(student_logits.float(), dim=-1)).sum(-1).mean()


def hidden_mse(student_states: Sequence[Tensor], teacher_states: Sequence[Tensor], attention_mask: Tensor) -> Tensor:
    """``Σ_j Σ_{valid tokens, features} (h_s^j − h_t^j)² / (#valid tokens · d)``: one MSE per matched
    pair of states, padding excluded, summed over pairs."""
    if len(student_states) != len(teacher_states):
        raise ValueError(f"hidden_mse pairs states one to one; got {len(student_states)} student and {len(teacher_states)} teacher")
    valid = attention_mask.to(torch.bool).unsqueeze(-1)
    count = valid.sum() * student_states[0].shape[-1]
    total = student_states[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student_states, teacher_states):
        diff = torch.where(valid, s.float() - t.detach().float(), 0.0)
        total = total + diff.pow(2).sum() / count.clamp(min=1)
    return total


# --------------------------------------------------------------------------- the trainer


def subnetwork_key(width: float, depth: float) -> str:
    return f"w{width:g}_d{depth:g}"


class DynaBERTDistiller(Distiller):
    """Trains the sub-networks of ``student`` (a rewired copy of the teacher) jointly.

    Each step sums the loss of every (width, depth) in ``widths`` x ``depths``, so one optimiser
    step follows the sum of their gradients. Evaluation scores every sub-network
    (``score@w0.5_d1``...) and reports their mean as ``score`` (the best checkpoint is the best
    on average).
    """

    # Teacher states are re-selected per sub-network depth, so the same row means different layers.
    memoize_teacher_relations = False

    def __init__(self, teacher: PreTrainedModel, student: PreTrainedModel, tokenizer: Any, task: Any, *,
                 loss: str = "dynabert", widths: Sequence[float] = WIDTHS, depths: Sequence[float] = (1.0,),
                 weights: dict[str, float] | None = None, **kwargs: Any) -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is not known; use one of {LOSSES}")
        if _geometry(teacher)[0] != _geometry(student)[0]:
            raise ValueError("DynaBERT's student is a (rewired) copy of the teacher: both need the same number of layers")
        self.loss_kind = loss
        self.widths = sorted({_check_multiplier("width", w) for w in widths}, reverse=True)
        self.depths = sorted({_check_multiplier("depth", d) for d in depths}, reverse=True)
        kwargs.pop("layer_map", None)
        # The CKD objective is built in both modes so the teacher cache holds every hidden state.
        super().__init__(teacher, student, tokenizer, task, objective="ckd+kd", weights=weights if loss == "ckd+kd" else None,
                         layer_map="uniform", **kwargs)
        self.objectives["ckd"].loss.layer_map = "uniform"  # states are pre-selected per depth
        if loss == "dynabert":
            self.default_weights = dict(STAGE_WEIGHTS["depth" if self.depths != [1.0] else "width"])
            self.weights = dict(self.default_weights)
            if weights:
                self._check_weight_names(weights)
                self.weights.update(weights)

    def subnetworks(self) -> list[tuple[float, float]]:
        return [(w, d) for d in self.depths for w in self.widths]

    def compute_terms(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        teacher = self.teacher_outputs(batch, {"logits", "hidden_states"})
        inputs, mask = self.model_inputs(batch), batch["attention_mask"]
        n_layers = _geometry(self.unwrapped_model())[0]
        terms: dict[str, Tensor] = {}
        for width, depth in self.subnetworks():
            with subnetwork(self.unwrapped_model(), width, depth):
                student = self._forward(self.model, inputs, {"hidden_states"})
            pairs = depth_layer_map(n_layers, depth)
            teacher_states = tuple(teacher.hidden_states[t] for t, _ in pairs)
            part = self._subnetwork_terms(teacher, teacher_states, student, batch, mask)
            for name, value in part.items():
                terms[name] = terms[name] + value if name in terms else value
        return terms

    def _subnetwork_terms(self, teacher, teacher_states, student, batch, mask) -> dict[str, Tensor]:
        if self.loss_kind == "dynabert":
            if self.task.is_regression:
                logit = F.mse_loss(student.logits.squeeze(-1).float(), teacher.logits.squeeze(-1).detach().float())
            else:
                logit = soft_cross_entropy(student.logits, teacher.logits)
            return {"dyna_logit": logit, "dyna_hidden": hidden_mse(student.hidden_states, teacher_states, mask)}
        terms = {}
        if self.weights.get("kd", 0) > 0:
            terms.update(self.objectives["kd"](teacher, student, batch))
        if self.weights.get("ce", 0) > 0:
            terms.update(self.objectives["ce"](teacher, student, batch))
        ckd = self.objectives["ckd"].loss
        n_states = len(student.hidden_states)
        ckd.weights.update({t: self.weights.get(t, 0.0) for t in ckd.weights})
        # LTR needs 2 (pair) or 3 (triplet) mapped layers; shallow sub-networks skip those terms.
        for term, needed in (("ltr_pair", 2), ("ltr_triplet", 3)):
            if n_states < needed:
                ckd.weights[term] = 0.0
        if any(v > 0 for v in ckd.weights.values()):
            terms.update(ckd(teacher_states, student.hidden_states, mask))
        return {k: v for k, v in terms.items() if self.weights.get(k, 0.0) > 0}

    def available_terms(self) -> tuple[str, ...]:
        return tuple(self.default_weights)

    def evaluate(self) -> dict[str, float]:
        from ckdlab.data import compute_metrics

        self.setup()
        metrics: dict[str, float] = {}
        scores = []
        split, loader = next(iter(self.dev_loaders.items()))
        for width, depth in self.subnetworks():
            with subnetwork(self.unwrapped_model(), width, depth):
                preds, labels = self.predict(loader)
            if self.task.is_regression:
                preds = preds.squeeze(-1)
            result = compute_metrics(self.task.name, preds, labels)
            key = subnetwork_key(width, depth)
            self.logger.log_eval(self.global_step, self.fractional_epoch, f"{split}@{key}", result)
            metrics[f"score@{key}"] = float(result[self.task.headline])
            scores.append(metrics[f"score@{key}"])
        metrics["score"] = float(sum(scores) / len(scores))
        for callback in self.callbacks:
            callback.on_evaluate(self, self.global_step, metrics)
        return metrics


# --------------------------------------------------------------------------- the whole procedure


def importance_batches(tokenizer: Any, task: str, data_dir=None, limit: int | None = 512,
                       max_length: int = 128, batch_size: int = 32, seed: int = 0) -> list[dict[str, Tensor]]:
    """Tokenised, padded *training* batches (a seeded subset of ``limit`` examples) for importance."""
    from torch.utils.data import DataLoader

    from ckdlab.data import DynamicPaddingCollator, get_task, load_task, tokenize_dataset

    spec = get_task(task)
    train = tokenize_dataset(load_task(spec.name, "train", data_dir=data_dir, limit=limit, seed=seed), tokenizer, spec, max_length=max_length)
    return list(DataLoader(train, batch_size=batch_size, shuffle=False, collate_fn=DynamicPaddingCollator(tokenizer)))


def run_dynabert(
    task: str,
    profile: str = "smoke",
    loss: str = "dynabert",
    seed: int = 0,
    teacher: str | None = None,
    widths: Sequence[float] = WIDTHS,
    depths: Sequence[float] = DEPTHS,
    weights: dict[str, float] | None = None,
    importance_examples: int | None = 512,
    method: str | None = None,
    data_dir=None,
    record: bool = True,
    resume: bool = True,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Importance -> rewire -> width stage -> width x depth stage; one record per sub-network.

    ``weights``: for ``loss="ckd+kd"`` the CKD/KD term weights (both stages); for ``"dynabert"``
    the defaults are DynaBERT's (logit 1, hidden 0.1 then 1). ``overrides`` are training options
    (``max_steps``, ``train_limit``...). Returns rows with width, depth, score, params, latency.
    """
    import time

    from ckdlab import api
    from ckdlab.data import get_task
    from ckdlab.engine import load_profile, profile_config
    from ckdlab.models import load_backbone
    from ckdlab.results import record_run

    spec = get_task(task)
    prof = load_profile(profile)
    method = method or ("DynaBERT loss" if loss == "dynabert" else "CKD + KD")
    start = time.perf_counter()
    teacher_path, teacher_model, tokenizer = api._load_teacher(spec.name, teacher, prof["name"], data_dir)
    config = profile_config(prof, "distill", spec.name, seed=seed, **overrides)
    temperature = float(prof.get("distill", {}).get("temperature", 1.0))
    student = copy.deepcopy(teacher_model)
    batches = importance_batches(tokenizer, spec.name, data_dir, importance_examples, config.max_length, config.eval_batch_size, seed)
    head_importance, neuron_importance = compute_importance(student, batches, regression=spec.is_regression)
    rewire(student, head_importance, neuron_importance)
    root = api.runs_dir() / prof["name"] / "dynabert" / spec.name / method.replace(" ", "_").replace("+", "p") / f"seed{seed}"
    summaries = {}
    for stage, stage_depths in (("width", (1.0,)), ("depth", tuple(depths))):
        stage_weights = weights if loss == "ckd+kd" else {**STAGE_WEIGHTS[stage], **(weights or {})}
        distiller = DynaBERTDistiller(
            teacher_model, student, tokenizer, spec, loss=loss, widths=widths, depths=stage_depths, weights=stage_weights,
            temperature=temperature, config=config, out_dir=root / stage, data_dir=data_dir, teacher_tokenizer=tokenizer,
        )
        summaries[stage] = distiller.train(resume=resume)
        best = root / stage / "best"
        student = load_backbone(best, num_labels=spec.num_labels)[0] if (best / "config.json").exists() else distiller.unwrapped_model()
    best_metrics = summaries["depth"].get("best_metrics") or {}
    rows = []
    for depth in sorted(depths):
        for width in sorted(widths):
            key = subnetwork_key(width, depth)
            sub = extract_subnetwork(student, width, depth)
            size = api.model_size(sub)
            row = {
                "kind": "dynabert", "profile": prof["name"], "task": spec.name, "teacher": str(teacher_path),
                "student": key, "method": method, "loss": loss, "width": width, "depth": depth, "seed": seed,
                "config": config.to_dict(), "metrics": {"score": best_metrics.get(f"score@{key}", float("nan"))},
                "score": best_metrics.get(f"score@{key}", float("nan")), "out_dir": str(root),
                "wall_time_s": time.perf_counter() - start, **size,
            }
            if record:
                record_run(row, api.results_dir())
            rows.append(row)
    return rows
