"""Task loss and logit knowledge distillation.

``CrossEntropy``: the supervised task loss on gold labels (cross-entropy for classification,
MSE on the single output for regression, e.g. STS-B).

``LogitKD``: Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network",

    kd = T² · (1/B) Σ_b KL( softmax(z_t[b] / T) ‖ softmax(z_s[b] / T) )

and for regression heads (one output) ``kd = (1/B) Σ_b (z_s[b] − z_t[b])²``.

The T² factor keeps the gradient magnitude of the soft term roughly independent of T: the gradient of the
un-scaled KL w.r.t. z_s is (softmax(z_s/T) − softmax(z_t/T)) / T, which for large T and zero-mean logits is
≈ (z_s − z_t) / (N·T²) for N classes.

``mix_kd_ce``: the Hinton mix ``α·kd + (1 − α)·ce``.

Every ``forward(teacher, student, batch)`` returns a dict of *unweighted* scalar terms; the caller applies
the config weights. Teacher outputs are detached: the teacher is a fixed target.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


def _regression_output(logits: Tensor, who: str) -> Tensor:
    # Regression heads in transformers (num_labels == 1) emit [B, 1]; accept [B] too.
    if logits.dim() == 2 and logits.shape[-1] == 1:
        return logits.squeeze(-1)
    if logits.dim() == 1:
        return logits
    raise ValueError(
        f"regression expects {who} logits of shape [B, 1] or [B], got {tuple(logits.shape)}; "
        "build the model with num_labels=1 or set regression=False"
    )


class CrossEntropy(nn.Module):
    """Supervised task loss on the gold labels (term ``ce``).

    Classification: ``ce = −(1/B) Σ_b log softmax(z_s[b])[y_b]``.
    Regression:     ``ce = (1/B) Σ_b (z_s[b] − y_b)²`` on the single output.

    Args:
        regression: ``True``/``False`` forces the mode; ``None`` (default) infers it from the labels:
            floating-point labels mean regression (the GLUE/STS-B convention), integer labels mean
            classification.
    """

    def __init__(self, regression: bool | None = None) -> None:
        super().__init__()
        self.regression = regression

    def forward(self, teacher: Any, student: Any, batch: dict[str, Tensor],
                weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        if "labels" not in batch:
            raise ValueError("CrossEntropy needs batch['labels']; the batch has keys " f"{sorted(batch)}")
        labels = batch["labels"]
        logits = student.logits
        regression = labels.is_floating_point() if self.regression is None else self.regression
        if regression:
            if not labels.is_floating_point():
                raise ValueError("CrossEntropy(regression=True) needs float labels; cast labels to float")
            return {"ce": F.mse_loss(_regression_output(logits, "student"), labels.to(logits.dtype))}
        if labels.is_floating_point():
            raise ValueError(
                "CrossEntropy(regression=False) needs integer class labels, got float labels; "
                "cast labels to long or use regression=True"
            )
        if logits.dim() != 2:
            raise ValueError(f"classification expects student logits of shape [B, C], got {tuple(logits.shape)}")
        return {"ce": F.cross_entropy(logits, labels)}


class LogitKD(nn.Module):
    """Soft-target logit distillation (term ``kd``), Hinton et al. (2015).

    Classification: ``kd = T² · (1/B) Σ_b Σ_c p_t[b,c] (log p_t[b,c] − log p_s[b,c])`` with
    ``p = softmax(z / T)``.
    Regression:     ``kd = (1/B) Σ_b (z_s[b] − z_t[b])²`` (T is not used).

    ``temperature`` is a plain mutable attribute so a live widget can change it between steps; it is
    validated on every call.
    """

    def __init__(self, temperature: float = 1.0, regression: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.regression = regression
        self._check_temperature()

    def _check_temperature(self) -> float:
        t = float(self.temperature)
        if not t > 0.0 or t == float("inf"):
            raise ValueError(f"LogitKD temperature must be a finite number > 0, got {self.temperature!r}")
        return t

    def forward(self, teacher: Any, student: Any, batch: dict[str, Tensor],
                weights: Mapping[str, float] | None = None) -> dict[str, Tensor]:
        z_s = student.logits
        z_t = teacher.logits.detach().to(z_s.dtype)
        if z_s.shape != z_t.shape:
            raise ValueError(
                f"LogitKD needs teacher and student logits of the same shape, got teacher {tuple(z_t.shape)} "
                f"and student {tuple(z_s.shape)}; both models must have the same num_labels"
            )
        if self.regression:
            return {"kd": F.mse_loss(_regression_output(z_s, "student"), _regression_output(z_t, "teacher"))}
        if z_s.dim() != 2:
            raise ValueError(f"LogitKD expects logits of shape [B, C], got {tuple(z_s.shape)}")
        t = self._check_temperature()
        log_p_s = F.log_softmax(z_s / t, dim=-1)
        log_p_t = F.log_softmax(z_t / t, dim=-1)
        # log_target avoids 0·log 0 = NaN when a teacher probability underflows.
        kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
        return {"kd": kl * (t * t)}


def mix_kd_ce(kd: Tensor, ce: Tensor, alpha: float) -> Tensor:
    """Hinton's mixed objective ``α·kd + (1 − α)·ce`` with ``0 ≤ α ≤ 1``.

    ``kd`` should already carry the T² factor (as ``LogitKD`` returns it), so α keeps its meaning when T
    changes.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"mix_kd_ce alpha must lie in [0, 1], got {alpha}")
    return alpha * kd + (1.0 - alpha) * ce
