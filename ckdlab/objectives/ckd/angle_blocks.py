"""The huber WR angle loss: a walk over blocks of (sequences x anchors) with its own gradient.

The ``mse`` angle loss expands into matrix products (``kernels.angle_squared_error``); smooth L1
does not, so it visits the ``[L, L, L]`` angle tensor of each sequence in blocks of about
``block_elements`` entries, computing the loss *and* its gradient with respect to the student's
squared-distance matrix in the same pass (first-order gradient only), so nothing of size L^3
outlives a block. Stacked layer pairs are simply more rows (sequences).
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

# Entries per block on CPU and on accelerators. The CPU walk runs on one thread (see ``threads``),
# so no block pays a parallel region, and blocks that stay in cache win: forward + backward at
# B = 4-8, L = 96-128, 7 layer pairs took 394/1588 ms with 2^18 entries (1 MiB float32 per buffer)
# against 447/1678 ms with 2^20 and 675/2943 ms with 2^22. Accelerators amortise kernel launches.
CPU_BLOCK_ELEMENTS = 2**18
DEVICE_BLOCK_ELEMENTS = 2**24


class AngleDivergence(torch.autograd.Function):
    """``sum over triplets of loss(psi_s - psi_t)`` from squared distances, with its gradient.

    Inputs: ``d2_s``, ``d2_t`` ``[B, L, L]`` squared distances; ``inv_s``, ``inv_t`` the matching
    inverse lengths ``R[a, b] = 1 / sqrt(2 D2[a, b])``, already 0 for every (a, b) that is not a
    usable (anchor, partner) pair, so every triplet with an unusable leg has psi = 0 for both
    models and adds nothing. ``psi[a, b, c] = (x + y - z) R[a, b] R[a, c]`` with x = D2[a, b],
    y = D2[a, c], z = D2[b, c]. With r = R[a, b] R[a, c] and g = dloss/dpsi:

        dpsi/dx = r - psi R[a, b]^2,   dpsi/dy = r - psi R[a, c]^2,   dpsi/dz = -r.

    psi and the mask are symmetric in (b, c), so the x and y parts give the same row sums:
    ``dD2[a, b] += 2 sum_c g (r - psi R[a, b]^2)`` and ``dD2[b, c] -= sum_a g r``. The gradient is
    accumulated in forward, block by block, so nothing of size L^3 outlives a block.
    """

    @staticmethod
    def forward(ctx, d2_s: Tensor, d2_t: Tensor, inv_s: Tensor, inv_t: Tensor,
                loss: str, window: int | None, block_elements: int) -> Tensor:
        want_grad = ctx.needs_input_grad[0]
        grad = torch.zeros_like(d2_s) if want_grad else None
        total = torch.zeros((), dtype=torch.float64, device=d2_s.device)
        batch, length, _ = d2_s.shape
        blocks = list(triplet_blocks(batch, length, window, block_elements))
        # Three block-sized buffers reused by every block: fresh allocations of this size cost
        # about as much as the arithmetic on them.
        largest = max(_block_size(block) for block in blocks)
        buffers = d2_s.new_empty(3, largest)
        for block in blocks:
            rows, anchors, cols = block
            width = cols.stop - cols.start
            shape = (rows.stop - rows.start, anchors.stop - anchors.start, width, width)
            psi_s, r_s, psi_t = (buf[: _block_size(block)].view(shape) for buf in buffers)

            x_s, q_s = d2_s[rows, anchors, cols], inv_s[rows, anchors, cols]
            torch.add(x_s.unsqueeze(-1), x_s.unsqueeze(-2), out=psi_s)
            psi_s -= d2_s[rows, cols, cols].unsqueeze(1)
            torch.mul(q_s.unsqueeze(-1), q_s.unsqueeze(-2), out=r_s)
            psi_s *= r_s

            x_t, q_t = d2_t[rows, anchors, cols], inv_t[rows, anchors, cols]
            torch.add(x_t.unsqueeze(-1), x_t.unsqueeze(-2), out=psi_t)
            psi_t -= d2_t[rows, cols, cols].unsqueeze(1)
            psi_t *= q_t.unsqueeze(-1)
            psi_t *= q_t.unsqueeze(-2)

            diff = torch.sub(psi_s, psi_t, out=psi_t)
            diff.diagonal(dim1=-2, dim2=-1).zero_()  # b == c is not a triplet
            if loss == "mse":
                flat = diff.view(-1)
                total += torch.dot(flat, flat)
                g = diff  # dloss/ddiff is 2 diff; the factor 2 is applied once, to the sum, below
            else:
                size = diff.abs()
                inner = size.clamp(max=1.0)
                total += torch.dot(inner.view(-1), (size - 0.5 * inner).view(-1))  # smooth L1, beta = 1
                g = diff.clamp_(-1.0, 1.0)
            if want_grad:
                g_psi = torch.linalg.vecdot(psi_s, g)  # sum_c g psi
                g_r = r_s.mul_(g)
                grad[rows, cols, cols] -= g_r.sum(dim=1)
                grad[rows, anchors, cols] += 2.0 * (g_r.sum(dim=-1) - q_s.square() * g_psi)
        if want_grad and loss == "mse":
            grad *= 2.0
        ctx.save_for_backward(grad)
        return total.to(d2_s.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_total: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_total, None, None, None, None, None, None


def _block_size(block: tuple[slice, slice, slice]) -> int:
    rows, anchors, cols = block
    return (rows.stop - rows.start) * (anchors.stop - anchors.start) * (cols.stop - cols.start) ** 2


def triplet_blocks(batch: int, length: int, window: int | None,
                   block_elements: int) -> Iterator[tuple[slice, slice, slice]]:
    """Yield ``(rows, anchors, cols)`` slices covering every (sequence, anchor) once.

    ``cols`` is the range of partners b, c an anchor block can reach: everything, or the anchors
    widened by the window on both sides. Blocks hold about ``block_elements`` entries
    (rows x anchors x cols x cols).
    """
    banded = window is not None and 2 * window + 1 < length
    per_anchor = length * length
    if banded:
        anchors_per_block = max(1, min(length, window))
    else:
        anchors_per_block = max(1, min(length, block_elements // per_anchor))
    for a0 in range(0, length, anchors_per_block):
        a1 = min(length, a0 + anchors_per_block)
        c0, c1 = (max(0, a0 - window), min(length, a1 + window)) if banded else (0, length)
        rows_per_block = max(1, min(batch, block_elements // ((a1 - a0) * (c1 - c0) ** 2)))
        for r0 in range(0, batch, rows_per_block):
            yield slice(r0, min(batch, r0 + rows_per_block)), slice(a0, a1), slice(c0, c1)


def check_block_elements(block_elements: int | None, device: torch.device) -> int:
    """The block size to use: the device default for None, else a validated positive int."""
    if block_elements is None:
        return CPU_BLOCK_ELEMENTS if device.type == "cpu" else DEVICE_BLOCK_ELEMENTS
    if isinstance(block_elements, bool) or not isinstance(block_elements, int) or block_elements < 1:
        raise ValueError(f"block_elements={block_elements!r} must be a positive int (entries per block) or None")
    return block_elements

