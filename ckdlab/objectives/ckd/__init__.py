"""The Contextual Knowledge Distillation objective (CKD; Park, Kim & Yang, EMNLP 2021).

Four relation-matching terms between a teacher and a student. For one sequence, let V be its
valid (non-padding) positions and cos(x, y) = x.y / (max(|x|, eps) max(|y|, eps)), eps = 1e-12.
Teacher states are constants. "Layer pairs" are the (teacher, student) layers of a layer map
(see ``ckdlab.objectives.layer_map``).

* WR pair-wise (``wr_pair_loss``): for each anchor i in V, p_i = softmax_{j in V, j != i}
  cos(t_i, t_j) and q_i the same from the student;
  loss = sum KL(p_i || q_i) / #(layer pair, sequence, anchor i). Sequences with fewer than two
  valid tokens have no anchors (they contribute nothing).
* WR triplet-wise (``wr_triplet_loss``): psi(a, b, c) = cos(h_b - h_a, h_c - h_a) for a, b, c in
  V, b != a, c != a, b != c (ordered (b, c)); loss = mean over all such (layer pair, sequence,
  a, b, c) of (psi_t - psi_s)^2. ``window=w`` keeps only |b - a| <= w and |c - a| <= w (the
  official 21-token window is w = 10).
* LTR pair-wise (``ltr_pair_loss``): for a valid token i and the n mapped layers,
  p_{i,l} = softmax_{m != l} cos(h_i^l, h_i^m); loss = sum KL(p || q) / #(sequence, token, l).
* LTR triplet-wise (``ltr_triplet_loss``): psi(l, m, k) = cos(h_i^m - h_i^l, h_i^k - h_i^l),
  m != l, k != l, m != k; loss = mean squared difference over (sequence, token, l, m, k).

Options:

* pair ``loss``: ``"kl"`` (default), ``"mse"`` or ``"huber"`` (smooth L1, beta = 1). ``mse`` and
  ``huber`` compare the relation values themselves (cosines, or normalised distances) over the
  same valid (anchor, j != anchor) entries and average over those entries.
* pair ``metric``: ``"cos"`` (default) or ``"l2"``: |h_i - h_j| divided by its mean over the
  valid pairs i != j of that sequence and layer (RKD-style; for LTR, over the layer pairs of that
  token). With ``loss="kl"`` the softmax logit is the *negative* normalised distance, so nearer
  tokens get more probability mass, as nearer = more similar does for cosines.
* triplet ``loss``: ``"mse"`` (default) or ``"huber"`` (smooth L1, beta = 1).
* pair ``temperature`` T > 0 (``CKDLoss(pair_temperature=...)``): the KL softmax takes logits
  r / T for teacher and student alike; T = 1 is the official form. A softmax over cosines in
  [-1, 1] at T = 1 is nearly uniform (measured: the teacher's last-layer rows are 0.012 nats from
  uniform), so the KL is small whatever the student does; T < 1 sharpens it. Only ``loss="kl"``
  has a softmax: another T with ``mse``/``huber`` is a ValueError.
* ``centred`` (default False): WR relations on c_i = h_i - mu, mu = (1/|V|) sum_{j in V} h_j per
  sequence and layer, and LTR relations on the same c_i^l. Distances and WR angles are unchanged
  (they ignore a common shift); WR cosines become cos(c_i, c_j), which a collapsed student (all
  tokens near one vector, raw cosines near 1) cannot match, while angles alone cannot see it.

Departures from the official code (github.com/GeondoPark/CKD), all deliberate:

* its KL fills masked logits with -inf, so rows with no valid entry give NaN on current torch;
  here masked logits get the most negative finite value and invalid anchors are dropped from
  both the sum and the count (p = 0 entries contribute exactly 0);
* its LTR weights are never applied; here ``CKDLoss.total`` applies all four weights;
* its windowed angles clamp neighbour indices at the sequence ends (duplicating edge tokens)
  and do not mask padded neighbours; here the window is a plain |b - a| <= w filter on valid
  tokens.

Cost. All K layer pairs are computed at once on stacked ``[K, B, L, L]`` Grams (module
``kernels``), on one CPU thread by default, forward and backward (module ``threads``: on a busy
machine every multi-threaded operation can wait a scheduler time slice). Triplet angles come
from centred Gram matrices through the law of cosines (see ``ckdlab.objectives.relations`` for
the formulas and the float32 guards), never from ``[B, L, L, d]`` or ``[B, L, 21, d]``
difference tensors. For the default ``mse`` triplet loss, the sum over all (a, b, c) of squared
angle differences is expanded into inner products of the per-anchor angle matrices, which are
batched ``[L, L]`` matrix products (``kernels.angle_squared_error``): memory O(B L^2), plain
autograd. A window is a mask on the partner legs, so it uses the same path. The ``huber`` loss
does not expand; it walks over blocks of (sequences x anchors) of about ``block_elements``
entries (module ``angle_blocks``). The teacher's Grams can be kept per training example (module
``memo``). Padded positions may hold any finite values. Gradients are first order.

Measured by ``benchmarks/bench_ckd.py`` (CPU, d = 768, 7 layer pairs, forward + backward; the
``--busy`` table adds a competing process). In float32 the matmul expansion agrees with the
element-wise sum to about 1e-5 relative.

Modules: ``kernels`` (stacked relation kernels), ``angle_blocks`` (huber walk), ``threads``
(thread scope), ``memo`` (:class:`TeacherGramMemo`), ``losses`` (the four loss functions),
``module`` (:class:`CKDLoss`), ``fidelity`` (:func:`relation_fidelity`).
"""
from ckdlab.objectives.ckd.fidelity import relation_fidelity
from ckdlab.objectives.ckd.kernels import PAIR_LOSSES, TRIPLET_LOSSES
from ckdlab.objectives.ckd.losses import ltr_pair_loss, ltr_triplet_loss, wr_pair_loss, wr_triplet_loss
from ckdlab.objectives.ckd.memo import TeacherGramMemo
from ckdlab.objectives.ckd.module import TERMS, CKDLoss
from ckdlab.objectives.ckd.threads import KERNEL_THREADS, kernel_threads

__all__ = [
    "KERNEL_THREADS",
    "PAIR_LOSSES",
    "TERMS",
    "TRIPLET_LOSSES",
    "CKDLoss",
    "TeacherGramMemo",
    "kernel_threads",
    "ltr_pair_loss",
    "ltr_triplet_loss",
    "relation_fidelity",
    "wr_pair_loss",
    "wr_triplet_loss",
]
