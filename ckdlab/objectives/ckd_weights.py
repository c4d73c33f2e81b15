"""The official CKD code's loss weights, converted to this implementation's normalisation.

The official code (github.com/GeondoPark/CKD) divides each relation loss by other counts than
:mod:`ckdlab.objectives.ckd` does (the derivation is in ``ckdlab/configs/paper/*.yaml``), so its
weights mean something else here; :func:`official_to_ours` maps them.
"""
from __future__ import annotations

from collections.abc import Iterable


def official_to_ours(official: dict[str, float], lengths: Iterable[int], n_layer_pairs: int, window: int | None = 10) -> dict[str, float]:
    """Convert the official CKD code's loss weights to this implementation's normalisation.

    With n_b the valid tokens of sequence b and K mapped layer pairs (derivation in the YAML files):
    wr_pair x Σn_b / Σn_b²; wr_triplet x Σ_b Σ_a m_a(m_a − 1) / Σ_b n_b(2w+1)² (m_a = valid partners
    of anchor a within the window; without a window x Σ n(n−1)(n−2) / Σ n³); ltr_pair x 1/K;
    ltr_triplet x (K−1)(K−2)/K². Other weights (kd, ce) are unchanged.
    """
    lengths = [int(n) for n in lengths]
    if not lengths or n_layer_pairs < 1:
        raise ValueError("official_to_ours needs token lengths of the training set and n_layer_pairs >= 1")
    k = n_layer_pairs
    anchors = sum(n for n in lengths if n >= 2)
    cells = sum(n * n for n in lengths)
    if window is None:
        ours_t, theirs_t = sum(n * (n - 1) * (n - 2) for n in lengths), sum(n**3 for n in lengths)
    else:
        ours_t = sum(m * (m - 1) for n in lengths for m in (min(a, window) + min(n - 1 - a, window) for a in range(n)))
        theirs_t = sum(n * (2 * window + 1) ** 2 for n in lengths)
    factors = {"wr_pair": anchors / cells, "wr_triplet": ours_t / theirs_t, "ltr_pair": 1.0 / k,
               "ltr_triplet": (k - 1) * (k - 2) / k**2}
    return {name: float(value) * factors.get(name, 1.0) for name, value in official.items()}
