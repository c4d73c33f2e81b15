"""How big and how fast a model is: parameter counts and measured CPU latency."""
from __future__ import annotations

import statistics
import time

import torch
from transformers import PreTrainedModel


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> dict[str, int]:
    """Total, embedding and non-embedding (transformer body + heads) parameter counts."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad or not trainable_only}
    total = sum(p.numel() for p in params.values())
    embedding = sum(p.numel() for n, p in params.items() if ".embeddings." in f".{n}")
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


@torch.no_grad()
def measure_latency(
    model: PreTrainedModel,
    seq_len: int = 128,
    batch_size: int = 1,
    repeats: int = 10,
    warmup: int = 2,
    threads: int | None = None,
) -> dict[str, float]:
    """Median wall time (ms) of one forward pass on CPU for a ``batch_size x seq_len`` input.

    Inputs are random token ids, which is fine for latency: cost does not depend on the ids.
    ``threads`` pins ``torch.set_num_threads`` for the measurement (restored afterwards) so that
    numbers from different models are comparable.
    """
    was_training = model.training
    model.eval()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        device = next(model.parameters()).device
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(1000, model.config.vocab_size, (batch_size, seq_len), generator=generator).to(device)
        mask = torch.ones_like(ids)
        # A pair model (the BiLSTM for pair tasks) reads two segments: give it two halves.
        types = torch.zeros_like(ids)
        if getattr(model.config, "sentence_pair", False):
            types[:, seq_len // 2:] = 1
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        for _ in range(warmup):
            model(**inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs)
            times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(previous_threads)
        model.train(was_training)
    return {
        "latency_ms": statistics.median(times),
        "latency_ms_p90": sorted(times)[int(0.9 * (len(times) - 1))],
        "seq_len": seq_len,
        "batch_size": batch_size,
        "threads": threads or previous_threads,
    }


def size_summary(model: PreTrainedModel, seq_len: int = 128, repeats: int = 5) -> dict[str, object]:
    """What a results table shows of a model's size: ``arch``, ``params``, ``params_non_embedding``
    and the median CPU ``latency_ms`` (batch 1, ``seq_len`` tokens, 1 thread)."""
    from ckdlab.models.students import describe

    params = count_parameters(model)
    latency = measure_latency(model, seq_len=seq_len, repeats=repeats, threads=1)
    return {
        "arch": describe(model),
        "params": params["total"],
        "params_non_embedding": params["non_embedding"],
        "latency_ms": round(latency["latency_ms"], 2),
    }
