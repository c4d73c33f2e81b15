"""Relation explorer: type a sentence, pick a model and a relation, see CKD's relation maps.

The panel (ipywidgets 8) shows one of the four relations of :mod:`ckdlab.viz.relations` for the
chosen model, or, with a reference model, *reference | model | model − reference* aligned by a
layer map. The figure is a static PNG in an ``ipywidgets.Image`` that is replaced in place, so
it works in JupyterLab, classic notebooks and headless runs alike (no ipympl needed).

Everything the controls do can be done from code, which is how the tests drive it::

    explorer = RelationExplorer({"teacher": teacher_dir, "student": (model, tokenizer)})
    explorer.text.value = "a gripping, funny film"     # redraws
    explorer.relation.value = "wr_triplet"; explorer.token.value = 3
    explorer.state()["matrix_shape"]

Controls: ``text``, ``examples`` (a dev-set pick that fills ``text``), ``model``, ``reference``,
``relation``, ``metric``, ``pieces``, ``layer`` (a layer for WR, the anchor layer for the LTR
triplet) and ``token`` (the WR triplet's anchor token, the LTR token).

Hidden states are cached per (model, sentence), so a slider move only recomputes one relation
and redraws (about 0.1-0.6 s at 64 tokens on a 2-core CPU, see ``benchmarks/bench_widgets.py``).
Callbacks may arrive on a kernel subshell thread (JupyterLab 4 + ipykernel 7); all drawing, here
and in the live panel, happens under one lock because matplotlib is not thread-safe.
"""
from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ckdlab.objectives.layer_map import LayerMapSpec, resolve_layer_map
from ckdlab.viz.relations import RELATION_NAMES, plot_relation, plot_teacher_student, relation_view, teacher_student_views
from ckdlab.viz.tokens import PIECE_STYLES, encode, layer_label, merge_word_pieces, piece_labels

ModelSource = Union[str, Path, tuple[PreTrainedModel, PreTrainedTokenizerBase]]
NO_REFERENCE = "(none)"
CUSTOM_TEXT = "(type your own)"
DEFAULT_SENTENCE = "The movie was not as good as the book, but the actors were brilliant."
CACHE_SIZE = 16
# Widget callbacks may run on kernel subshell threads (JupyterLab 4 + ipykernel 7); matplotlib is
# not thread-safe, so every panel draws under this one lock.
DRAW_LOCK = threading.RLock()


