"""Figures of CKD's relations: what the WR and LTR losses compare, as heat maps.

Two steps, so the numbers can be checked before they are drawn:

1. :func:`relation_view` turns hidden states into a :class:`RelationView`: one relation matrix of
   one sequence with its padding removed, axis labels and a title. The matrices come from
   :mod:`ckdlab.objectives.relations`, i.e. they are the very numbers the CKD losses compare.
2. :func:`plot_relation` / :func:`plot_relations` / :func:`plot_teacher_student` draw views.

The four relations (hidden-state index 0 = embedding output, as in the layer maps):

=================  ================  =========================================================
kind               matrix            entry
=================  ================  =========================================================
``wr_pair``        tokens x tokens   ``cos(h_i, h_j)`` in one layer (or normalised distance)
``wr_triplet``     tokens x tokens   ``psi(a, b, c) = cos(h_b - h_a, h_c - h_a)``, anchor token a
``ltr_pair``       layers x layers   ``cos(h^l, h^m)`` of one token across layers
``ltr_triplet``    layers x layers   ``cos(h^m - h^l, h^k - h^l)`` of one token, anchor layer l
=================  ================  =========================================================

Token indices (``anchor``, ``token``) count the tokens shown, i.e. the non-padding tokens of the
sequence (or its words with ``pieces="merge"``). Undefined entries (a triplet's anchor row and
column, its diagonal) are NaN and drawn light grey. Long sentences (up to 128 tokens and more)
keep every cell but label at most ``max_labels`` ticks per axis.
"""
from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ckdlab.objectives.relations import ltr_pair_relation, ltr_triplet_relation, wr_pair_relation, wr_triplet_relation
from ckdlab.viz.tokens import PIECE_STYLES, layer_label, merge_word_pieces, piece_labels

RELATION_KINDS = ("wr_pair", "wr_triplet", "ltr_pair", "ltr_triplet")
RELATION_NAMES = {
    "wr_pair": "WR pair-wise",
    "wr_triplet": "WR triplet-wise",
    "ltr_pair": "LTR pair-wise",
    "ltr_triplet": "LTR triplet-wise",
}
BOUNDED_CMAP = "RdBu_r"  # cosines and angles live in [-1, 1]: a diverging map centred on 0
DISTANCE_CMAP = "viridis"
DIFFERENCE_CMAP = "PuOr_r"
UNDEFINED_COLOUR = "#c4c4c4"
MAX_LABELS = 40


@dataclass
class RelationView:
    """One relation matrix of one sequence, ready to draw.

    ``matrix`` is ``[n, n]`` (NaN where undefined), ``row_labels``/``col_labels`` its ``n`` tick
    labels, ``bounded`` True for cosines/angles (in [-1, 1]) and False for distances (>= 0).
    """

    kind: str
    matrix: np.ndarray
    row_labels: list[str]
    col_labels: list[str]
    title: str
    bounded: bool
    row_axis: str
    col_axis: str


def _check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(map(repr, allowed))}")
    return value  # type: ignore[return-value]


def _check_hidden_states(hidden_states: Sequence[Tensor]) -> None:
    if isinstance(hidden_states, Tensor) or len(hidden_states) == 0:
        raise ValueError("hidden_states must be a non-empty tuple of [B, L, d] tensors (embedding output + each layer), as from encode()")
    first = hidden_states[0]
    for k, h in enumerate(hidden_states):
        if not isinstance(h, Tensor) or h.dim() != 3 or h.shape[:2] != first.shape[:2]:
            raise ValueError(f"hidden_states[{k}] must be a [B, L, d] tensor like hidden_states[0] {tuple(first.shape)}")


