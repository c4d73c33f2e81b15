"""From a GLUE ``Dataset`` to padded tensor batches.

Tokenisation happens once, without padding (:func:`tokenize_dataset`); each batch is then padded
only to its own longest sequence (:class:`DynamicPaddingCollator`). Optionally, batches are built
from sequences of similar length (:class:`LengthGroupedSampler`) so that little of a batch is
padding. :func:`make_dataloader` puts the three together.

Both samplers here are pure functions of ``(seed, epoch)``: iterating uses the current epoch and
then advances it by one, and ``set_epoch(e)`` sets it explicitly (a resumed run calls it to replay
epoch ``e``'s order exactly).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
import datasets
from datasets import Dataset
from torch.utils.data import DataLoader, Sampler

from .tasks import TaskSpec, get_task

# Per-token columns a BERT-style tokenizer returns: the collator pads exactly these, and they are
# what a model is called with (the one definition of model input keys).
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def tokenize_dataset(ds: Dataset, tokenizer: Any, task: str | TaskSpec, max_length: int = 128) -> Dataset:
    """Tokenise ``task``'s text columns of ``ds`` into ``input_ids``, ``attention_mask``,
    ``token_type_ids`` (when the tokenizer returns them) and ``labels`` (from ``label``, if present).

    No padding here (see :class:`DynamicPaddingCollator`). Sequences longer than ``max_length``
    tokens are truncated; pairs with ``'longest_first'`` (trim the longer of the two, one token at
    a time), as BERT's GLUE fine-tuning does. All other columns are dropped.
    """
    spec = get_task(task)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
    missing = [field for field in spec.text_fields if field not in ds.column_names]
    if missing:
        raise ValueError(
            f"dataset lacks {spec.name}'s text column(s) {missing!r} (has {ds.column_names!r}); "
            f"load it with load_task({spec.name!r}, ...) or pass the task it belongs to"
        )

    def encode(batch: Mapping[str, list]) -> dict[str, list]:
        texts = [batch[field] for field in spec.text_fields]
        encoded = tokenizer(*texts, truncation="longest_first" if spec.is_pair else True, max_length=max_length)
        out = {name: encoded[name] for name in MODEL_INPUTS if name in encoded}
        if "label" in batch:
            out["labels"] = batch["label"]
        return out

    # Tokenising a few thousand rows takes well under a second; per-call progress bars would bury
    # the notebooks' output (one per task, split and model), so they are off while mapping.
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        tokenized = ds.map(encode, batched=True, remove_columns=ds.column_names, desc=f"tokenize {spec.name}")
        if "labels" in tokenized.column_names:
            # map infers plain int64; keep the ClassLabel (names) or float32 the labels came with.
            tokenized = tokenized.cast_column("labels", ds.features["label"])
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    return tokenized


def _pad_values(tokenizer: Any) -> dict[str, int]:
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token "
            "(e.g. to its [PAD] or eos token) before batching"
        )
    return {
        "input_ids": int(tokenizer.pad_token_id),
        "attention_mask": 0,
        "token_type_ids": int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
    }


class DynamicPaddingCollator:
    """Pads a list of tokenised examples to the longest one in the batch.

    Returns ``input_ids``/``attention_mask``/``token_type_ids`` as ``long`` tensors ``[B, T]``,
    padded on the tokenizer's ``padding_side`` with its pad id (mask 0, token type
    ``pad_token_type_id``). ``T`` is the batch maximum, rounded up to ``pad_to_multiple_of`` if given.
    ``labels`` become a ``long`` tensor for class ids and ``float32`` for scores (STS-B); any other
    scalar column (e.g. ``idx``) is stacked as is.
    """

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None) -> None:
        if pad_to_multiple_of is not None and (not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}")
        self.pad_values = _pad_values(tokenizer)
        if tokenizer.padding_side not in ("right", "left"):
            raise ValueError(f"tokenizer.padding_side must be 'right' or 'left', got {tokenizer.padding_side!r}")
        self.padding_side = tokenizer.padding_side
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("cannot collate an empty batch")
        keys = list(features[0].keys())
        if "input_ids" not in keys:
            raise ValueError(f"examples need 'input_ids' (run tokenize_dataset first); got keys {keys!r}")
        lengths = [len(example["input_ids"]) for example in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of

        batch: dict[str, torch.Tensor] = {}
        for key in keys:
            if key in self.pad_values:
                batch[key] = self._pad(features, key, lengths, width)
            elif key == "labels":
                labels = torch.tensor([example[key] for example in features])
                # Losses want class ids as long and regression targets (STS-B) as float32.
                batch[key] = labels.float() if labels.is_floating_point() else labels.long()
            else:
                try:
                    batch[key] = torch.tensor([example[key] for example in features])
                except (TypeError, ValueError) as err:
                    raise ValueError(
                        f"column {key!r} is neither a padded sequence nor a scalar; "
                        "drop it from the dataset before batching"
                    ) from err
        return batch

    def _pad(self, features: Sequence[Mapping[str, Any]], key: str, lengths: list[int], width: int) -> torch.Tensor:
        out = torch.full((len(features), width), self.pad_values[key], dtype=torch.long)
        for row, (example, length) in enumerate(zip(features, lengths)):
            values = torch.as_tensor(example[key], dtype=torch.long)
            if len(values) != length:
                raise ValueError(f"example {row}: {key!r} has {len(values)} entries but input_ids has {length}")
            if self.padding_side == "right":
                out[row, :length] = values
            else:
                out[row, width - length:] = values
        return out


class _EpochSampler(Sampler[int]):
    """Shared epoch bookkeeping: iteration uses ``self.epoch`` and then advances it."""

    def __init__(self, num_samples: int, seed: int) -> None:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.num_samples = num_samples
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration produce epoch ``epoch``'s order."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def _rng(self) -> np.random.Generator:
        # Seeding with the pair (not seed + epoch) keeps (seed=0, epoch=1) and (seed=1, epoch=0) apart.
        return np.random.default_rng([self.seed, self.epoch])

    def order(self) -> np.ndarray:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        indices = self.order()
        self.epoch += 1
        return iter(indices.tolist())

    def __len__(self) -> int:
        return self.num_samples


class SeededShuffleSampler(_EpochSampler):
    """A uniformly random permutation of ``range(num_samples)``, fixed by ``(seed, epoch)``."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        super().__init__(num_samples, seed)

    def order(self) -> np.ndarray:
        """This epoch's permutation (does not advance the epoch)."""
        return self._rng().permutation(self.num_samples)


