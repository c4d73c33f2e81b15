"""A frozen teacher in a cheaper numeric form: bf16 weights or dynamic int8 Linear layers.

A distillation step runs the teacher forward on every batch (unless its outputs are cached); the
teacher is frozen, so nothing needs its float32 gradients and only its outputs matter. Three forms:

=========  =====================================================================================
``fp32``   the model as loaded (the reference)
``bf16``   every weight cast to bfloat16 once; matrix products run in bf16 with float32
           accumulation (oneDNN/AMX on CPUs with native bf16, tensor cores on GPUs)
``int8``   ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear`` (int8 weights, inputs
           quantised per batch; CPU only); embeddings, LayerNorm and attention stay float32
``auto``   ``bf16`` where the device computes bf16 natively, else ``fp32``
=========  =====================================================================================

Outputs are returned in float32 by the engine whatever the form, so objectives never see
another dtype. How far each form's outputs are from float32, and what that does to a student,
is measured by ``benchmarks/bench_vs_textbrewer.py --precision`` (see ``docs/scale.md``).
"""
from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

TEACHER_PRECISIONS = ("auto", "fp32", "bf16", "int8")


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 matrix products natively (a CPU with AVX512-BF16 or AMX; a
    GPU that supports bf16). Elsewhere bf16 is emulated and slower than float32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    # torch.cpu's probes are private; a torch without them is treated as having no native bf16.
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe() for probe in probes if probe is not None)


def resolve_teacher_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` | ``bf16`` | ``int8`` for ``precision`` on ``device`` (``auto`` decided here); a
    ``ValueError`` naming the option when it is unknown or impossible on the device."""
    if precision not in TEACHER_PRECISIONS:
        raise ValueError(f"teacher_precision={precision!r} is not known; use one of {', '.join(TEACHER_PRECISIONS)} "
                         "(--teacher-precision)")
    device = torch.device(device)
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"teacher_precision='int8' (dynamic quantisation) runs on the CPU only, but the teacher is on "
                         f"{device}; use --teacher-precision bf16 or fp32")
    return precision


def cast_teacher(model: nn.Module, precision: str) -> nn.Module:
    """A frozen, eval-mode copy of ``model`` in ``precision`` (``fp32`` returns ``model`` itself,
    frozen); the given model is left unchanged otherwise (student builders and fidelity tables keep
    reading it in float32)."""
    if precision not in TEACHER_PRECISIONS[1:]:
        raise ValueError(f"cast_teacher needs a resolved precision (fp32, bf16 or int8), got {precision!r}")
    for param in model.parameters():
        param.requires_grad_(False)
    model.eval()
    if precision == "fp32":
        return model
    if precision == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16).eval()
    with warnings.catch_warnings():
        # torch marks torch.ao.quantization deprecated in favour of torchao, which this project does not use.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)
    return quantized.eval()