def _layer_index(layer: int, n_states: int, name: str = "layer") -> int:
    """A hidden-state index; negative values count from the top (-1 = last layer)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n_states <= layer < n_states:
        raise ValueError(f"{name}={layer!r} is out of range; this model has hidden states 0..{n_states - 1} (0 = embeddings, -1 = last)")
    return layer % n_states


def _sequence_tokens(tokens: Sequence[str] | Sequence[Sequence[str]], example: int, batch: int, length: int) -> list[str]:
    if len(tokens) and not isinstance(tokens[0], str):
        if len(tokens) != batch:
            raise ValueError(f"tokens has {len(tokens)} sequences but the states have a batch of {batch}")
        tokens = tokens[example]
    elif batch != 1:
        raise ValueError(f"tokens is one list but the batch has {batch} sequences; pass one token list per sequence")
    if len(tokens) != length:
        raise ValueError(f"{len(tokens)} tokens for sequences of length {length}; pass the tokens that encode() returned")
    return list(tokens)  # type: ignore[arg-type]


def _check_position(name: str, value: int, labels: Sequence[str], what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(labels):
        raise ValueError(f"{name}={value!r} is out of range; the sentence shows {len(labels)} {what} (0..{len(labels) - 1})")
    return value


def relation_view(
    kind: str,
    hidden_states: Sequence[Tensor],
    tokens: Sequence[str] | Sequence[Sequence[str]],
    attention_mask: Tensor,
    *,
    layer: int = -1,
    anchor: int = 1,
    token: int = 0,
    layers: Sequence[int] | None = None,
    anchor_layer: int = 0,
    metric: str = "cos",
    example: int = 0,
    pieces: str = "mark",
    centred: bool = False,
) -> RelationView:
    """The ``kind`` relation of sequence ``example``, padding removed (see the module docstring).

    The first three arguments come in the order :func:`~ckdlab.viz.tokens.encode` returns them,
    so ``relation_view("wr_pair", *encode(model, tokenizer, text))`` works.

    Args:
        kind: ``wr_pair`` | ``wr_triplet`` | ``ltr_pair`` | ``ltr_triplet``.
        hidden_states: ``N + 1`` tensors ``[B, L, d]`` (from :func:`ckdlab.viz.tokens.encode`).
        tokens: the ``L`` tokens of a single sequence, or ``B`` lists of ``L`` tokens.
        attention_mask: ``[B, L]``, 1 = token, 0 = padding.
        layer: hidden-state index for WR (``-1`` = last layer).
        anchor: WR triplet anchor, an index among the shown tokens.
        token: the LTR token, an index among the shown tokens.
        layers: hidden-state indices for LTR (default: all, embeddings included).
        anchor_layer: LTR triplet anchor, a *position* in ``layers``.
        metric: pair-wise metric, ``cos`` or ``l2`` (distance over its mean, as in RKD).
        example: which sequence of the batch.
        pieces: ``mark`` (one row per word piece, as the losses see it) or ``merge`` (words,
            each the mean of its pieces' states).
        centred: WR pair only: cosines of the states minus their sentence's mean state (what an
            angle-based loss sees; raw cosines of a fine-tuned BERT share a large common offset).
    """
    _check_choice("kind", kind, RELATION_KINDS)
    _check_choice("pieces", pieces, PIECE_STYLES)
    _check_choice("metric", metric, ("cos", "l2"))
    _check_hidden_states(hidden_states)
    batch, length = hidden_states[0].shape[:2]
    if not isinstance(attention_mask, Tensor):
        raise ValueError(
            f"attention_mask must be a [B, L] tensor, got {type(attention_mask).__name__}; pass (hidden_states, tokens, "
            "attention_mask) in the order encode() returns them"
        )
    if tuple(attention_mask.shape) != (batch, length):
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, the states [B, L] = [{batch}, {length}]")
    if isinstance(example, bool) or not isinstance(example, int) or not 0 <= example < batch:
        raise ValueError(f"example={example!r} is out of range; the batch has sequences 0..{batch - 1}")
    seq_tokens = _sequence_tokens(tokens, example, batch, length)
    states = [h[example : example + 1] for h in hidden_states]
    mask = attention_mask[example : example + 1]
    if pieces == "merge":
        merged, labels, mask = merge_word_pieces(states, seq_tokens, mask)
        states, keep = list(merged), torch.arange(len(labels))
    else:
        keep = torch.nonzero(mask[0] != 0).flatten()
        labels = [piece_labels(seq_tokens)[i] for i in keep.tolist()]
    if len(labels) == 0:
        raise ValueError(f"sequence {example} has no tokens (its attention mask is all 0)")
    n_states = len(states)
    name = RELATION_NAMES[kind]

    if kind in ("wr_pair", "wr_triplet"):
        index = _layer_index(layer, n_states)
        where = f"{layer_label(index)}"
        if kind == "wr_pair":
            full = wr_pair_relation(states[index], mask, metric, centred=centred)[0]
            title = f"{name} ({metric}{', centred' if centred else ''}) · {where}"
            rows, cols = "token i", "token j"
        else:
            if len(labels) < 3:
                raise ValueError(f"a WR triplet needs at least 3 tokens; this sentence shows {len(labels)}")
            _check_position("anchor", anchor, labels, "tokens")
            full = wr_triplet_relation(states[index], mask, int(keep[anchor]))[0]
            title = f"{name} · {where} · anchor '{labels[anchor]}' ({anchor})"
            rows, cols = "token b", "token c"
        matrix = full[keep][:, keep]
        return RelationView(kind, matrix.numpy(), labels, list(labels), title, metric == "cos" or kind == "wr_triplet", rows, cols)

    layer_list = list(range(n_states)) if layers is None else [_layer_index(l, n_states, "layers") for l in layers]
    if len(layer_list) < 2:
        raise ValueError(f"LTR needs at least 2 layers, got layers={layers!r}")
    _check_position("token", token, labels, "tokens")
    chosen = [states[l] for l in layer_list]
    layer_names = [layer_label(l) for l in layer_list]
    if kind == "ltr_pair":
        matrix = ltr_pair_relation(chosen, mask, int(keep[token]), metric)[0]
        title = f"{name} ({metric}) · token '{labels[token]}' ({token})"
        rows, cols, bounded = "layer l", "layer m", metric == "cos"
    else:
        if len(layer_list) < 3:
            raise ValueError(f"an LTR triplet needs at least 3 layers, got {layer_names}")
        if isinstance(anchor_layer, bool) or not isinstance(anchor_layer, int) or not 0 <= anchor_layer < len(layer_list):
            raise ValueError(f"anchor_layer={anchor_layer!r} is a position in layers={layer_names}; use 0..{len(layer_list) - 1}")
        matrix = ltr_triplet_relation(chosen, mask, int(keep[token]), anchor_layer)[0]
        title = f"{name} · token '{labels[token]}' ({token}) · anchor {layer_names[anchor_layer]}"
        rows, cols, bounded = "layer m", "layer k", True
    return RelationView(kind, matrix.numpy(), layer_names, list(layer_names), title, bounded, rows, cols)


def teacher_student_views(
    kind: str,
    teacher_states: Sequence[Tensor],
    student_states: Sequence[Tensor],
    tokens: Sequence[str] | Sequence[Sequence[str]],
    attention_mask: Tensor,
    layer_map: Sequence[tuple[int, int]],
    *,
    layer: int | None = None,
    anchor: int = 1,
    token: int = 0,
    anchor_layer: int = 0,
    metric: str = "cos",
    example: int = 0,
    pieces: str = "mark",
) -> tuple[RelationView, RelationView]:
    """The teacher's and the student's view of the same relation, aligned by ``layer_map``.

    WR: ``layer`` is a *student* hidden-state index that appears in the map (default: the last
    pair), and the teacher's view uses its mapped layer. LTR: both views use the mapped layers,
    in map order (``anchor_layer`` is a position in the map). Both models must have seen the
    same tokens (``tokens``, ``attention_mask``), as the CKD losses require.
    """
    pairs = [(int(t), int(s)) for t, s in layer_map]
    if not pairs:
        raise ValueError("layer_map is empty; use ckdlab.objectives.layer_map.resolve_layer_map('uniform', Lt, Ls)")
    common = dict(anchor=anchor, token=token, anchor_layer=anchor_layer, metric=metric, example=example, pieces=pieces)
    if kind in ("wr_pair", "wr_triplet"):
        student_to_teacher = {s: t for t, s in pairs}
        s = pairs[-1][1] if layer is None else _layer_index(layer, len(student_states))
        if s not in student_to_teacher:
            raise ValueError(f"student layer {layer} is not in the layer map {pairs}; pick one of {sorted(student_to_teacher)}")
        return (
            relation_view(kind, teacher_states, tokens, attention_mask, layer=student_to_teacher[s], **common),
            relation_view(kind, student_states, tokens, attention_mask, layer=s, **common),
        )
    return (
        relation_view(kind, teacher_states, tokens, attention_mask, layers=[t for t, _ in pairs], **common),
        relation_view(kind, student_states, tokens, attention_mask, layers=[s for _, s in pairs], **common),
    )


def relation_gap(reference: RelationView, other: RelationView) -> float:
    """How far ``other`` is from ``reference``: ``mean |other - reference|`` over the entries
    defined (finite) in both. 0 means the same relations; cosines/angles differ by at most 2."""
    if reference.matrix.shape != other.matrix.shape:
        raise ValueError(f"views of shapes {reference.matrix.shape} and {other.matrix.shape} cannot be compared entry by entry")
    both = np.isfinite(reference.matrix) & np.isfinite(other.matrix)
    if not both.any():
        raise ValueError("the two views share no defined entry")
    return float(np.abs(other.matrix - reference.matrix)[both].mean())


# --------------------------------------------------------------------------- drawing


def _cmap(name: str):
    return plt.get_cmap(name).with_extremes(bad=UNDEFINED_COLOUR)


def _label_ticks(ax: Axes, rows: Sequence[str], cols: Sequence[str], max_labels: int) -> None:
    """Every cell stays drawn; beyond ``max_labels`` only every k-th tick is labelled."""
    for labels, set_ticks, set_labels, rotation in (
        (cols, ax.set_xticks, ax.set_xticklabels, 90),
        (rows, ax.set_yticks, ax.set_yticklabels, 0),
    ):
        n = len(labels)
        step = max(1, math.ceil(n / max_labels))
        positions = list(range(0, n, step))
        size = 9 if n <= 16 else 8 if n <= 32 else 7 if n <= 48 else 6
        set_ticks(positions)
        set_labels([_short(labels[p]) for p in positions], rotation=rotation, fontsize=size)


# Fixed margins in inches. A layout engine (constrained/tight) would do the same job but more
# than doubles the drawing time, which the explorer pays on every slider move.
LABEL_IN = 0.95  # tick labels + axis label, left of and below each panel
TITLE_IN = 0.6
BAR_IN = 0.14
BAR_GAP_IN = 0.12
BAR_TEXT_IN = 0.75


class _Grid:
    """Positions (in figure fractions) of square panels and their colour bars.

    Each row: [labels|panel] x n_value, colour bar, then, with a difference, [labels|panel] and
    its colour bar.
    """

    def __init__(self, side: float, n_rows: int, n_value: int, difference: bool) -> None:
        self.side, self.n_rows, self.n_value, self.difference = side, n_rows, n_value, difference
        bar = BAR_GAP_IN + BAR_IN + BAR_TEXT_IN
        self.width = (n_value + difference) * (LABEL_IN + side) + (1 + difference) * bar + 0.1
        self.row_height = TITLE_IN + side + LABEL_IN
        self.size = (self.width, self.row_height * n_rows)

    def _x(self, column: int) -> float:
        """Left edge (inches) of panel ``column``; the difference panel comes after the first colour bar."""
        x = column * (LABEL_IN + self.side) + LABEL_IN
        if column >= self.n_value:
            x += BAR_GAP_IN + BAR_IN + BAR_TEXT_IN
        return x

    def _box(self, fig: Figure, x: float, y: float, w: float, h: float) -> Axes:
        width, height = self.size
        return fig.add_axes((x / width, y / height, w / width, h / height))

    def panel(self, fig: Figure, row: int, column: int) -> Axes:
        y = (self.n_rows - 1 - row) * self.row_height + LABEL_IN
        return self._box(fig, self._x(column), y, self.side, self.side)

    def colour_bar(self, fig: Figure, which: int) -> Axes:
        column = self.n_value - 1 if which == 0 else self.n_value
        x = self._x(column) + self.side + BAR_GAP_IN
        height = self.n_rows * self.row_height - TITLE_IN - LABEL_IN
        return self._box(fig, x, LABEL_IN + 0.1 * height, BAR_IN, 0.8 * height)


def _short(label: str, limit: int = 11) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def _panel_inches(n: int) -> float:
    return float(np.clip(2.8 + 0.045 * n, 3.2, 7.0))


def _scale(views: Sequence[RelationView]) -> tuple[float, float, str]:
    if all(v.bounded for v in views):
        return -1.0, 1.0, BOUNDED_CMAP
    if any(v.bounded for v in views):
        raise ValueError("cannot share one colour scale between cosines/angles and distances; plot them separately")
    top = max((float(np.nanmax(v.matrix)) for v in views if np.isfinite(v.matrix).any()), default=1.0)
    return 0.0, max(top, 1e-6), DISTANCE_CMAP


def draw_relation(
    ax: Axes, view: RelationView, vmin: float, vmax: float, cmap: str, max_labels: int = MAX_LABELS, title: str | None = None
):
    """Draw ``view`` on ``ax`` (one ``imshow``, one cell per entry); returns the image artist."""
    image = ax.imshow(view.matrix, cmap=_cmap(cmap), vmin=vmin, vmax=vmax, interpolation="nearest", aspect="equal")
    _label_ticks(ax, view.row_labels, view.col_labels, max_labels)
    ax.set_xlabel(view.col_axis, fontsize=8)
    ax.set_ylabel(view.row_axis, fontsize=8)
    ax.set_title(title if title is not None else view.title, fontsize=9)
    return image


def _save(fig: Figure, save_to: str | Path | None) -> None:
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save_to, dpi=120, bbox_inches="tight")


def plot_relation(view: RelationView, max_labels: int = MAX_LABELS, save_to: str | Path | None = None) -> Figure:
    """One heat map with a colour bar; cosines/angles on a fixed [-1, 1] scale."""
    return plot_relations([view], max_labels=max_labels, save_to=save_to)


def plot_relations(
    views: Sequence[RelationView] | Sequence[Sequence[RelationView]],
    titles: Sequence[str] | Sequence[Sequence[str]] | None = None,
    difference: bool = False,
    max_labels: int = MAX_LABELS,
    save_to: str | Path | None = None,
) -> Figure:
    """Several views side by side (a list) or in a grid (a list of rows), all on one shared colour
    scale: views of one kind, or cosines and angles together (both live in [-1, 1]).

    With ``difference=True`` each row must hold two views (a, b) and gets a third panel
    ``b - a`` on a symmetric diverging scale shared by all rows (``vmax = max |b - a|``).
    """
    rows = [list(views)] if views and isinstance(views[0], RelationView) else [list(r) for r in views]  # type: ignore[index]
    flat = [v for row in rows for v in row]
    if not flat:
        raise ValueError("no relation views to plot")
    kinds = {v.kind for v in flat}
    if len(kinds) != 1 and not all(v.bounded for v in flat):
        raise ValueError(f"views of different relation kinds {sorted(kinds)} share a colour scale only when all are cosines or angles")
    if titles is not None:
        title_rows = [list(titles)] if isinstance(titles[0], str) else [list(t) for t in titles]  # type: ignore[index]
        if [len(t) for t in title_rows] != [len(r) for r in rows]:
            raise ValueError("titles must match the views one for one")
    else:
        title_rows = [[v.title for v in row] for row in rows]
    vmin, vmax, cmap = _scale(flat)
    diffs: list[np.ndarray] = []
    if difference:
        for row in rows:
            if len(row) != 2:
                raise ValueError("difference=True needs exactly two views per row (reference, other)")
            a, b = row
            if a.matrix.shape != b.matrix.shape:
                raise ValueError(
                    f"cannot subtract views of shapes {a.matrix.shape} and {b.matrix.shape}: the two models must see the same "
                    "tokens (same tokenizer) and, for LTR, the same number of mapped layers"
                )
            diffs.append(b.matrix - a.matrix)
        finite = [np.nanmax(np.abs(d)) for d in diffs if np.isfinite(d).any()]
        dmax = max(max(finite, default=0.0), 1e-6)
    n_value = max(len(r) for r in rows)
    side = _panel_inches(max(v.matrix.shape[0] for v in flat))
    grid = _Grid(side, len(rows), n_value, difference)
    fig = plt.figure(figsize=grid.size)
    wrap = max(18, int((side + LABEL_IN) * 11))
    for r, row in enumerate(rows):
        for c, view in enumerate(row):
            shared = draw_relation(grid.panel(fig, r, c), view, vmin, vmax, cmap, max_labels, textwrap.fill(title_rows[r][c], wrap))
        if difference:
            a, b = row
            diff_labels = [x if x == y else f"{x}→{y}" for x, y in zip(a.row_labels, b.row_labels)]
            diff_view = RelationView(a.kind, diffs[r], diff_labels, list(diff_labels), "", True, b.row_axis, b.col_axis)
            diff_title = textwrap.fill(f"{title_rows[r][1]} − {title_rows[r][0]}", wrap)
            image = draw_relation(grid.panel(fig, r, n_value), diff_view, -dmax, dmax, DIFFERENCE_CMAP, max_labels, diff_title)
    if len(kinds) > 1:
        value_name = "cosine · cos(angle)"
    else:
        value_name = "cos(angle)" if flat[0].kind.endswith("triplet") else "cosine" if vmin < 0 else "distance / mean"
    fig.colorbar(shared, cax=grid.colour_bar(fig, 0), label=value_name)
    if difference:
        fig.colorbar(image, cax=grid.colour_bar(fig, 1), label="difference")
    _save(fig, save_to)
    return fig


def plot_teacher_student(
    teacher: RelationView,
    student: RelationView,
    names: tuple[str, str] = ("teacher", "student"),
    max_labels: int = MAX_LABELS,
    save_to: str | Path | None = None,
) -> Figure:
    """Teacher | student | student − teacher, the first two on one shared colour scale."""
    titles = [f"{names[0]} · {teacher.title}", f"{names[1]} · {student.title}"]
    fig = plot_relations([teacher, student], titles=titles, difference=True, max_labels=max_labels)
    fig.axes[2].set_title(f"{names[1]} − {names[0]}", fontsize=9)
    _save(fig, save_to)
    return fig


# --------------------------------------------------------------------------- one call per relation


def plot_wr_pair(
    hidden_states: Sequence[Tensor], tokens, attention_mask: Tensor, layer: int = -1, metric: str = "cos", example: int = 0,
    pieces: str = "mark", max_labels: int = MAX_LABELS, save_to: str | Path | None = None,
) -> Figure:
    """WR pair-wise heat map (tokens x tokens) of one layer: ``cos(h_i, h_j)``."""
    view = relation_view("wr_pair", hidden_states, tokens, attention_mask, layer=layer, metric=metric, example=example, pieces=pieces)
    return plot_relation(view, max_labels=max_labels, save_to=save_to)


def plot_wr_triplet(
    hidden_states: Sequence[Tensor], tokens, attention_mask: Tensor, anchor: int, layer: int = -1, example: int = 0,
    pieces: str = "mark", max_labels: int = MAX_LABELS, save_to: str | Path | None = None,
) -> Figure:
    """WR triplet view at one anchor token a (b x c): ``psi(a, b, c) = cos(h_b - h_a, h_c - h_a)``."""
    view = relation_view("wr_triplet", hidden_states, tokens, attention_mask, layer=layer, anchor=anchor, example=example, pieces=pieces)
    return plot_relation(view, max_labels=max_labels, save_to=save_to)


def plot_ltr_pair(
    hidden_states: Sequence[Tensor], tokens, attention_mask: Tensor, token: int, layers: Sequence[int] | None = None,
    metric: str = "cos", example: int = 0, pieces: str = "mark", save_to: str | Path | None = None,
) -> Figure:
    """LTR pair-wise heat map (layers x layers) of one token: ``cos(h^l, h^m)``."""
    view = relation_view("ltr_pair", hidden_states, tokens, attention_mask, token=token, layers=layers, metric=metric, example=example, pieces=pieces)
    return plot_relation(view, save_to=save_to)


def plot_ltr_triplet(
    hidden_states: Sequence[Tensor], tokens, attention_mask: Tensor, token: int, anchor_layer: int = 0,
    layers: Sequence[int] | None = None, example: int = 0, pieces: str = "mark", save_to: str | Path | None = None,
) -> Figure:
    """LTR triplet view of one token at anchor layer l (m x k): ``cos(h^m - h^l, h^k - h^l)``."""
    view = relation_view(
        "ltr_triplet", hidden_states, tokens, attention_mask, token=token, layers=layers, anchor_layer=anchor_layer, example=example, pieces=pieces
    )
    return plot_relation(view, save_to=save_to)
