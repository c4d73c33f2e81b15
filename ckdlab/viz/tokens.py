"""Hidden states and readable token labels for relation figures.

``encode(model, tokenizer, text)`` runs a model once on one sentence (or sentence pair) and
returns what every relation figure needs: the hidden states (index 0 = embedding output, as in
``outputs.hidden_states`` and in the layer maps of :mod:`ckdlab.objectives.layer_map`), the
token strings and the attention mask.

Word pieces are either *marked* (a continuation piece is shown as ``·ing``; this is exactly what
the CKD losses compare, one row per piece) or *merged* into words by averaging their states
(easier to read, but a mean-pooled word is not what any loss sees).
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PIECE_STYLES = ("mark", "merge")
CONTINUATION_MARK = "·"
_SPECIAL_RE = re.compile(r"^(\[[A-Za-z_]+\]|<[^<>\s]+>)$")
_SENTENCEPIECE_WORD_START = "▁"

TextOrPair = str | tuple[str, str]


def _check_text(text_or_pair: object) -> tuple[str, ...]:
    if isinstance(text_or_pair, str):
        return (text_or_pair,)
    if isinstance(text_or_pair, (tuple, list)) and len(text_or_pair) == 2 and all(isinstance(t, str) for t in text_or_pair):
        return tuple(text_or_pair)
    raise ValueError(
        f"text_or_pair must be a sentence (str) or a sentence pair (tuple of two str), got {type(text_or_pair).__name__}"
    )


@torch.no_grad()
def _hidden_states(model: PreTrainedModel, encoded: dict[str, Tensor]) -> tuple[Tensor, ...]:
    device = next(model.parameters()).device
    inputs = {k: encoded[k].to(device) for k in MODEL_INPUTS if k in encoded}
    was_training = model.training
    # eval() switches dropout off so the figure is deterministic; the caller's mode is restored
    # because a live panel draws from a student that is still training.
    model.eval()
    try:
        outputs = model(**inputs, output_hidden_states=True)
    finally:
        model.train(was_training)
    if outputs.hidden_states is None:
        raise ValueError(f"{type(model).__name__} returned no hidden_states; pass a transformers encoder (BERT-style)")
    return tuple(h.detach().float().cpu() for h in outputs.hidden_states)


def encode(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text_or_pair: TextOrPair, max_length: int = 128
) -> tuple[tuple[Tensor, ...], list[str], Tensor]:
    """Run ``model`` on one sentence (or pair) and return ``(hidden_states, tokens, attention_mask)``.

    ``hidden_states`` is a tuple of ``N + 1`` float32 CPU tensors ``[1, L, d]`` (embedding output,
    then each layer), ``tokens`` the ``L`` token strings (special tokens included: the losses see
    them too), ``attention_mask`` a ``[1, L]`` long tensor of ones. Longer inputs are truncated to
    ``max_length`` tokens.
    """
    texts = _check_text(text_or_pair)
    if not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
    encoded = tokenizer(*texts, return_tensors="pt", truncation=True, max_length=max_length)
    hidden = _hidden_states(model, encoded)
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    return hidden, tokens, encoded["attention_mask"].cpu()


def encode_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: Sequence[TextOrPair], max_length: int = 128
) -> tuple[tuple[Tensor, ...], list[list[str]], Tensor]:
    """Like :func:`encode` for several sentences, padded to the longest: states ``[B, L, d]``,
    ``B`` token lists of length ``L`` (padding included), and the ``[B, L]`` attention mask."""
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError("texts must be a non-empty list of sentences (or sentence pairs); use encode() for one")
    checked = [_check_text(t) for t in texts]
    if len({len(t) for t in checked}) != 1:
        raise ValueError("texts mixes single sentences and sentence pairs; pass one kind per batch")
    columns = list(zip(*checked))
    encoded = tokenizer(*[list(c) for c in columns], return_tensors="pt", truncation=True, padding=True, max_length=max_length)
    hidden = _hidden_states(model, encoded)
    tokens = [tokenizer.convert_ids_to_tokens(ids.tolist()) for ids in encoded["input_ids"]]
    return hidden, tokens, encoded["attention_mask"].cpu()


def is_special(token: str) -> bool:
    """``[CLS]``, ``[SEP]``, ``<s>``, ``</s>``... (bracketed tokens of BERT and SentencePiece vocabularies)."""
    return bool(_SPECIAL_RE.match(token))


def _sentencepiece(tokens: Sequence[str]) -> bool:
    return any(t.startswith(_SENTENCEPIECE_WORD_START) for t in tokens)


def _continues_word(tokens: Sequence[str], i: int, sentencepiece: bool) -> bool:
    """Whether token ``i`` continues the word of token ``i - 1``."""
    token = tokens[i]
    if i == 0 or is_special(token) or is_special(tokens[i - 1]):
        return False
    if sentencepiece:
        return not token.startswith(_SENTENCEPIECE_WORD_START)
    return token.startswith("##")


def _bare(token: str) -> str:
    if token.startswith("##"):
        return token[2:]
    return token.lstrip(_SENTENCEPIECE_WORD_START) or token


def piece_labels(tokens: Sequence[str]) -> list[str]:
    """Readable labels, one per token: ``["[CLS]", "un", "·believ", "·able", "[SEP]"]``.

    WordPiece continuations (``##able``) and SentencePiece continuations (no leading ``▁``) get a
    leading ``·``; the ``▁`` word-start marker is dropped.
    """
    sp = _sentencepiece(tokens)
    return [CONTINUATION_MARK + _bare(t) if _continues_word(tokens, i, sp) else _bare(t) for i, t in enumerate(tokens)]


def word_groups(tokens: Sequence[str]) -> list[list[int]]:
    """Indices of the tokens that form each word, in order; special tokens stay alone."""
    sp = _sentencepiece(tokens)
    groups: list[list[int]] = []
    for i in range(len(tokens)):
        if groups and _continues_word(tokens, i, sp):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def merge_word_pieces(
    hidden_states: Sequence[Tensor], tokens: Sequence[str], attention_mask: Tensor
) -> tuple[tuple[Tensor, ...], list[str], Tensor]:
    """Average the states of each word's pieces: ``h_word = (1/|w|) sum_{i in w} h_i`` in every layer.

    Takes one sequence as :func:`encode` returns it (``[1, L, d]`` states, ``L`` tokens, ``[1, L]``
    mask), drops padding, and returns ``(hidden_states [1, W, d], words, attention_mask [1, W])``
    for the ``W`` words.
    """
    if not isinstance(attention_mask, Tensor):
        raise ValueError(f"attention_mask must be a [1, L] tensor, got {type(attention_mask).__name__}; pass (hidden_states, tokens, attention_mask)")
    if attention_mask.dim() != 2 or attention_mask.shape[0] != 1:
        raise ValueError(f"merge_word_pieces takes one sequence: attention_mask [1, L], got {tuple(attention_mask.shape)}")
    length = attention_mask.shape[1]
    if len(tokens) != length:
        raise ValueError(f"merge_word_pieces: {len(tokens)} tokens for a mask of length {length}; pass the tokens of this sequence")
    keep = [i for i in range(length) if bool(attention_mask[0, i])]
    valid_tokens = [tokens[i] for i in keep]
    groups = [[keep[j] for j in group] for group in word_groups(valid_tokens)]
    words = ["".join(_bare(tokens[i]) for i in group) for group in groups]
    merged = tuple(torch.stack([h[0, group].mean(dim=0) for group in groups]).unsqueeze(0) for h in hidden_states)
    return merged, words, torch.ones(1, len(groups), dtype=torch.long)


def layer_label(index: int) -> str:
    """Hidden-state index -> axis label: 0 is the embedding output, k the output of layer k."""
    return "emb" if index == 0 else f"L{index}"
