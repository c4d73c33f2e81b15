"""A BiLSTM student for task-agnostic distillation of BERT (after Wu et al., AACL-IJCNLP 2020).

The paper distils a pre-trained BERT into a plain BiLSTM by making the BiLSTM's sentence vector
approximate the teacher's on unlabeled text (stage 1, :mod:`ckdlab.objectives.sentence`), then
fine-tunes it on any sentence-level task (stage 2, optionally with logit KD). The paper's text could
not be consulted while writing this module: every detail below is ckdlab's choice and says so.

Architecture (defaults: ``L2-H150-E300``; 150 units per direction rather than 300 because a BiLSTM's
batch-1 latency is its recurrence, quadratic in the units: side by side with the offline teacher
``minilm-l6`` on one CPU thread, 2 x 300 ran at 0.61-0.67 of the teacher's latency and 2 x 150 at
0.22-0.25, under the target of 1/3 — ``benchmarks/bench_bilstm.py``):

- **Tokens**: the teacher's tokenizer and vocabulary, so the engine's batches and the teacher's
  inputs are the same tensors. ``[CLS]`` and ``[SEP]`` are *not* read by the LSTM (they carry no
  meaning without BERT's pre-training): within each segment the first token (``[CLS]``, segment A
  only) and the last valid token (``[SEP]``) are dropped by position. This assumes inputs encoded by
  a BERT-style tokenizer with its special tokens, which is what the engine produces.
- **Embeddings** (width E): initialised from the teacher's word-piece embedding matrix reduced by
  PCA to E columns (:func:`pca_embeddings`), or randomly (N(0, ``initializer_range``²)); trained.
- **Encoder**: a bidirectional LSTM, L layers, H units per direction, dropout between layers. Each
  segment's tokens are left-aligned and run so that padding and excluded tokens never reach a
  valid output (:meth:`BiLSTMModel.recurrence`).
- **Sentence vector** (width 4H): ``[max_t h_t ; mean_t h_t]`` over the segment's tokens, where
  ``h_t`` is the concatenated forward/backward output (2H). An empty segment gives the zero vector.
- **Sentence pairs** (``sentence_pair=True``): the engine's BERT pair encoding
  ``[CLS] a [SEP] b [SEP]`` is split by ``token_type_ids`` (0: a, 1: b) and ``attention_mask``;
  each sentence is encoded separately by the shared BiLSTM, and the classifier reads
  ``[u ; v ; |u - v| ; u * v]`` (width 16H), the matching features of InferSent (Conneau et al.,
  2017) — our choice, a standard one for siamese sentence encoders.
- **Classifier**: dropout -> Linear(in, C) -> ReLU -> dropout -> Linear(C, num_labels), with C =
  ``classifier_hidden_size`` (512); ``classifier_hidden_size=0`` gives dropout -> Linear.

LSTM initialisation: input weights Xavier-uniform, recurrent weights orthogonal, biases 0 except
the forget gate's input bias 1 (Jozefowicz et al., 2015), so that memory is kept early in training.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput

BILSTM_MODEL_TYPE = "ckdlab-bilstm"


class BiLSTMConfig(PreTrainedConfig):
    """Configuration of :class:`BiLSTMModel` / :class:`BiLSTMForSequenceClassification`.

    ``hidden_size`` is the number of LSTM units *per direction*; ``num_layers`` (also readable as
    ``num_hidden_layers``, the name the engine's layer maps use) the stacked LSTM layers.
    """

    model_type = BILSTM_MODEL_TYPE
    attribute_map = {"num_hidden_layers": "num_layers"}

    vocab_size: int = 30522
    embedding_size: int = 300
    hidden_size: int = 150
    num_layers: int = 2
    embedding_dropout: float = 0.1
    lstm_dropout: float = 0.1
    classifier_hidden_size: int = 512
    classifier_dropout: float = 0.1
    sentence_pair: bool = False
    initializer_range: float = 0.02
    pad_token_id: int | None = 0

    def __post_init__(self, **kwargs) -> None:
        sizes = {"vocab_size": 1, "embedding_size": 1, "hidden_size": 1, "num_layers": 1, "classifier_hidden_size": 0}
        for name, low in sizes.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"BiLSTMConfig: {name} must be an integer >= {low}, got {value!r}")
        for name in ("embedding_dropout", "lstm_dropout", "classifier_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ValueError(f"BiLSTMConfig: {name} must be a probability in [0, 1), got {value!r}")
        super().__post_init__(**kwargs)

    @property
    def sentence_size(self) -> int:
        """Width of one sentence vector: max and mean pooling of 2H-wide bidirectional outputs."""
        return 4 * self.hidden_size

    @property
    def classifier_input_size(self) -> int:
        return 4 * self.sentence_size if self.sentence_pair else self.sentence_size


@dataclass
class BiLSTMModelOutput(ModelOutput):
    """``last_hidden_state`` [B, T, 2H]: LSTM outputs at the input positions (0 at padding and at
    ``[CLS]``/``[SEP]``); ``pooler_output`` [B, 4H]: sentence vector of the first segment;
    ``pair_pooler_output`` [B, 4H]: of the second segment, when ``token_type_ids`` mark one."""

    last_hidden_state: Tensor | None = None
    pooler_output: Tensor | None = None
    pair_pooler_output: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None


def pca_embeddings(matrix: Tensor, n_components: int) -> Tensor:
    """Rows of ``matrix`` [V, d] projected on its first ``n_components`` principal axes -> [V, n].

    Centred (the mean row is subtracted), neither standardised nor rescaled: the scores keep the
    teacher's units, so the student starts with the teacher's word geometry in the directions of
    largest variance. Computed in float64 by a thin SVD; each axis is signed so that its largest
    absolute loading is positive (scikit-learn's convention), which makes the result deterministic.
    """
    if matrix.dim() != 2:
        raise ValueError(f"pca_embeddings: matrix must be 2-D [vocab, width], got shape {tuple(matrix.shape)}")
    if not 1 <= n_components <= min(matrix.shape):
        raise ValueError(
            f"pca_embeddings: n_components={n_components} must be between 1 and min(vocab, width) = "
            f"{min(matrix.shape)}; choose a smaller embedding width E or init='random'"
        )
    data = matrix.detach().to("cpu", torch.float64)
    centred = data - data.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:n_components]
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))
    return (centred @ (axes * signs).T).to(matrix.dtype)


def segment_masks(attention_mask: Tensor, token_type_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    """Token masks [B, T] of the first and second sentence, without ``[CLS]`` and ``[SEP]``.

    Segment A = valid tokens with type 0 minus its first ([CLS]) and last ([SEP]) token;
    segment B = valid tokens with type 1 minus its last ([SEP]). Without ``token_type_ids`` every
    valid token belongs to A.
    """
    valid = attention_mask.bool()
    types = torch.zeros_like(valid) if token_type_ids is None else token_type_ids.bool()
    first = valid & ~types
    second = valid & types
    positions = torch.arange(valid.shape[1], device=valid.device)
    return _drop_last(_drop_first(first, positions), positions), _drop_last(second, positions)


def _drop_first(mask: Tensor, positions: Tensor) -> Tensor:
    first = mask.int().argmax(dim=1, keepdim=True)
    return mask & (positions != first)


def _drop_last(mask: Tensor, positions: Tensor) -> Tensor:
    last = mask.shape[1] - 1 - mask.flip(1).int().argmax(dim=1, keepdim=True)
    return mask & (positions != last)


def _left_align(mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gather order putting each row's masked positions first (in order): (order, lengths, valid)."""
    lengths = mask.sum(dim=1)
    width = max(int(lengths.max()) if lengths.numel() else 0, 1)
    order = torch.argsort((~mask).int(), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=mask.device) < lengths[:, None]
    return order, lengths, valid


class BiLSTMPreTrainedModel(PreTrainedModel):
    config_class = BiLSTMConfig
    base_model_prefix = "bilstm"
    main_input_name = "input_ids"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LSTM):
            hidden = module.hidden_size
            for name, param in module.named_parameters():
                if name.startswith("weight_ih"):
                    init.xavier_uniform_(param)
                elif name.startswith("weight_hh"):
                    # one orthogonal block per gate (i, f, g, o), each [H, H]
                    for gate in param.view(4, hidden, hidden):
                        if not getattr(param, "_is_hf_initialized", False):
                            nn.init.orthogonal_(gate)
                elif name.startswith("bias"):
                    init.zeros_(param)
                    if name.startswith("bias_ih") and not getattr(param, "_is_hf_initialized", False):
                        param[hidden : 2 * hidden].fill_(1.0)


class BiLSTMModel(BiLSTMPreTrainedModel):
    """Embeddings + bidirectional LSTM + max/mean pooling: token states and sentence vector(s)."""

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.lstm = nn.LSTM(
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.lstm_dropout if config.num_layers > 1 else 0.0,
            bidirectional=True,
            batch_first=True,
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def encode(self, input_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Run the BiLSTM over the tokens selected by ``mask`` [N, T] of each row.

        Returns ``states`` [N, T, 2H] scattered back to the input positions (0 elsewhere) and the
        pooled sentence vectors [N, 4H]. Tokens outside ``mask`` are replaced by the pad id before
        the embedding lookup and never reach a valid output, so their values cannot influence anything.
        """
        order, lengths, valid = _left_align(mask)
        ids = input_ids.gather(1, order).masked_fill(~valid, self.config.pad_token_id or 0)
        embedded = self.embedding_dropout(self.embeddings(ids))
        outputs = self.recurrence(embedded, lengths)
        outputs = outputs * valid[..., None]
        nonempty = (lengths > 0)[:, None]
        maxed = outputs.masked_fill(~valid[..., None], float("-inf")).amax(dim=1)
        maxed = torch.where(nonempty, maxed, torch.zeros_like(maxed))
        mean = outputs.sum(dim=1) / lengths.clamp(min=1)[:, None].to(outputs.dtype)
        states = outputs.new_zeros(*mask.shape, outputs.shape[-1])
        states.scatter_(1, order[..., None].expand_as(outputs), outputs)
        states = states * mask[..., None]
        return states, torch.cat([maxed, mean], dim=-1)

    def recurrence(self, embedded: Tensor, lengths: Tensor) -> Tensor:
        """Bidirectional LSTM outputs [N, W, 2H] of left-aligned rows ``embedded`` [N, W, E] with
        ``lengths`` [N]; positions at or beyond a row's length hold values that must be ignored.

        Without padding (every row W long, e.g. a batch of one) this is one fused call of
        ``self.lstm``. Otherwise each layer runs its two directions as separate one-layer calls on
        the padded tensor: the forward direction reads pads only after a row's last token, and the
        backward one reads each row reversed *within its length* (pads stay at the end), so no
        valid output ever depends on a pad — the same numbers as a packed sequence. Packed
        sequences are avoided because their CPU backward slices the input once per time step,
        which cost 2.5x the time of this at 64 tokens (batch 32, 2 x 300 units).
        """
        width = embedded.shape[1]
        if bool((lengths == width).all()):
            return self.lstm(embedded)[0]
        positions = torch.arange(width, device=embedded.device)[None, :]
        ends = lengths.to(embedded.device)[:, None]
        reverse = torch.where(positions < ends, ends - 1 - positions, positions)[..., None]
        lstm = self.lstm
        zeros = embedded.new_zeros(1, embedded.shape[0], lstm.hidden_size)
        states = embedded
        for layer in range(lstm.num_layers):
            if layer:
                states = F.dropout(states, lstm.dropout, self.training)
            outputs = []
            for suffix in ("", "_reverse"):
                weights = [getattr(lstm, f"{kind}_l{layer}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                inputs = states if not suffix else states.gather(1, reverse.expand_as(states))
                # torch.lstm is the op nn.LSTM itself calls (one layer, one direction, batch first)
                out = torch.lstm(inputs, (zeros, zeros), weights, True, 1, 0.0, self.training, False, True)[0]
                outputs.append(out if not suffix else out.gather(1, reverse.expand_as(out)))
            states = torch.cat(outputs, dim=-1)
        return states

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BiLSTMModelOutput | tuple:
        """Same inputs as a BERT model. Sentence B is encoded when ``token_type_ids`` mark one."""
        if output_hidden_states:
            raise ValueError(
                "output_hidden_states=True: the BiLSTM student has no per-layer hidden states; "
                "train it with objectives that read logits only (ce, kd)"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        first, second = segment_masks(attention_mask, token_type_ids)
        if second.any():
            # both sentences through the shared LSTM in one call: stack them along the batch
            states, pooled = self.encode(torch.cat([input_ids, input_ids]), torch.cat([first, second]))
            half = input_ids.shape[0]
            last_hidden_state = states[:half] + states[half:]
            sentence, pair = pooled[:half], pooled[half:]
        else:
            last_hidden_state, sentence = self.encode(input_ids, first)
            pair = None
        output = BiLSTMModelOutput(last_hidden_state=last_hidden_state, pooler_output=sentence, pair_pooler_output=pair)
        return output if return_dict is not False else output.to_tuple()


def pair_features(u: Tensor, v: Tensor) -> Tensor:
    """InferSent's matching features ``[u ; v ; |u - v| ; u * v]``."""
    return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)


def classifier_head(config: BiLSTMConfig) -> nn.Sequential:
    """dropout -> Linear -> ReLU -> dropout -> Linear (or dropout -> Linear when the hidden size is 0)."""
    width = config.classifier_input_size
    layers: list[nn.Module] = [nn.Dropout(config.classifier_dropout)]
    if config.classifier_hidden_size:
        layers += [nn.Linear(width, config.classifier_hidden_size), nn.ReLU(), nn.Dropout(config.classifier_dropout)]
        width = config.classifier_hidden_size
    return nn.Sequential(*layers, nn.Linear(width, config.num_labels))


class BiLSTMForSequenceClassification(BiLSTMPreTrainedModel):
    """BiLSTM encoder + classifier. Loss as in transformers: MSE for ``num_labels == 1``
    (regression), cross-entropy for single-label, BCE-with-logits for multi-label classification."""

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__(config)
        self.bilstm = BiLSTMModel(config)
        self.classifier = classifier_head(config)
        self.post_init()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        encoded = self.bilstm(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, output_hidden_states=output_hidden_states
        )
        pair = encoded.pair_pooler_output
        if self.config.sentence_pair:
            mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            if token_type_ids is None or not (token_type_ids.bool() & mask.bool()).any(dim=1).all():
                raise ValueError(
                    "this BiLSTM was built for sentence pairs (sentence_pair=True) but some rows have no sentence B "
                    "(no token with token_type_ids == 1); pass the tokenizer's encoding of both sentences"
                )
            features = pair_features(encoded.pooler_output, pair)
        elif pair is not None:
            raise ValueError(
                "this BiLSTM was built for single sentences (sentence_pair=False) but the batch holds sentence "
                "pairs (token_type_ids == 1); build it with sentence_pair=True for pair tasks"
            )
        else:
            features = encoded.pooler_output
        logits = self.classifier(features)
        loss = None if labels is None else self._loss(logits, labels)
        output = SequenceClassifierOutput(loss=loss, logits=logits)
        return output if return_dict is not False else output.to_tuple()

    def _loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        problem = self.config.problem_type
        if problem is None:
            problem = "regression" if self.config.num_labels == 1 else "single_label_classification"
        if problem == "regression":
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype).view(-1))
        if problem == "multi_label_classification":
            return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return F.cross_entropy(logits, labels.view(-1).long())


