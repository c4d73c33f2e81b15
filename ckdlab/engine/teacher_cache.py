"""Teacher outputs computed once per training set, so epochs and ablations skip the teacher.

Logits are always cached (N x C floats). Hidden states of the *mapped* teacher layers are cached
when they fit ``budget_bytes`` (stored per example, trimmed to its length, so dynamic padding and a
new batch composition every epoch still work). The teacher runs in eval mode, so its outputs are
deterministic and the cache is exact, not an approximation. A bf16 teacher's hidden states are
kept in bf16 (exactly what it produced, half the memory); lookups return float32. ``precision``
records the teacher's numeric form (:mod:`ckdlab.models.precision`): outputs of a bf16 or int8
teacher are not a float32 teacher's, so a cache serves only runs of the same precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ckdlab.models.outputs import ModelOutputs, model_inputs


@dataclass
class TeacherCache:
    logits: torch.Tensor  # [N, C]
    hidden: list[torch.Tensor] | None  # per example [n_layers, len_i, d]
    layers: tuple[int, ...]  # teacher hidden-state indices held in ``hidden``
    n_hidden_states: int
    precision: str = "fp32"  # the teacher's numeric form (ckdlab.models.precision)

    @staticmethod
    def estimate_bytes(lengths: Sequence[int], n_layers: int, width: int, dtype: torch.dtype = torch.float32) -> int:
        return int(sum(lengths)) * n_layers * width * torch.finfo(dtype).bits // 8

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        teacher: torch.nn.Module,
        dataset,
        collator,
        layers: Sequence[int],
        batch_size: int = 64,
        budget_bytes: int = 2 * 1024**3,
        progress: bool = True,
        precision: str = "fp32",
    ) -> "TeacherCache":
        """Run the teacher (in ``precision`` already) once over ``dataset`` (tokenised, in row order)."""
        lengths = [len(ids) for ids in dataset["input_ids"]]
        width = teacher.config.hidden_size
        stored = torch.bfloat16 if precision == "bf16" else torch.float32
        keep_hidden = bool(layers) and cls.estimate_bytes(lengths, len(layers), width, stored) <= budget_bytes
        device = next(teacher.parameters()).device
        was_training = teacher.training
        teacher.eval()
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator)
        logits, hidden = [], [] if keep_hidden else None
        # iter(DataLoader) draws from the global RNG; building a cache must not shift the student's
        # dropout stream, or cached and uncached runs of the same seed would differ.
        with torch.random.fork_rng(devices=[]):
            batches = list(loader)
        for batch in tqdm(batches, desc="teacher cache", disable=not progress, leave=False):
            inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
            out = teacher(**inputs, output_hidden_states=keep_hidden)
            logits.append(out.logits.float().cpu())
            if keep_hidden:
                stacked = torch.stack([out.hidden_states[i].to(stored) for i in layers], dim=1).cpu()  # [B, n, L, d]
                for example, length in zip(stacked, batch["attention_mask"].sum(dim=1).tolist()):
                    hidden.append(example[:, : int(length)].clone())
        teacher.train(was_training)
        return cls(
            logits=torch.cat(logits),
            hidden=hidden,
            layers=tuple(layers) if keep_hidden else (),
            n_hidden_states=teacher.config.num_hidden_layers + 1,
            precision=precision,
        )

    @property
    def has_hidden(self) -> bool:
        return self.hidden is not None

    def lookup(self, rows: torch.Tensor, attention_mask: torch.Tensor, layers: Sequence[int] | None = None) -> ModelOutputs:
        """Teacher outputs for a batch: ``.logits`` and ``.hidden_states`` (a tuple over all teacher
        hidden-state indices; indices not cached or not asked for are ``None``), padded to the
        batch's length. ``layers``: the hidden-state indices wanted (None = every cached one;
        ``()`` = logits only).

        Examples are assumed right-padded, as the collator does for BERT tokenizers.
        """
        device = attention_mask.device
        rows_list = rows.tolist()
        logits = self.logits[rows_list].to(device)
        hidden_states = None
        wanted = list(self.layers) if layers is None else list(layers)
        missing = sorted(set(wanted) - set(self.layers))
        if missing:
            raise KeyError(f"teacher hidden states {missing} are not cached (cached: {list(self.layers)})")
        if self.has_hidden and wanted:
            batch, length = attention_mask.shape
            width = self.hidden[0].shape[-1]
            slots = [self.layers.index(i) for i in wanted]
            padded = torch.zeros(len(wanted), batch, length, width)
            for b, row in enumerate(rows_list):
                example = self.hidden[row]
                padded[:, b, : example.shape[1]] = example[slots]
            padded = padded.to(device)
            states: list[torch.Tensor | None] = [None] * self.n_hidden_states
            for j, index in enumerate(wanted):
                states[index] = padded[j]
            hidden_states = tuple(states)
        return ModelOutputs(logits=logits, hidden_states=hidden_states)
