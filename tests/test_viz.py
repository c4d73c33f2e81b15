"""Relation figures on tiny-random: numbers against loop references, padding, labels, long inputs."""
from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from ckdlab.models import build_student, load_backbone
from ckdlab.viz import (
    encode,
    encode_batch,
    plot_layer_map,
    plot_loss_terms,
    plot_ltr_pair,
    plot_ltr_triplet,
    plot_teacher_student,
    plot_wr_pair,
    plot_wr_triplet,
    relation_view,
    teacher_student_views,
)
from ckdlab.viz.tokens import merge_word_pieces, piece_labels, word_groups

SENTENCE = "An unbelievably good movie, truly!"
# tiny-random's WordPiece splits "unbelievably" into un ##bel ##ie ##va ##bly
TOKENS = ["[CLS]", "an", "un", "##bel", "##ie", "##va", "##bly", "good", "movie", ",", "truly", "!", "[SEP]"]


@pytest.fixture(scope="module")
def tiny():
    return load_backbone("tiny-random", num_labels=2)


@pytest.fixture(scope="module")
def encoded(tiny):
    return encode(*tiny, SENTENCE)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------- slow, obvious references
def ref_cos(x: np.ndarray, y: np.ndarray) -> float:
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def ref_wr_pair(h: np.ndarray) -> np.ndarray:
    n = len(h)
    return np.array([[ref_cos(h[i], h[j]) for j in range(n)] for i in range(n)])


def ref_angles(h: np.ndarray, a: int) -> np.ndarray:
    """psi(a, b, c) = cos(h_b - h_a, h_c - h_a); NaN when b or c is the anchor or b == c."""
    n = len(h)
    out = np.full((n, n), np.nan)
    for b in range(n):
        for c in range(n):
            if a not in (b, c) and b != c:
                out[b, c] = ref_cos(h[b] - h[a], h[c] - h[a])
    return out


def image_of(fig, panel: int = 0) -> np.ndarray:
    return np.ma.filled(fig.axes[panel].images[0].get_array().astype(float), np.nan)


def shown_ticks(ax, axis: str = "x") -> list[str]:
    labels = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in labels if t.get_text()]


# ----------------------------------------------------------------- encode and labels
def test_encode_returns_every_hidden_state_tokens_and_mask(tiny, encoded):
    model, tokenizer = tiny
    hidden, tokens, mask = encoded
    assert tokens == TOKENS
    assert len(hidden) == model.config.num_hidden_layers + 1
    assert all(h.shape == (1, len(TOKENS), 64) and h.dtype == torch.float32 for h in hidden)
    assert mask.tolist() == [[1] * len(TOKENS)]
    model.train()
    _, pair_tokens, _ = encode(model, tokenizer, ("a film", "a movie"))
    assert model.training, "encode must restore the caller's training mode"
    assert pair_tokens == ["[CLS]", "a", "film", "[SEP]", "a", "movie", "[SEP]"]
    long_hidden, long_tokens, _ = encode(model, tokenizer, "word " * 300, max_length=128)
    assert len(long_tokens) == 128 and long_hidden[0].shape[1] == 128
    with pytest.raises(ValueError, match="text_or_pair"):
        encode(model, tokenizer, 42)


def test_word_pieces_are_marked_or_merged(encoded):
    hidden, tokens, mask = encoded
    assert piece_labels(tokens)[:7] == ["[CLS]", "an", "un", "·bel", "·ie", "·va", "·bly"]
    assert word_groups(tokens)[2] == [2, 3, 4, 5, 6]
    merged, words, merged_mask = merge_word_pieces(hidden, tokens, mask)
    assert words == ["[CLS]", "an", "unbelievably", "good", "movie", ",", "truly", "!", "[SEP]"]
    assert merged_mask.shape == (1, 9) and merged[0].shape == (1, 9, 64)
    for layer in range(len(hidden)):
        torch.testing.assert_close(merged[layer][0, 2], hidden[layer][0, 2:7].mean(dim=0))
        torch.testing.assert_close(merged[layer][0, 3], hidden[layer][0, 7])
    sentencepiece = ["<s>", "▁un", "believ", "able", "▁film", "</s>"]
    assert piece_labels(sentencepiece) == ["<s>", "un", "·believ", "·able", "film", "</s>"]
    assert word_groups(sentencepiece) == [[0], [1, 2, 3], [4], [5]]


