"""The stacked CKD kernels give the same numbers however the layer stack is cut into pieces."""
import pytest
import torch

from ckdlab.objectives.ckd import CKDLoss, kernels


@pytest.mark.parametrize("options", [
    dict(),
    dict(pair_loss="huber", pair_metric="l2", triplet_loss="huber", window=2),
    dict(pair_temperature=0.3, centred=True),
])
def test_layer_pieces_give_the_same_values_and_gradients(monkeypatch, options):
    gen = torch.Generator().manual_seed(0)
    mask = (torch.arange(7)[None] < torch.tensor([[7], [5], [2]])).long()
    teacher = tuple(torch.randn(3, 7, 6, generator=gen, dtype=torch.float64) for _ in range(6))
    student = tuple(torch.randn(3, 7, 4, generator=gen, dtype=torch.float64) for _ in range(6))
    results = []
    for chunk in (kernels.CPU_CHUNK_ELEMENTS, 3 * 7 * 7, 2 * 3 * 7 * 7, 1):  # all layers, 1, 2, 1 per piece
        monkeypatch.setattr(kernels, "CPU_CHUNK_ELEMENTS", chunk)
        s = tuple(x.clone().requires_grad_(True) for x in student)
        ckd = CKDLoss(layer_map="uniform", **options)
        terms = ckd(teacher, s, mask)
        ckd.total(terms).backward()
        results.append((terms, torch.cat([x.grad.flatten() for x in s])))
    assert len(kernels.layer_chunks(kernels.wr_gram(list(student), mask.bool()))) == 6  # one layer each
    for terms, grad in results[1:]:
        for term, value in terms.items():
            torch.testing.assert_close(value, results[0][0][term], rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-10, atol=1e-13)