def to_png(fig: Figure, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes and close it (an open figure per redraw would leak memory)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def n_layers(model: PreTrainedModel) -> int:
    return int(model.config.num_hidden_layers)


class RelationExplorer:
    """Interactive CKD relation maps for a sentence (see the module docstring).

    Args:
        models: name -> a model folder / embedded name (loaded on first use with
            :func:`ckdlab.models.load_backbone`) or an already loaded ``(model, tokenizer)``.
        sentence: the first sentence shown.
        examples: sentences offered in a drop-down (e.g. a task's dev set).
        model: the initially selected model (default: the first).
        reference: a model to compare against (default: none).
        layer_map: how reference layers align with the model's for comparisons
            (see :func:`ckdlab.objectives.layer_map.resolve_layer_map`; reference = teacher side).
        max_length: longer sentences are truncated to this many tokens.
        dpi: resolution of the PNG; lower is faster.
    """

    def __init__(
        self,
        models: Mapping[str, ModelSource],
        sentence: str = DEFAULT_SENTENCE,
        examples: Sequence[str] = (),
        model: str | None = None,
        reference: str | None = None,
        layer_map: LayerMapSpec = "uniform",
        max_length: int = 128,
        max_labels: int = 40,
        dpi: int = 90,
    ) -> None:
        if not models:
            raise ValueError("models is empty; pass e.g. {'teacher': 'runs/quick/teachers/sst2/best'}")
        for name in models:
            if name == NO_REFERENCE:
                raise ValueError(f"'{NO_REFERENCE}' is reserved; rename that model")
        self._sources: dict[str, ModelSource] = dict(models)
        self._loaded: dict[str, tuple[PreTrainedModel, PreTrainedTokenizerBase]] = {}
        self._encoded: OrderedDict[tuple[str, str], tuple[tuple[Tensor, ...], list[str], Tensor]] = OrderedDict()
        self.layer_map_spec = layer_map
        self.max_length = max_length
        self.max_labels = max_labels
        self.dpi = dpi
        self.redraws = 0
        self.last_error: str | None = None
        self.last_views: tuple[Any, ...] = ()
        self.last_redraw_s: float | None = None
        self._syncing = False
        self.shown_labels: list[str] = []

        names = list(models)
        model = model or names[0]
        for label, value, allowed in (("model", model, names), ("reference", reference or NO_REFERENCE, [NO_REFERENCE, *names])):
            if value not in allowed:
                raise ValueError(f"{label}={value!r} is not one of the models {names}")
        wide = widgets.Layout(width="98%")
        self.text = widgets.Text(value=sentence, description="sentence", continuous_update=False, layout=wide)
        self.examples = widgets.Dropdown(
            options=[(CUSTOM_TEXT, "")] + [(e if len(e) <= 70 else e[:67] + "...", e) for e in examples],
            value="", description="examples", layout=widgets.Layout(width="98%"),
        )
        self.model = widgets.Dropdown(options=names, value=model, description="model")
        self.reference = widgets.Dropdown(options=[NO_REFERENCE, *names], value=reference or NO_REFERENCE, description="compare to")
        self.relation = widgets.ToggleButtons(options=[(RELATION_NAMES[k], k) for k in RELATION_NAMES], value="wr_pair")
        self.relation.style.button_width = "120px"
        self.metric = widgets.ToggleButtons(options=["cos", "l2"], value="cos", description="pair metric")
        self.metric.style.button_width = "50px"
        self.pieces = widgets.ToggleButtons(options=list(PIECE_STYLES), value="mark", description="word pieces")
        self.pieces.style.button_width = "70px"
        # A placeholder option that no model has, so the first sync picks the top layer.
        self.layer = widgets.SelectionSlider(options=[("", -1)], description="layer", continuous_update=False)
        self.token = widgets.Dropdown(options=[("0", 0)], description="token")
        self.message = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.layer.add_class("ckdlab-explorer-layer")
        self.image.add_class("ckdlab-explorer-figure")
        self.widget = widgets.VBox(
            [
                self.text,
                self.examples,
                widgets.HBox([self.model, self.reference]),
                self.relation,
                widgets.HBox([self.metric, self.pieces]),
                widgets.HBox([self.layer, self.token]),
                self.message,
                self.image,
            ]
        )
        self.widget.add_class("ckdlab-explorer")
        self.examples.observe(self._on_example, names="value")
        for control in (self.text, self.model, self.reference, self.relation, self.pieces):
            control.observe(self._on_input, names="value")
        for control in (self.metric, self.layer, self.token):
            control.observe(self._on_view, names="value")
        self._sync_controls()
        self.redraw()

    # ----------------------------------------------------------------- display
    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    # ----------------------------------------------------------------- models and encodings
    def load(self, name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """The ``(model, tokenizer)`` called ``name``, loaded on first use."""
        if name not in self._loaded:
            source = self._sources[name]
            if isinstance(source, tuple):
                self._loaded[name] = source
            else:
                from ckdlab.models import load_backbone

                self._loaded[name] = load_backbone(source)
        return self._loaded[name]

    def encoding(self, name: str, sentence: str | None = None) -> tuple[tuple[Tensor, ...], list[str], Tensor]:
        """``encode`` of the sentence by model ``name``, cached (slider moves do not re-run models)."""
        sentence = self.text.value if sentence is None else sentence
        key = (name, sentence)
        if key in self._encoded:
            self._encoded.move_to_end(key)
            return self._encoded[key]
        model, tokenizer = self.load(name)
        result = encode(model, tokenizer, sentence, max_length=self.max_length)
        self._encoded[key] = result
        if len(self._encoded) > CACHE_SIZE:
            self._encoded.popitem(last=False)
        return result

    def _shown_labels(self) -> list[str]:
        hidden, tokens, mask = self.encoding(self.model.value)
        if self.pieces.value == "merge":
            return merge_word_pieces(hidden, tokens, mask)[1]
        return piece_labels(tokens)

    def _comparison(self) -> str | None:
        return None if self.reference.value in (NO_REFERENCE, self.model.value) else self.reference.value

    def _pairs(self) -> list[tuple[int, int]]:
        """Layer map from the reference (teacher side) to the selected model (student side)."""
        reference = self.load(self._comparison())[0]  # type: ignore[arg-type]
        return resolve_layer_map(self.layer_map_spec, n_layers(reference), n_layers(self.load(self.model.value)[0]))

    # ----------------------------------------------------------------- controls
    def _layer_options(self) -> tuple[str, list[tuple[str, int]]]:
        kind = self.relation.value
        compare = self._comparison() is not None
        if kind in ("wr_pair", "wr_triplet"):
            layers = [s for _, s in self._pairs()] if compare else list(range(n_layers(self.load(self.model.value)[0]) + 1))
            return "layer", [(layer_label(s), s) for s in layers]
        if compare:
            labels = [f"{layer_label(t)}/{layer_label(s)}" if t != s else layer_label(s) for t, s in self._pairs()]
        else:
            labels = [layer_label(s) for s in range(n_layers(self.load(self.model.value)[0]) + 1)]
        return "anchor layer", [(label, position) for position, label in enumerate(labels)]

    def _sync_controls(self) -> None:
        """Refit the layer and token choices to the current model, sentence and relation."""
        self._syncing = True
        try:
            kind = self.relation.value
            description, options = self._layer_options()
            previous = self.layer.value
            values = [v for _, v in options]
            self.layer.options = options
            self.layer.value = previous if previous in values else values[-1] if description == "layer" else values[0]
            self.layer.description = description
            self.layer.disabled = kind == "ltr_pair"
            labels = self.shown_labels = self._shown_labels()
            previous_token = self.token.value
            self.token.options = [(f"{i}: {label}", i) for i, label in enumerate(labels)]
            default = 1 if len(labels) > 1 else 0
            self.token.value = previous_token if previous_token is not None and previous_token < len(labels) else default
            self.token.description = "anchor token" if kind == "wr_triplet" else "token"
            self.token.disabled = kind == "wr_pair"
            self.metric.disabled = kind in ("wr_triplet", "ltr_triplet")
        finally:
            self._syncing = False

    def _on_example(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.text.value = change["new"]

    def _on_input(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        with DRAW_LOCK:  # the sync runs the model too (token labels)
            self._guarded(self._sync_controls)
            self.redraw()

    def _on_view(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.redraw()

    def _guarded(self, action) -> bool:
        """Run ``action``; a bad input (ValueError) or a model that cannot be loaded (OSError)
        is shown in the panel instead of vanishing into the widget log."""
        try:
            action()
        except (ValueError, OSError) as err:
            self.last_error = f"{type(err).__name__}: {err}"
            self.message.value = f"<span style='color:#b00020'>{self.last_error}</span>"
            return False
        return True

    # ----------------------------------------------------------------- drawing
    def figure(self) -> Figure:
        """The figure for the current control values (also what :meth:`redraw` shows)."""
        kind = self.relation.value
        hidden, tokens, mask = self.encoding(self.model.value)
        options = dict(metric=self.metric.value, pieces=self.pieces.value, anchor=self.token.value, token=self.token.value)
        reference = self._comparison()
        if reference is None:
            if kind in ("wr_pair", "wr_triplet"):
                view = relation_view(kind, hidden, tokens, mask, layer=self.layer.value, **options)
            else:
                view = relation_view(kind, hidden, tokens, mask, anchor_layer=self.layer.value, **options)
            self.last_views = (view,)
            return plot_relation(view, max_labels=self.max_labels)
        ref_hidden, ref_tokens, _ = self.encoding(reference)
        if ref_tokens != tokens:
            raise ValueError(
                f"'{reference}' and '{self.model.value}' tokenise this sentence differently; a comparison needs a shared tokenizer"
            )
        layer = self.layer.value if kind in ("wr_pair", "wr_triplet") else None
        anchor_layer = self.layer.value if kind == "ltr_triplet" else 0
        views = teacher_student_views(kind, ref_hidden, hidden, tokens, mask, self._pairs(), layer=layer, anchor_layer=anchor_layer, **options)
        self.last_views = views
        return plot_teacher_student(*views, names=(reference, self.model.value), max_labels=self.max_labels)

    def redraw(self) -> bool:
        """Recompute and replace the figure; False (with the reason shown) on a bad input."""
        start = time.perf_counter()

        def draw() -> None:
            self.image.value = to_png(self.figure(), dpi=self.dpi)

        with DRAW_LOCK:
            ok = self._guarded(draw)
        if ok:
            self.last_error = None
            self.message.value = ""
            self.redraws += 1
        self.last_redraw_s = time.perf_counter() - start
        return ok

    def state(self) -> dict[str, Any]:
        """The current control values and what the figure shows (for tests and scripts)."""
        view = self.last_views[-1] if self.last_views else None
        return {
            "sentence": self.text.value,
            "model": self.model.value,
            "reference": self._comparison(),
            "relation": self.relation.value,
            "metric": self.metric.value,
            "pieces": self.pieces.value,
            "layer": self.layer.value,
            "layer_choices": [v for _, v in self.layer.options],
            "token": self.token.value,
            "tokens": list(self.shown_labels),
            "matrix_shape": None if view is None else tuple(view.matrix.shape),
            "title": None if view is None else view.title,
            "redraws": self.redraws,
            "image_sha1": hashlib.sha1(self.image.value).hexdigest() if self.image.value else None,
            "error": self.last_error,
            "redraw_s": self.last_redraw_s,
        }