# Registration at import: AutoConfig/AutoModel/AutoModelForSequenceClassification (and so
# ckdlab.models.load_backbone) load any saved folder whose config says "ckdlab-bilstm".
AutoConfig.register(BILSTM_MODEL_TYPE, BiLSTMConfig, exist_ok=True)
AutoModel.register(BiLSTMConfig, BiLSTMModel, exist_ok=True)
AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification, exist_ok=True)


# --------------------------------------------------------------------------- building from a teacher

BILSTM_INITS = ("pca", "random")
_SPEC_KEYS = {"L": "num_layers", "H": "hidden_size", "E": "embedding_size"}


def parse_bilstm_spec(spec: str) -> dict[str, int]:
    """``'bilstm'`` or ``'bilstm:L2-H150-E300'`` -> config sizes; each of L, H, E is optional.

    L = LSTM layers, H = units per direction, E = embedding width (defaults 2, 150, 300).
    """
    kind, _, sizes = str(spec).strip().partition(":")
    if kind.strip().lower() != "bilstm":
        raise ValueError(f"student spec {spec!r} is not a BiLSTM spec; use 'bilstm' or 'bilstm:L2-H150-E300'")
    parsed: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in sizes.split("-"))):
        key, digits = part[:1].upper(), part[1:]
        if key not in _SPEC_KEYS or not digits.isdigit() or int(digits) < 1:
            raise ValueError(
                f"student spec {spec!r}: {part!r} is not L<layers>, H<units per direction> or E<embedding width> "
                "with a positive integer; e.g. 'bilstm:L2-H150-E300'"
            )
        if _SPEC_KEYS[key] in parsed:
            raise ValueError(f"student spec {spec!r}: {key} is given twice")
        parsed[_SPEC_KEYS[key]] = int(digits)
    return parsed


