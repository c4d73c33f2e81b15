"""Paper configs: the official per-task numbers, the weight conversion, and a dry run of every config."""
from __future__ import annotations

import time

import pytest
import torch

from ckdlab import api
from ckdlab.objectives.ckd import wr_pair_loss

# task: (T, WR-pair, WR-triplet, lr, epochs), from the CKD paper / official code.
OFFICIAL = {"sst2": (4, 100, 1000, 4e-5, 4), "cola": (3, 1, 10, 5e-5, 4), "rte": (3, 1, 10, 5e-5, 6),
            "mrpc": (4, 1, 1, 3e-5, 4), "stsb": (1, 0.1, 0.1, 5e-5, 4), "qnli": (3, 10, 1, 4e-5, 4),
            "mnli": (4, 100, 1, 4e-5, 4), "qqp": (2, 10, 10, 5e-5, 4)}


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_configs_hold_the_official_settings():
    configs = api.paper_configs()
    assert set(configs) == set(OFFICIAL)
    for task, (t, pair, triplet, lr, epochs) in OFFICIAL.items():
        c = configs[task]
        assert c["teacher"] == "bert-base-uncased"
        assert c["students"] == {"6L-768": "layers:1,3,5,7,9,11", "4L-312": "config:L4-H312-A12-I1200", "6L-384": "config:L6-H384-A12-I1536"}
        assert (c["temperature"], c["official_weights"]["wr_pair"], c["official_weights"]["wr_triplet"]) == (t, pair, triplet)
        assert isinstance(c["train"]["lr"], float) and c["train"]["lr"] == pytest.approx(lr) and c["train"]["epochs"] == epochs
    with pytest.raises(ValueError, match="no paper config"):
        api.paper_configs(["wnli"])


def _official_wr_pair(t_states, s_states, mask):
    """The official code's WR pair loss (cos, kldiv): KL summed over every anchor, divided by the
    number of valid (i, j) cells including the diagonal (written out with loops)."""
    total, cells = 0.0, 0
    for t, s in zip(t_states, s_states):
        for b in range(mask.shape[0]):
            valid = [i for i in range(mask.shape[1]) if mask[b, i]]
            cells += len(valid) ** 2
            for i in valid:
                others = [j for j in valid if j != i]
                if not others:
                    continue
                ct = torch.stack([torch.cosine_similarity(t[b, i], t[b, j], dim=0) for j in others])
                cs = torch.stack([torch.cosine_similarity(s[b, i], s[b, j], dim=0) for j in others])
                p, log_q = torch.softmax(ct, 0), torch.log_softmax(cs, 0)
                total += float((p * (torch.log(p) - log_q)).sum())
    return total / cells


def test_wr_pair_conversion_makes_the_objectives_equal():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    t = [torch.randn(3, 6, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    s = [torch.randn(3, 6, 5, generator=g, dtype=torch.float64) for _ in range(2)]
    ours = float(wr_pair_loss(t, s, mask))
    theirs = _official_wr_pair(t, s, mask)
    converted = api.official_to_ours({"wr_pair": 100.0}, mask.sum(1).tolist(), n_layer_pairs=2)["wr_pair"]
    assert converted * ours == pytest.approx(100.0 * theirs, rel=1e-9)


def test_triplet_and_ltr_factors_by_enumeration():
    lengths, w, k = [3, 7, 12], 2, 4
    ours = sum(1 for n in lengths for a in range(n) for b in range(n) for c in range(n)
               if len({a, b, c}) == 3 and abs(b - a) <= w and abs(c - a) <= w)
    theirs = sum(n * (2 * w + 1) ** 2 for n in lengths)
    out = api.official_to_ours({"wr_triplet": 10.0, "ltr_pair": 1.0, "ltr_triplet": 1.0, "kd": 1.0}, lengths, k, window=w)
    assert out["wr_triplet"] == pytest.approx(10.0 * ours / theirs)
    assert out["ltr_pair"] == pytest.approx(1 / k) and out["ltr_triplet"] == pytest.approx(k * (k - 1) * (k - 2) / k**3)
    assert out["kd"] == 1.0
    no_window = api.official_to_ours({"wr_triplet": 1.0}, lengths, k, window=None)["wr_triplet"]
    assert no_window == pytest.approx(sum(n * (n - 1) * (n - 2) for n in lengths) / sum(n**3 for n in lengths))
    with pytest.raises(ValueError, match="lengths"):
        api.official_to_ours({"wr_pair": 1.0}, [], 3)


def test_paper_runs_dry_run_builds_every_config_fast():
    start = time.perf_counter()
    frame = api.paper_runs(dry_run=True, methods=["CKD + KD"])  # CoDIR + KD: tests/test_codir_runs.py
    elapsed = time.perf_counter() - start
    assert len(frame) == 8 * 3
    assert set(frame["student"]) == {"6L-768", "4L-312", "6L-384"}
    assert frame["loss"].map(lambda v: v == v and abs(v) < float("inf")).all()
    assert (frame["terms"] == "kd,ltr_pair,ltr_triplet,wr_pair,wr_triplet").all()
    assert set(frame.loc[frame["student"] == "4L-312", "layer_pairs"]) == {5}  # uniform 12 -> 4: emb + 4 pairs
    assert elapsed < 30, f"dry run took {elapsed:.1f} s"
