"""CKD + KD resumes bit-exactly across epochs through the real engine: the default weighting balances the
CKD terms once, at the start, and a resumed run must continue with those weights (not measure new ones),
the same batches of the second epoch and the same random state."""
from __future__ import annotations

import pandas as pd
import torch

from ckdlab import api

NARROW = "config:L2-H32-A2-I64"


def test_ckd_kd_interrupted_in_the_second_epoch_resumes_bit_exactly(tmp_path):
    def distiller(name: str):
        return api.make_distiller("rte", student=NARROW, objective="ckd+kd", profile="smoke", out_dir=tmp_path / name,
                                  epochs=2)

    straight = distiller("straight")
    ended = straight.train()
    steps = ended["steps"]
    assert ended["finished"] and steps >= 4
    first = distiller("resumed")
    stop = steps // 2 + 1  # one step into the second epoch
    partial = first.train(stop_after=stop)
    assert partial["steps"] == stop and not partial["finished"]
    balanced = dict(first.weights)
    assert any(balanced[t] != 1.0 for t in ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")), balanced

    again = distiller("resumed")
    summary = again.train(resume=True)
    assert summary["steps"] == steps and summary["finished"]
    assert again.weights == straight.weights == balanced
    a = pd.read_csv(tmp_path / "straight" / "train_log.csv")
    b = pd.read_csv(tmp_path / "resumed" / "train_log.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for (key, p), (_, q) in zip(straight.unwrapped_model().state_dict().items(), again.unwrapped_model().state_dict().items()):
        assert torch.equal(p, q), key
