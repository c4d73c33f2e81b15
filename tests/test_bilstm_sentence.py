"""Stage-1 objective of the BiLSTM distillation: teacher sentence vectors and the approximation loss,
against hand computations (values and gradients, float64)."""
from __future__ import annotations

import pytest
import torch

from ckdlab.objectives import SentenceApproximationLoss, masked_mean, teacher_sentence_vector


def hidden_states(seed: int = 0, layers: int = 4, batch: int = 3, length: int = 5, width: int = 4) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, length, width, generator=generator, dtype=torch.float64) for _ in range(layers))


MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])


def loop_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    rows = []
    for b in range(states.shape[0]):
        tokens = [states[b, t] for t in range(states.shape[1]) if mask[b, t]]
        rows.append(sum(tokens) / len(tokens))
    return torch.stack(rows)


def test_masked_mean_by_hand():
    states = hidden_states()[0]
    torch.testing.assert_close(masked_mean(states, MASK), loop_mean(states, MASK))
    assert torch.equal(masked_mean(states, torch.zeros_like(MASK)), torch.zeros(3, 4, dtype=torch.float64))


def test_teacher_vectors_by_hand():
    states = hidden_states()
    torch.testing.assert_close(teacher_sentence_vector(states, MASK), loop_mean(states[-1], MASK))
    torch.testing.assert_close(teacher_sentence_vector(states, MASK, "cls"), states[-1][:, 0])
    expected = (loop_mean(states[1], MASK) + loop_mean(states[3], MASK)) / 2
    torch.testing.assert_close(teacher_sentence_vector(states, MASK, "mean-layers", layers=[1, -1]), expected)
    last_four = sum(loop_mean(s, MASK) for s in states) / 4
    torch.testing.assert_close(teacher_sentence_vector(states, MASK, "mean-layers"), last_four)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"pooling": "max"}, "pooling='max' is not known"), ({"pooling": "cls", "layers": [1]}, "only applies"),
     ({"pooling": "mean-layers", "layers": [9]}, "out of range"), ({"pooling": "mean-layers", "layers": []}, "non-empty")],
)
def test_teacher_vector_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        teacher_sentence_vector(hidden_states(), MASK, **kwargs)


def reference_loss(u, t, weight, bias, metric):
    """Written out per element: (1/(B d_t)) Σ (Wu + c - t)² or (1/B) Σ (1 - cos)."""
    batch, out = t.shape
    total = 0.0
    for b in range(batch):
        mapped = [sum(weight[i, j] * u[b, j] for j in range(u.shape[1])) + bias[i] for i in range(out)]
        if metric == "mse":
            total = total + sum((mapped[i] - t[b, i]) ** 2 for i in range(out)) / (batch * out)
        else:
            dot = sum(mapped[i] * t[b, i] for i in range(out))
            norm_mapped = torch.sqrt(sum(m**2 for m in mapped))
            norm_t = torch.sqrt(sum(x**2 for x in t[b]))
            total = total + (1 - dot / (norm_mapped * norm_t)) / batch
    return total


@pytest.mark.parametrize("metric", ["mse", "cosine"])
def test_loss_values_and_gradients_by_hand(metric):
    torch.manual_seed(0)
    loss = SentenceApproximationLoss(6, 3, metric=metric).double()
    u = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 3, dtype=torch.float64)
    value = loss(u, t)
    grads = torch.autograd.grad(value, [u, loss.projection.weight, loss.projection.bias])

    w = loss.projection.weight.detach().clone().requires_grad_(True)
    c = loss.projection.bias.detach().clone().requires_grad_(True)
    u_ref = u.detach().clone().requires_grad_(True)
    expected = reference_loss(u_ref, t, w, c, metric)
    expected_grads = torch.autograd.grad(expected, [u_ref, w, c])
    torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_loss_is_zero_when_the_map_reproduces_the_teacher():
    loss = SentenceApproximationLoss(3, 3).double()
    with torch.no_grad():
        loss.projection.weight.copy_(torch.eye(3, dtype=torch.float64))
        loss.projection.bias.zero_()
    u = torch.randn(5, 3, dtype=torch.float64)
    assert loss(u, u).item() == 0.0
    cosine = SentenceApproximationLoss(3, 3, metric="cosine").double()
    cosine.load_state_dict(loss.state_dict())
    assert abs(cosine(u, 2.0 * u).item()) < 1e-12  # scale does not matter to the cosine


def test_teacher_side_gets_no_gradient():
    loss = SentenceApproximationLoss(4, 2)
    t = torch.randn(3, 2, requires_grad=True)
    loss(torch.randn(3, 4), t).backward()
    assert t.grad is None


def test_loss_argument_errors():
    with pytest.raises(ValueError, match="metric='l1' is not known"):
        SentenceApproximationLoss(4, 2, metric="l1")
    with pytest.raises(ValueError, match="student_size"):
        SentenceApproximationLoss(0, 2)
    loss = SentenceApproximationLoss(4, 2)
    with pytest.raises(ValueError, match=r"student_vectors must be \[B, 4\]"):
        loss(torch.randn(3, 5), torch.randn(3, 2))
    with pytest.raises(ValueError, match=r"teacher_vectors must be \[3, 2\]"):
        loss(torch.randn(3, 4), torch.randn(3, 3))
