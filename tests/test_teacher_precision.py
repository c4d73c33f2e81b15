"""The frozen teacher in bf16 or int8: resolving the option, the cast copies and how close their
outputs are to float32, the engine's float32 outputs, the cache keyed by precision, the run identity."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ckdlab import api
from ckdlab.engine.distill import Distiller
from ckdlab.engine.teacher_cache import TeacherCache
from ckdlab.errors import UserError
from ckdlab.models import load_backbone
from ckdlab.models.precision import cast_teacher, native_bf16, resolve_teacher_precision

NARROW = "config:L2-H32-A2-I64"
NEEDS = frozenset({"logits", "hidden_states"})


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model, tokenizer = load_backbone("tiny-random", num_labels=2)
    inputs = tokenizer(["a quiet film that stays with you", "dull , long and loud", "fine"], padding=True,
                       return_tensors="pt")
    return model.eval(), dict(inputs)


def test_resolve_names_the_option_and_decides_auto_by_the_device():
    assert resolve_teacher_precision("auto", "cpu") == ("bf16" if native_bf16("cpu") else "fp32")
    assert resolve_teacher_precision("int8", "cpu") == "int8"
    with pytest.raises(ValueError, match="teacher-precision"):
        resolve_teacher_precision("fp8", "cpu")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_teacher_precision("int8", "cuda:0")
    with pytest.raises(ValueError, match="teacher_precision"):
        api.make_distiller("sst2", student=NARROW, objective="kd", profile="smoke", teacher_precision="half")


@pytest.mark.parametrize("precision, atol", [("bf16", 0.05), ("int8", 0.05)])
def test_cast_copy_is_cheaper_close_to_float32_and_leaves_the_model_alone(teacher, precision, atol):
    model, inputs = teacher
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cheap = cast_teacher(model, precision)
    assert cheap is not model and all(not p.requires_grad for p in cheap.parameters())
    if precision == "bf16":
        assert {p.dtype for p in cheap.parameters()} == {torch.bfloat16}
    else:
        assert not any(type(m) is nn.Linear for m in cheap.modules()), "every Linear is dynamically quantised"
    with torch.no_grad():
        ref = model(**inputs, output_hidden_states=True)
        out = cheap(**inputs, output_hidden_states=True)
    assert torch.allclose(out.logits.float(), ref.logits, atol=atol)
    assert torch.equal(out.logits.argmax(-1), ref.logits.argmax(-1))
    for mine, theirs in zip(out.hidden_states, ref.hidden_states):
        # Hidden states are LayerNorm outputs (unit scale): a relative error of a few percent at most.
        assert (mine.float() - theirs).abs().max() < 0.1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert cast_teacher(model, "fp32") is model


def test_cast_refuses_an_unresolved_precision(teacher):
    with pytest.raises(ValueError, match="resolved"):
        cast_teacher(teacher[0], "auto")


@pytest.fixture(scope="module")
def outputs_by_precision():
    """The smoke teacher's outputs on one batch, as the engine gives them, for each precision."""
    found = {}
    for precision in ("fp32", "bf16", "int8"):
        distiller = api.make_distiller("sst2", student=NARROW, objective="kd+pkd", profile="smoke",
                                       teacher_precision=precision, cache_teacher=False)
        distiller.setup()
        batch = next(iter(distiller.train_loader))
        found[precision] = (distiller, distiller.teacher_outputs(batch, NEEDS))
    return found


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_the_engine_gives_objectives_float32_close_to_the_float32_teacher(outputs_by_precision, precision):
    distiller, outputs = outputs_by_precision[precision]
    _, reference = outputs_by_precision["fp32"]
    assert distiller.teacher.dtype == torch.float32, "the given teacher is kept; a copy runs"
    assert outputs.logits.dtype == torch.float32
    assert torch.allclose(outputs.logits, reference.logits, atol=0.05)
    mapped = [h for h in outputs.hidden_states if h is not None]
    assert mapped and all(h.dtype == torch.float32 for h in mapped)
    for mine, theirs in zip(outputs.hidden_states, reference.hidden_states):
        if mine is not None:
            assert (mine - theirs).abs().max() < 0.1


def test_a_cache_serves_only_runs_of_its_precision(outputs_by_precision):
    built, _ = outputs_by_precision["bf16"]
    cache = TeacherCache(logits=torch.zeros(4, 2), hidden=None, layers=(), n_hidden_states=3, precision="fp32")
    same = dict(teacher=built.teacher, student=built.unwrapped_model(), tokenizer=built.tokenizer, task="sst2",
                objective="kd", config=built.config)
    with pytest.raises(ValueError, match="teacher_precision is bf16"):
        Distiller(**same, teacher_cache=cache, teacher_precision="bf16")
    assert Distiller(**same, teacher_cache=cache, teacher_precision="fp32").teacher_cache is cache


def test_an_int8_teacher_refuses_objectives_that_read_its_attention():
    with pytest.raises(UserError, match="tinybert.*q/k/v"):
        api.make_distiller("sst2", student=NARROW, objective="tinybert+kd", profile="smoke", teacher_precision="int8")


def test_the_precision_is_part_of_the_run_identity_and_the_record(tmp_path):
    rows = {p: api.distill("sst2", student=NARROW, objective="kd", profile="smoke", teacher_precision=p,
                           out_dir=tmp_path / p, max_steps=2) for p in ("fp32", "bf16")}
    assert rows["fp32"]["run_id"] != rows["bf16"]["run_id"]
    assert [rows[p]["teacher_precision"] for p in ("fp32", "bf16")] == ["fp32", "bf16"]
