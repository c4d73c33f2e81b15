"""Teacher recipes: the intermediate stage (MNLI before RTE), its head mapping and identity, and the
majority baselines of notebook 01's table."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from ckdlab.data import compute_metrics, load_task
from ckdlab.errors import UserError
from ckdlab.models import load_backbone
from ckdlab.profiles import load_profile, profile_config, stage_intermediate
from ckdlab.studies.teachers import majority_baseline, teacher_summary
from ckdlab.workspace.intermediate import init_from_intermediate, nli_head_to_binary
from ckdlab.workspace.teachers import finetune_teacher, intermediate_dir, teacher_identity


def smoke_with(**intermediate):
    profile = copy.deepcopy(load_profile("smoke"))
    settings = profile["finetune"]["tasks"]["rte"]["intermediate"]
    settings.update(intermediate)
    return profile


# --- the head mapping -------------------------------------------------------------------------


def test_nli_head_to_binary_values():
    weight = torch.arange(12, dtype=torch.float64).reshape(3, 4)
    bias = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    before = weight.clone(), bias.clone()
    new_weight, new_bias = nli_head_to_binary(weight, bias)
    expected_weight = torch.tensor([[0, 1, 2, 3], [6, 7, 8, 9]], dtype=torch.float64)  # row 0; (rows 1 + 2) / 2
    expected_bias = torch.tensor([0.5, 0.5 + math.log(2.0)], dtype=torch.float64)
    torch.testing.assert_close(new_weight, expected_weight, rtol=0, atol=0)
    torch.testing.assert_close(new_bias, expected_bias, rtol=0, atol=1e-15)
    assert torch.equal(weight, before[0]) and torch.equal(bias, before[1])


def test_nli_head_to_binary_keeps_entailment_probability_when_the_others_agree():
    # Where the neutral and contradiction logits are equal, the 2-way softmax of the mapped head gives
    # exactly the 3-way entailment probability.
    generator = torch.Generator().manual_seed(0)
    hidden = 5
    weight = torch.randn(3, hidden, generator=generator, dtype=torch.float64)
    weight[2] = weight[1]
    bias = torch.tensor([0.3, -0.2, -0.2], dtype=torch.float64)
    states = torch.randn(7, hidden, generator=generator, dtype=torch.float64)
    three_way = torch.softmax(states @ weight.T + bias, dim=-1)[:, 0]
    new_weight, new_bias = nli_head_to_binary(weight, bias)
    two_way = torch.softmax(states @ new_weight.T + new_bias, dim=-1)[:, 0]
    torch.testing.assert_close(two_way, three_way, rtol=0, atol=1e-12)


def test_nli_head_to_binary_refuses_other_heads():
    with pytest.raises(ValueError, match="3-way head"):
        nli_head_to_binary(torch.zeros(2, 4), torch.zeros(2))


# --- the profile key and the identity ---------------------------------------------------------


def test_profile_config_leaves_the_intermediate_stage_out():
    config = profile_config("quick", "finetune", "rte")
    assert config.train_limit == 2490 and config.epochs == 1 and config.group_by_length
    stage = stage_intermediate("quick", "finetune", "rte")
    assert stage["task"] == "mnli" and stage["train_limit"] == 9000 and stage["epochs"] == 1 and stage["head_init"] == "nli"
    assert stage["batch_size"] == 32  # the finetune defaults under it
    assert stage_intermediate("quick", "finetune", "sst2") is None


def test_identity_changes_with_the_intermediate_settings():
    base, _, _ = teacher_identity("rte", smoke_with())
    assert base.config["intermediate"]["task"] == "mnli"
    assert teacher_identity("rte", smoke_with())[0].run_id == base.run_id
    for change in ({"epochs": 2}, {"lr": 3e-5}, {"train_limit": 16}, {"head_init": "fresh"}):
        changed, _, _ = teacher_identity("rte", smoke_with(**change))
        assert changed.run_id != base.run_id, change
    without = copy.deepcopy(load_profile("smoke"))
    del without["finetune"]["tasks"]["rte"]
    plain, _, _ = teacher_identity("rte", without)
    assert "intermediate" not in plain.config and plain.run_id != base.run_id
    # The target's own options do not move the intermediate run.
    assert intermediate_dir("rte", smoke_with()) == intermediate_dir("rte", smoke_with(), seed=0)
    assert teacher_identity("rte", smoke_with(), epochs=2)[0].config["intermediate"] == base.config["intermediate"]


@pytest.mark.parametrize("change, message", [
    ({"task": "qqp"}, "supports"),
    ({"head_init": "mean"}, "head_init"),
    ({"task": "rte"}, "the task itself"),
])
def test_bad_intermediate_settings_are_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        teacher_identity("rte", smoke_with(**change))


def test_nli_head_init_needs_an_entailment_target():
    profile = copy.deepcopy(load_profile("smoke"))
    profile["finetune"]["tasks"]["mrpc"] = {"intermediate": {"task": "mnli", "head_init": "nli"}}
    with pytest.raises(UserError, match="head_init: fresh"):
        teacher_identity("mrpc", profile)


# --- end to end in the smoke profile ----------------------------------------------------------


def test_rte_teacher_trains_its_mnli_stage_first_and_finds_both_again():
    summary = finetune_teacher("rte", profile="smoke")
    stage_dir = intermediate_dir("rte", "smoke")
    assert (stage_dir / "best" / "config.json").exists()
    stage = json.loads((stage_dir / "summary.json").read_text())
    assert stage["train_examples"] == 32 and stage["finished"]
    identity = json.loads((stage_dir.parent.parent / "teachers" / f"rte-{teacher_identity('rte', 'smoke')[0].short}" / "run.json").read_text())
    assert identity["config"]["intermediate"]["task"] == "mnli"
    assert summary["state"] == "new" and summary["train_examples"] == 64
    again = finetune_teacher("rte", profile="smoke")
    assert again["state"] == "finished"
    # Another RTE schedule is another teacher, started from the same (found, not retrained) MNLI stage.
    stage_log = (stage_dir / "train_log.csv").read_text()
    other = finetune_teacher("rte", profile="smoke", lr=5e-4)
    assert other["state"] == "new" and other["out_dir"] != summary["out_dir"]
    assert (stage_dir / "train_log.csv").read_text() == stage_log
    row = teacher_summary("rte", "smoke", summary["out_dir"])
    assert row["intermediate"] == "mnli" and row["majority"] == majority_baseline("rte")["accuracy"]


def test_init_from_intermediate_copies_the_encoder_and_maps_the_head():
    finetune_teacher("rte", profile="smoke", record=False)
    source = intermediate_dir("rte", "smoke") / "best"
    trained, _ = load_backbone(source, num_labels=3)
    torch.manual_seed(0)
    model, _ = load_backbone("tiny-random", num_labels=2)
    init_from_intermediate(model, source, "nli")
    for name, value in trained.base_model.state_dict().items():
        assert torch.equal(model.base_model.state_dict()[name], value), name
    weight, bias = nli_head_to_binary(trained.classifier.weight.detach(), trained.classifier.bias.detach())
    assert torch.equal(model.classifier.weight, weight) and torch.equal(model.classifier.bias, bias)
    torch.manual_seed(0)
    fresh, _ = load_backbone("tiny-random", num_labels=2)
    head = fresh.classifier.weight.detach().clone()
    init_from_intermediate(fresh, source, "fresh")
    assert torch.equal(fresh.classifier.weight, head)


# --- majority baselines -----------------------------------------------------------------------


def test_majority_baseline_against_the_dev_labels():
    labels = np.asarray(load_task("mrpc", "dev")["label"])
    assert (labels == 1).mean() > 0.5
    expected = compute_metrics("mrpc", np.ones_like(labels), labels)
    assert majority_baseline("mrpc") == {k: round(v, 4) for k, v in expected.items()}
    assert majority_baseline("mrpc")["f1"] == pytest.approx(0.8122, abs=1e-4)
    assert majority_baseline("rte")["accuracy"] == pytest.approx(0.5271, abs=1e-4)
    assert majority_baseline("cola") == {"mcc": 0.0}
    assert majority_baseline("stsb") == {"pearson": 0.0, "spearman": 0.0}


def test_majority_baseline_ties_take_the_lower_id():
    assert majority_baseline("sst2", labels=[1, 0, 1, 0]) == {"accuracy": 0.5}
    assert majority_baseline("cola", labels=[1, 1, 0]) == {"mcc": 0.0}