def bilstm_config_from_teacher(
    teacher: PreTrainedModel, spec: str = "bilstm", num_labels: int | None = None, sentence_pair: bool = False, **overrides
) -> BiLSTMConfig:
    """A :class:`BiLSTMConfig` sized by ``spec`` with the teacher's vocabulary, pad id and (when the
    label count matches) label names. ``overrides`` set any other config field (dropouts, ...)."""
    teacher_config = teacher.config
    if num_labels is None:
        if "ForSequenceClassification" not in type(teacher).__name__:
            raise ValueError("num_labels is required: the teacher has no classification head to take it from")
        num_labels = teacher_config.num_labels
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ValueError(f"num_labels must be a positive integer (1 = regression), got {num_labels!r}")
    labels: dict = {}
    if getattr(teacher_config, "num_labels", None) == num_labels and teacher_config.id2label is not None:
        labels = {"id2label": dict(teacher_config.id2label), "label2id": dict(teacher_config.label2id)}
    problem = "regression" if num_labels == 1 else "single_label_classification"
    return BiLSTMConfig(
        vocab_size=teacher.get_input_embeddings().weight.shape[0],
        pad_token_id=teacher_config.pad_token_id if teacher_config.pad_token_id is not None else 0,
        sentence_pair=bool(sentence_pair),
        num_labels=num_labels,
        problem_type=problem,
        **labels,
        **{**parse_bilstm_spec(spec), **overrides},
    )