class LengthGroupedSampler(_EpochSampler):
    """Random order in which consecutive ``batch_size`` chunks hold sequences of similar length.

    Shuffle all indices (fixed by ``(seed, epoch)``), cut the permutation into mega-batches of
    ``batch_size * mega_batch_mult`` indices, sort each mega-batch by length, longest first. The
    globally longest sequence is then moved into the first batch, so an out-of-memory error shows
    at step one rather than hours in. Batches stay random in which examples meet across
    mega-batches, but inside one they come in decreasing length.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_mult: int = 50) -> None:
        lengths = np.asarray(lengths)
        if lengths.ndim != 1 or len(lengths) == 0 or lengths.dtype.kind not in "iu":
            raise ValueError("lengths must be a non-empty 1-D sequence of ints (one per example)")
        for name, value in (("batch_size", batch_size), ("mega_batch_mult", mega_batch_mult)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        super().__init__(len(lengths), seed)
        self.lengths = lengths
        self.batch_size = batch_size
        self.mega_batch_mult = mega_batch_mult

    def _sorted_longest_first(self, indices: np.ndarray) -> np.ndarray:
        return indices[np.argsort(-self.lengths[indices], kind="stable")]

    def order(self) -> np.ndarray:
        """This epoch's index order (does not advance the epoch)."""
        permutation = self._rng().permutation(self.num_samples)
        size = self.batch_size * self.mega_batch_mult
        megabatches = [self._sorted_longest_first(permutation[i:i + size]) for i in range(0, self.num_samples, size)]
        heads = [self.lengths[mb[0]] for mb in megabatches]
        longest = int(np.argmax(heads))
        if longest != 0:
            first, other = megabatches[0], megabatches[longest]
            first[0], other[0] = other[0], first[0]
            megabatches[longest] = self._sorted_longest_first(other)
        return np.concatenate(megabatches)


def make_dataloader(
    tokenized_ds: Dataset,
    tokenizer: Any,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    group_by_length: bool = False,
) -> DataLoader:
    """A ``DataLoader`` over a :func:`tokenize_dataset` output with per-batch dynamic padding.

    ``shuffle=False`` keeps dataset order (evaluation). ``shuffle=True`` draws a new seeded order
    each epoch (:class:`SeededShuffleSampler`), or, with ``group_by_length=True``, a
    :class:`LengthGroupedSampler` order. Call ``loader.sampler.set_epoch(e)`` to replay epoch ``e``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if "input_ids" not in tokenized_ds.column_names:
        raise ValueError(
            f"dataset has no 'input_ids' (columns {tokenized_ds.column_names!r}); run tokenize_dataset first"
        )
    if group_by_length and not shuffle:
        raise ValueError(
            "group_by_length=True reorders examples and needs shuffle=True; "
            "for evaluation use shuffle=False, group_by_length=False"
        )
    sampler: Sampler[int] | None
    if group_by_length:
        lengths = [len(ids) for ids in tokenized_ds["input_ids"]]
        sampler = LengthGroupedSampler(lengths, batch_size, seed)
    elif shuffle:
        sampler = SeededShuffleSampler(len(tokenized_ds), seed)
    else:
        sampler = None
    return DataLoader(
        tokenized_ds,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        collate_fn=DynamicPaddingCollator(tokenizer),
    )