# ----------------------------------------------------------------- the four relations
def test_relation_views_match_loop_references(encoded):
    hidden, tokens, mask = encoded
    h = [x[0].double().numpy() for x in hidden]
    view = relation_view("wr_pair", hidden, tokens, mask, layer=1)
    np.testing.assert_allclose(view.matrix, ref_wr_pair(h[1]), atol=1e-5)
    assert view.row_labels == piece_labels(tokens) and view.bounded

    view = relation_view("wr_triplet", hidden, tokens, mask, layer=-1, anchor=7)
    np.testing.assert_allclose(view.matrix, ref_angles(h[2], 7), atol=1e-4)
    assert "anchor 'good' (7)" in view.title

    token = 8
    states = np.stack([h[layer][token] for layer in range(3)])
    view = relation_view("ltr_pair", hidden, tokens, mask, token=token)
    np.testing.assert_allclose(view.matrix, ref_wr_pair(states), atol=1e-5)
    assert view.row_labels == ["emb", "L1", "L2"]

    view = relation_view("ltr_triplet", hidden, tokens, mask, token=token, anchor_layer=1)
    np.testing.assert_allclose(view.matrix, ref_angles(states, 1), atol=1e-4)

    view = relation_view("wr_pair", hidden, tokens, mask, layer=2, metric="l2")
    dist = np.linalg.norm(h[2][:, None] - h[2][None], axis=-1)
    off = ~np.eye(len(tokens), dtype=bool)
    np.testing.assert_allclose(view.matrix, dist / dist[off].mean(), atol=1e-4)
    assert not view.bounded


def test_merged_view_is_the_relation_of_mean_pooled_words(encoded):
    hidden, tokens, mask = encoded
    view = relation_view("wr_pair", hidden, tokens, mask, layer=2, pieces="merge")
    words = hidden[2][0].double().numpy()
    pooled = np.stack([words[g].mean(axis=0) for g in word_groups(tokens)])
    np.testing.assert_allclose(view.matrix, ref_wr_pair(pooled), atol=1e-5)
    assert view.row_labels[2] == "unbelievably"


def test_padding_never_reaches_the_figure(tiny):
    hidden, tokens, mask = encode_batch(*tiny, ["a short one", SENTENCE])
    assert tokens[0].count("[PAD]") == 8
    short = tokens[0][: int(mask[0].sum())]
    fig = plot_wr_pair(hidden, tokens, mask, layer=1, example=0)
    assert image_of(fig).shape == (5, 5)
    assert shown_ticks(fig.axes[0]) == short and "[PAD]" not in shown_ticks(fig.axes[0], "y")
    alone = encode(*tiny, "a short one")
    np.testing.assert_allclose(image_of(fig), ref_wr_pair(alone[0][1][0].double().numpy()), atol=1e-5)
    fig = plot_wr_triplet(hidden, tokens, mask, anchor=2, layer=1, example=0)
    assert image_of(fig).shape == (5, 5)
    assert np.isnan(image_of(fig)[2]).all() and np.isnan(np.diag(image_of(fig))).all()
    assert image_of(plot_wr_pair(hidden, tokens, mask, example=1)).shape == (13, 13)
    fig = plot_ltr_pair(hidden, tokens, mask, token=1, example=0)
    assert image_of(fig).shape == (3, 3) and shown_ticks(fig.axes[0]) == ["emb", "L1", "L2"]
    with pytest.raises(ValueError, match="token=5 is out of range"):
        plot_ltr_triplet(hidden, tokens, mask, token=5, example=0)  # index 5 is padding in sequence 0


def test_128_tokens_keep_every_cell_but_few_labels(tiny):
    hidden, tokens, mask = encode(*tiny, "the quick brown fox jumps over the lazy dog " * 20, max_length=128)
    fig = plot_wr_pair(hidden, tokens, mask, max_labels=32)
    assert image_of(fig).shape == (128, 128)
    assert 16 <= len(shown_ticks(fig.axes[0])) <= 32 and len(shown_ticks(fig.axes[0], "y")) <= 32
    width, height = fig.get_size_inches()
    assert width <= 10 and height <= 10
    assert image_of(plot_wr_triplet(hidden, tokens, mask, anchor=64)).shape == (128, 128)