def build_bilstm_student(
    teacher: PreTrainedModel,
    spec: str = "bilstm",
    num_labels: int | None = None,
    init: str = "pca",
    seed: int = 0,
    sentence_pair: bool = False,
    **overrides,
) -> BiLSTMForSequenceClassification:
    """A BiLSTM classifier for ``teacher``'s tokenizer (see the module docstring).

    ``init='pca'`` sets the embeddings to the teacher's word-piece embeddings reduced by PCA to E
    columns (E must not exceed the teacher's width); ``'random'`` keeps N(0, 0.02²). The other
    weights come from a private RNG stream seeded by ``seed`` (the caller's global RNG is not moved).
    ``sentence_pair=True`` for pair tasks (MRPC, STS-B, RTE, MNLI, ...).
    """
    if init not in BILSTM_INITS:
        raise ValueError(f"init={init!r} is not known for a BiLSTM student; use one of {BILSTM_INITS}")
    config = bilstm_config_from_teacher(teacher, spec, num_labels=num_labels, sentence_pair=sentence_pair, **overrides)
    teacher_embeddings = teacher.get_input_embeddings().weight
    if init == "pca" and config.embedding_size > teacher_embeddings.shape[1]:
        raise ValueError(
            f"init='pca' needs an embedding width E <= the teacher's width {teacher_embeddings.shape[1]} "
            f"(spec {spec!r} asks for E={config.embedding_size}); lower E or use init='random'"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = BiLSTMForSequenceClassification(config)
    if init == "pca":
        with torch.no_grad():
            student.bilstm.embeddings.weight.copy_(pca_embeddings(teacher_embeddings, config.embedding_size))
    return student

