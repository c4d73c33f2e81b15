"""Shared test set-up: offline hub, run/result/figure folders in a temp dir, tiny models."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# The tests use tiny models: one thread avoids oversubscription on 2 cores (kernels started by
# papermill inherit OMP_NUM_THREADS; this process is set explicitly below).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_outputs(tmp_path, monkeypatch):
    """Runs, results and figures of a test never land in the checkout."""
    monkeypatch.setenv("CKDLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CKDLAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("CKDLAB_FIGURES", str(tmp_path / "figures"))


@pytest.fixture(scope="session")
def minilm():
    from ckdlab.models import load_backbone

    return load_backbone("minilm-l6", num_labels=2)
