"""How many CPU threads the CKD kernels use: one by default, set and restored by the package.

Why. On CPU every torch operation above its grain size (32768 elements) runs as an OpenMP
parallel region, and libgomp's default wait policy makes a thread that reaches the region's end
spin for the others. When another process keeps the cores busy, a thread of the region is
descheduled and the region waits for a scheduler time slice: measured on the 2-core development VM
with a competing 2-thread matmul process, one ``mul_`` on 40,000 floats took 13.5 ms with 2 threads
against 11 us with one (``OMP_WAIT_POLICY=PASSIVE`` also brought it to 12-28 us, but libgomp reads
that only at start-up, so a library cannot set it). CKD's kernels are a few hundred such
operations per call on ``[K, B, L, L]`` tensors. Measured (d = 768, 7 layer pairs, forward +
backward): on a nearly idle machine a second thread made the all-triplet WR loss 1.5x faster
(0.042 against 0.065 s at B = 4, L = 96), with other agents' load (load average ~5 on 2 cores)
one thread made the whole ``CKDLoss`` 2-4x faster (0.37 against 1.62 s at B = 4, L = 96; 3.8
against 8.0 s at B = 32, L = 128), and next to a competing process the multi-threaded kernels
stalled up to 100x. So the package runs them with ``threads`` = 1 (:data:`KERNEL_THREADS`),
whatever torch's global setting is, and restores that setting afterwards; ``threads=None`` keeps
torch's setting (for a machine known to be otherwise idle).

How. :func:`kernel_threads` lowers ``torch.set_num_threads`` for the duration of a block on CPU
(never raises it; accelerators are untouched). The backward pass of the kernels runs later, inside
the caller's ``loss.backward()``, so :func:`run_scoped` wraps the student side of a loss in one
autograd node (:class:`_ScopedKernels`): its forward builds the kernels' graph inside the scope,
and its backward differentiates that graph, again inside the scope. Gradients are exact (they are
autograd's own); they are first order only, as the huber angle loss always was. A second backward
through a retained graph recomputes the kernels' forward first.

The setting is process-wide for torch's thread pool of the calling thread; code that runs torch
concurrently in other Python threads while a CKD loss is computed may see one thread meanwhile.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ckdlab.objectives.relations import full_precision

KERNEL_THREADS = 1

Kernels = Callable[[list[Tensor]], tuple[Tensor, ...]]


def check_threads(threads: int | None) -> int | None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(
            f"threads={threads!r} must be a positive int (CPU threads for the CKD kernels, default "
            f"{KERNEL_THREADS}) or None (keep torch's own setting)"
        )
    return threads


@contextlib.contextmanager
def kernel_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """At most ``threads`` intra-op threads on CPU inside the block; torch's setting is restored after.

    None, a non-CPU device, or a limit at or above the current setting leave everything as it is.
    """
    before = torch.get_num_threads()
    if threads is None or device.type != "cpu" or threads >= before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_scoped(kernels: Kernels, student: Sequence[Tensor], threads: int | None,
               device: torch.device) -> tuple[Tensor, ...]:
    """``kernels(student)`` with forward *and* backward under :func:`kernel_threads`.

    ``kernels`` maps the student's states to the loss terms; everything else it needs (teacher
    relations, masks, options) it closes over as constants.
    """
    states = list(student)
    if not (torch.is_grad_enabled() and any(s.requires_grad for s in states)):
        with kernel_threads(threads, device), full_precision(device):
            return tuple(kernels(states))
    return _ScopedKernels.apply(kernels, threads, device, *states)


class _ScopedKernels(torch.autograd.Function):
    """One autograd node around the kernels' own graph, so that its backward runs in the scope too."""

    @staticmethod
    def forward(ctx, kernels: Kernels, threads: int | None, device: torch.device, *student: Tensor):
        ctx.kernels, ctx.threads, ctx.device = kernels, threads, device
        # Detached views of the inputs: the inner graph ends here, and its gradients come back
        # through this node's backward.
        ctx.inputs = [s.detach().requires_grad_(s.requires_grad) for s in student]
        ctx.outputs = _build(ctx)
        return tuple(o.detach() for o in ctx.outputs)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor):
        outputs = ctx.outputs if ctx.outputs is not None else _build(ctx)
        ctx.outputs = None  # the inner graph is consumed below; a second backward rebuilds it
        wanted = [(o, g) for o, g in zip(outputs, grads) if o.requires_grad]
        inputs = [x for x in ctx.inputs if x.requires_grad]
        if not wanted:
            return (None,) * (3 + len(ctx.inputs))
        with kernel_threads(ctx.threads, ctx.device):
            found = iter(torch.autograd.grad([o for o, _ in wanted], inputs, [g for _, g in wanted],
                                             allow_unused=True))
        return (None, None, None, *(next(found) if x.requires_grad else None for x in ctx.inputs))


def _build(ctx) -> tuple[Tensor, ...]:
    with torch.enable_grad(), kernel_threads(ctx.threads, ctx.device), full_precision(ctx.device):
        return tuple(ctx.kernels(ctx.inputs))