def test_bad_options_name_the_option(encoded):
    hidden, tokens, mask = encoded
    assert relation_view("wr_pair", *encoded).matrix.shape == (13, 13)  # encode's order is the views' order
    with pytest.raises(ValueError, match="in the order encode"):
        relation_view("wr_pair", hidden, mask, tokens)
    with pytest.raises(ValueError, match="kind='wr_quad'"):
        relation_view("wr_quad", hidden, tokens, mask)
    with pytest.raises(ValueError, match="anchor=13 is out of range"):
        relation_view("wr_triplet", hidden, tokens, mask, anchor=13)
    with pytest.raises(ValueError, match="layer=3 is out of range"):
        relation_view("wr_pair", hidden, tokens, mask, layer=3)
    with pytest.raises(ValueError, match="anchor_layer=3"):
        relation_view("ltr_triplet", hidden, tokens, mask, anchor_layer=3)
    with pytest.raises(ValueError, match="pieces='join'"):
        relation_view("wr_pair", hidden, tokens, mask, pieces="join")
    with pytest.raises(ValueError, match="at least 3 tokens"):
        relation_view("wr_triplet", tuple(h[:, :2] for h in hidden), tokens[:2], mask[:, :2], anchor=0)


# ----------------------------------------------------------------- teacher | student | difference
def test_teacher_student_share_a_scale_and_follow_the_layer_map(tiny, tmp_path):
    teacher, tokenizer = tiny
    student = build_student(teacher, "config:L1-H32-A2-I64", num_labels=2)
    t_hidden, tokens, mask = encode(teacher, tokenizer, SENTENCE)
    s_hidden, _, _ = encode(student, tokenizer, SENTENCE)
    pairs = [(0, 0), (2, 1)]
    t_view, s_view = teacher_student_views("wr_pair", t_hidden, s_hidden, tokens, mask, pairs)
    np.testing.assert_allclose(t_view.matrix, relation_view("wr_pair", t_hidden, tokens, mask, layer=2).matrix)
    np.testing.assert_allclose(s_view.matrix, relation_view("wr_pair", s_hidden, tokens, mask, layer=1).matrix)
    path = tmp_path / "figures" / "ts.png"
    fig = plot_teacher_student(t_view, s_view, save_to=path)
    assert path.exists() and path.stat().st_size > 1000
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3 and len(fig.axes) == 3 + 2  # three heat maps and two colour bars
    assert panels[0].images[0].get_clim() == panels[1].images[0].get_clim() == (-1.0, 1.0)
    np.testing.assert_allclose(image_of(fig, 2), s_view.matrix - t_view.matrix, atol=1e-6)
    low, high = panels[2].images[0].get_clim()
    assert low == -high and high == pytest.approx(np.abs(s_view.matrix - t_view.matrix).max())

    t_view, s_view = teacher_student_views("ltr_pair", t_hidden, s_hidden, tokens, mask, pairs, token=3)
    assert t_view.row_labels == ["emb", "L2"] and s_view.row_labels == ["emb", "L1"]
    with pytest.raises(ValueError, match="student layer 0 is not in the layer map"):
        teacher_student_views("wr_pair", t_hidden, s_hidden, tokens, mask, [(2, 1)], layer=0)


# ----------------------------------------------------------------- run figures
def test_layer_map_diagram_draws_one_line_per_pair(tmp_path):
    fig = plot_layer_map("uniform", 12, 4, save_to=tmp_path / "map.png")
    ax = fig.axes[0]
    assert len(ax.lines) == 5  # (0,0), (3,1), (6,2), (9,3), (12,4)
    assert len(ax.patches) == 13 + 5
    assert [tuple(line.get_xdata()) for line in ax.lines][1] == (3.0, 3.0)  # L3 above L1: both rows span 12 units
    assert (tmp_path / "map.png").exists()
    with pytest.raises(ValueError, match="out of range"):
        plot_layer_map([(0, 0), (13, 4)], 12, 4)


def test_loss_terms_from_a_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [(step, step / 4, name, value) for step in range(1, 9) for name, value in
            (("wr_pair", 1.0 / step), ("kd", 2.0 / step), ("loss", 3.0 / step), ("lr", 1e-4))]
    pd.DataFrame(rows, columns=["step", "epoch", "name", "value"]).to_csv(run / "train_log.csv", index=False)
    (run / "events.jsonl").write_text(json.dumps({"step": 4, "event": "set_weight", "name": "wr_pair", "old": 1.0, "new": 2.0}) + "\n")
    fig = plot_loss_terms(run)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["wr_pair", "kd", "loss"]
    xs, ys = panels[0].lines[0].get_data()
    assert list(xs) == list(range(1, 9)) and ys[3] == pytest.approx(0.25)
    marks = [line.get_xdata()[0] for line in panels[0].lines[1:]]
    assert marks == [4.5]  # the change applies from step 5
    with pytest.raises(ValueError, match="not in the log"):
        plot_loss_terms(run, names=["tinybert_attn"])
    assert len(plot_loss_terms(pd.read_csv(run / "train_log.csv"), names=["kd"]).axes) == 1
