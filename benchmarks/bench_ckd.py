"""Benchmark of the CKD word-relation triplet (angle) loss: forward + backward on CPU.

Compares, on the same random tensors (teacher and student width d = 768, 7 layer pairs):

* naive     - all triplets from explicit ``[N, L, L, d]`` difference vectors (N = B x layers),
              the way the official ``WR_Angle`` does it, with the exact masks of
              ``ckdlab.objectives.ckd.wr_triplet_loss`` (so its value must equal "ours, all");
* official  - the official windowed ``WR_Angle_window`` (21-token window, w = 10) as written in
              github.com/GeondoPark/CKD: neighbours gathered into ``[N, L, 21, d]`` difference
              tensors with clamped indices. Its value differs from ours by design (it duplicates
              edge tokens and ignores padded neighbours);
* ours      - ``wr_triplet_loss`` with all triplets, and with ``window=10``.

All methods get the states as per-layer lists (what ``outputs.hidden_states`` gives); the two
references stack them into ``[B, layers, L, d]`` themselves, as the official pipeline does.

Each (configuration, method) runs in a fresh subprocess with ``--threads`` torch threads
(default 1: on the shared 2-core development VM every parallel region costs about 1 ms of
thread wake-up, and far more when other processes hold the cores, so two-thread timings there
measure the machine's load rather than the code). Of ``--reps`` calls of loss + backward after one warm-up, the fastest is reported, as
wall time and as process CPU time; ratios use CPU time, which with one thread is the compute
time and does not count time spent waiting for the CPU. Peak extra memory = the process's peak resident set size
(VmHWM) during those calls minus its resident size just before them, with the peak counter
reset through /proc/self/clear_refs, so it covers everything the calls allocate (torch's CPU
allocator returns large blocks to the OS, so RSS follows live tensors) but not the inputs.
Methods whose estimated peak exceeds ``--max-gb`` are skipped.

``--busy`` prints instead how the losses fare on a busy machine: a competing process (a torch
matmul loop with torch's default threads) keeps the cores busy while each cell runs, again each in
a fresh process, idle and busy, with one thread and with torch's default threads. Cells are the
all-triplet WR angle loss, the official windowed code, and ``CKDLoss`` as the distillation engine
calls it (all four terms, per-call weights, teacher Grams memoised from the warm-up call); the
number is the *median* wall time of ``--reps`` calls (under load, CPU time counts spinning threads
and the fastest call hides the stalls). ``threads`` "default" leaves torch's setting alone: the
package then applies its own (one thread for the CKD kernels, see ``ckdlab.objectives.ckd.threads``).

Usage: python benchmarks/bench_ckd.py [--quick] [--reps 3] [--max-gb 8] [--threads 1]
       python benchmarks/bench_ckd.py --busy [--reps 5] [--busy-shape 4 96]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

N_LAYERS = 7
WIDTH = 768
WINDOW = 10
FULL_CONFIGS = [(4, 96), (8, 128), (32, 128)]
QUICK_CONFIGS = [(2, 48)]
METHODS = ["naive", "official", "ours_all", "ours_w10"]
LABELS = {
    "naive": "naive all (B,L,L,d)",
    "official": "official w=10 (B,L,21,d)",
    "ours_all": "ours all triplets",
    "ours_w10": "ours w=10",
}


# --------------------------------------------------------------------------- the two references


def naive_all_triplets(t, s, mask):
    """All triplets from [N, L, L, d] differences (the official WR_Angle layout), exact masks."""
    import torch
    import torch.nn.functional as F

    bsz, layers, length, dim = t.shape
    t = t.reshape(-1, length, dim)
    s = s.reshape(-1, length, s.shape[-1])
    valid = mask.bool().unsqueeze(1).expand(bsz, layers, length).reshape(-1, length)
    eye = torch.eye(length, dtype=torch.bool)
    distinct = ~eye[:, :, None] & ~eye[:, None, :] & ~eye[None, :, :]
    m = (valid[:, :, None, None] & valid[:, None, :, None] & valid[:, None, None, :] & distinct).float()
    with torch.no_grad():
        t_sub = F.normalize(t.unsqueeze(1) - t.unsqueeze(2), p=2, dim=3).view(-1, length, dim)
        t_angle = torch.bmm(t_sub, t_sub.transpose(1, 2)).view(-1, length, length, length) * m
    s_sub = F.normalize(s.unsqueeze(1) - s.unsqueeze(2), p=2, dim=3).view(-1, length, s.shape[-1])
    s_angle = torch.bmm(s_sub, s_sub.transpose(1, 2)).view(-1, length, length, length) * m
    return F.mse_loss(s_angle, t_angle, reduction="sum") / m.sum()


def official_window(t, s, mask, window=2 * WINDOW + 1):
    """WR_Angle_window of the official code, kept as written (clamped indices, mask on anchors only)."""
    import torch
    import torch.nn.functional as F

    bsz, layer_num, max_len, dim = t.shape
    sdim = s.shape[-1]
    t = t.reshape(-1, max_len, dim)
    s = s.reshape(-1, max_len, sdim)
    new_bsz = bsz * layer_num
    half = (window - 1) // 2
    idx = torch.arange(max_len).view(1, -1, 1) + torch.arange(-half, half + 1).view(1, 1, -1)
    idx = idx.clamp(0, max_len - 1).expand(new_bsz, max_len, window) + torch.arange(new_bsz).view(-1, 1, 1) * max_len
    t_round = t.reshape(new_bsz * max_len, -1)[idx, :]
    s_round = s.reshape(new_bsz * max_len, -1)[idx, :]
    m = mask.float().unsqueeze(2).unsqueeze(3).repeat(1, 1, window, window)
    m = m.unsqueeze(1).repeat(1, layer_num, 1, 1, 1).view(-1, max_len, window, window)
    with torch.no_grad():
        t_sub = F.normalize(t.unsqueeze(2) - t_round, p=2, dim=3).view(-1, window, dim)
        t_angle = torch.bmm(t_sub, t_sub.transpose(1, 2)).view(new_bsz, max_len, window, window) * m
    s_sub = F.normalize(s.unsqueeze(2) - s_round, p=2, dim=3).view(-1, window, sdim)
    s_angle = torch.bmm(s_sub, s_sub.transpose(1, 2)).view(new_bsz, max_len, window, window) * m
    return F.mse_loss(s_angle, t_angle, reduction="sum") / m.sum().item()


def estimated_gb(method: str, batch: int, length: int) -> float:
    """Rough peak of a reference: its largest [.., d] tensor times the number alive at once
    (calibrated on measured runs: ~7 for the naive one, ~6.5 for the official one)."""
    n = batch * N_LAYERS
    if method == "naive":
        return 7.0 * n * length * length * WIDTH * 4 / 2**30
    if method == "official":
        return 6.5 * n * length * (2 * WINDOW + 1) * WIDTH * 4 / 2**30
    return 0.0


# --------------------------------------------------------------------------- worker (one fresh process per cell)


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def worker(method: str, batch: int, length: int, reps: int, threads: int) -> dict:
    """Time ``reps`` forward + backward calls after one warm-up; ``threads`` 0 = torch's default."""
    import torch

    from ckdlab.objectives.ckd import CKDLoss, wr_triplet_loss

    if threads > 0:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    teacher = [torch.randn(batch, length, WIDTH, generator=gen) for _ in range(N_LAYERS)]
    student = [torch.randn(batch, length, WIDTH, generator=gen).requires_grad_(True) for _ in range(N_LAYERS)]
    lengths = torch.randint(length // 2, length + 1, (batch,), generator=gen)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()

    if method == "naive":
        def step():
            return naive_all_triplets(torch.stack(teacher, dim=1), torch.stack(student, dim=1), mask)
    elif method == "official":
        def step():
            return official_window(torch.stack(teacher, dim=1), torch.stack(student, dim=1), mask)
    elif method == "ckdloss":
        # As the engine calls it: hidden-states tuples (index 0 = embeddings), per-call weights,
        # dataset rows for the teacher memo (filled by the warm-up call, as from the second epoch).
        ckd = CKDLoss(layer_map=[(k, k) for k in range(1, N_LAYERS + 1)], memoize_teacher=True)
        weights = {"wr_pair": 1.0, "wr_triplet": 1.0, "ltr_pair": 1.0, "ltr_triplet": 1.0}
        hidden_t, hidden_s, rows = (teacher[0], *teacher), (student[0], *student), torch.arange(batch)

        def step():
            return ckd.total(ckd(hidden_t, hidden_s, mask, rows=rows, weights=weights), weights=weights)
    else:
        window = None if method == "ours_all" else WINDOW

        def step():
            return wr_triplet_loss(teacher, student, mask, window=window)

    # One-off library set-up (thread pools, BLAS buffers) is not the loss's memory.
    x = torch.randn(64, 64, requires_grad=True)
    (x @ x).sum().backward()

    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    walls, cpus, value = [], [], None
    for _ in range(reps + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        loss = step()
        loss.backward()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        value = loss.item()
        for s in student:
            s.grad = None
        del loss
    peak = _status_kb("VmHWM")
    return {"wall": min(walls[1:]), "cpu": min(cpus[1:]), "median_wall": statistics.median(walls[1:]),
            "peak_mb": (peak - before) / 1024, "value": value, "threads": torch.get_num_threads()}


def compete() -> None:
    """The competing load of ``--busy``: matmuls in a loop with torch's default threads, until killed."""
    import torch

    x = torch.randn(1024, 1024)
    while True:
        x @ x


# --------------------------------------------------------------------------- driver


def run_cell(method: str, batch: int, length: int, reps: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, str(batch), str(length), "--reps", str(reps),
           "--threads", str(threads)]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


BUSY_METHODS = ["ours_all", "official", "ckdloss"]
BUSY_LABELS = {"ours_all": "ckdlab all triplets", "official": "official windowed (W = 21)",
               "ckdloss": "ckdlab CKDLoss, 4 terms + memo"}
BUSY_CONDITIONS = [("idle", 1), ("idle", 0), ("busy", 0), ("busy", 1)]  # threads 0 = torch's default


def busy_table(batch: int, length: int, reps: int) -> None:
    """Median wall time of each method, idle and next to a competing process, one fresh process per cell."""
    import torch

    cores = os.cpu_count()
    print(f"CKD on a busy machine: B = {batch}, L = {length}, d = {WIDTH}, {N_LAYERS} layer pairs, forward + backward, "
          f"float32, torch {torch.__version__}, {cores} cores")
    print(f"median wall time of {reps} calls after a warm-up, each cell in a fresh process; busy = a competing "
          f"process runs a 1024 x 1024 matmul loop with torch's default threads ({torch.get_num_threads()})\n")
    results: dict[tuple[str, int], dict[str, dict]] = {}
    loads: dict[str, list[float]] = {"idle": [], "busy": []}
    competitor = None
    try:
        for state, threads in BUSY_CONDITIONS:
            if state == "busy" and competitor is None:
                competitor = subprocess.Popen([sys.executable, __file__, "--compete"], stdout=subprocess.DEVNULL)
                time.sleep(2.0)  # let it reach its loop
            cell = {}
            for method in BUSY_METHODS:
                loads[state].append(os.getloadavg()[0])
                cell[method] = run_cell(method, batch, length, reps, threads)
            results[state, threads] = cell
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    names = {0: "default threads", 1: "1 thread"}
    header = f"{'':<32}" + "".join(f"{state + ', ' + names[threads]:>26}" for state, threads in BUSY_CONDITIONS)
    print(header)
    print("-" * len(header))
    errors = {}
    for method in BUSY_METHODS:
        cells = []
        for condition in BUSY_CONDITIONS:
            r = results[condition][method]
            if "error" in r:
                errors[BUSY_LABELS[method]] = r["error"]
            cells.append(f"{r['median_wall']:>24.3f} s" if "median_wall" in r else f"{'error':>26}")
        print(f"{BUSY_LABELS[method]:<32}" + "".join(cells))
    ratios = []
    for condition in BUSY_CONDITIONS:
        ours, official = results[condition]["ours_all"], results[condition]["official"]
        ok = "median_wall" in ours and "median_wall" in official
        ratios.append(f"{official['median_wall'] / ours['median_wall']:>25.1f}x" if ok else f"{'':>26}")
    print(f"{'official / ckdlab all triplets':<32}" + "".join(ratios))
    for state in ("idle", "busy"):
        print(f"load average (1 min) while {state} cells ran: {min(loads[state]):.1f} to {max(loads[state]):.1f} "
              f"on {cores} cores")
    for label, error in errors.items():
        print(f"error in {label}: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small configuration (~20 s)")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per cell (default 3, quick 2)")
    parser.add_argument("--max-gb", type=float, default=8.0, help="skip references estimated above this peak")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measurement (default 1)")
    parser.add_argument("--busy", action="store_true", help="idle vs busy table (a competing process), ~2 min")
    parser.add_argument("--busy-shape", nargs=2, type=int, default=[4, 96], metavar=("B", "L"),
                        help="batch size and length of the --busy table (default 4 96)")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "B", "L"), help=argparse.SUPPRESS)
    parser.add_argument("--compete", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    reps = args.reps or (2 if args.quick else 5 if args.busy else 3)

    if args.compete:
        compete()
        return
    if args.worker:
        method, batch, length = args.worker[0], int(args.worker[1]), int(args.worker[2])
        print(json.dumps(worker(method, batch, length, reps, args.threads)))
        return
    if args.busy:
        busy_table(*args.busy_shape, reps)
        return

    import torch

    configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
    print(f"CKD WR triplet loss, forward + backward, CPU, torch {torch.__version__}, {args.threads} thread(s) per run, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"teacher/student width {WIDTH}, {N_LAYERS} layer pairs, float32, random lengths in [L/2, L]; "
          f"times = fastest of {reps} runs after a warm-up (wall and process CPU); ratios use CPU time")
    print("peak extra = peak RSS (VmHWM, reset via /proc/self/clear_refs) minus RSS before the calls, "
          "in a fresh process per cell\n")
    header = (f"{'B':>3} {'L':>4}  {'method':<26} {'wall s':>8} {'cpu s':>8} {'peak extra MB':>14} {'loss':>12}  "
              f"{'speed vs official':>17}  {'mem vs official':>15}")
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    for batch, length in configs:
        results = {}
        for method in METHODS:
            est = estimated_gb(method, batch, length)
            if est > args.max_gb:
                results[method] = {"skipped": f"skipped: ~{est:.0f} GB estimated > --max-gb {args.max_gb:g}"}
            else:
                # the naive reference is only a cross-check and by far the slowest: one timed call
                results[method] = run_cell(method, batch, length, 1 if method == "naive" else reps, args.threads)
        official = results["official"]
        for method in METHODS:
            r = results[method]
            label = LABELS[method]
            if "skipped" in r or "error" in r:
                print(f"{batch:>3} {length:>4}  {label:<26} {r.get('skipped') or 'error: ' + r['error']}")
                continue
            if "cpu" in official and method.startswith("ours"):
                ratio_t = f"{official['cpu'] / r['cpu']:.1f}x faster"
                ratio_m = f"{r['peak_mb'] / max(official['peak_mb'], 1e-9):.3f}"
            else:
                ratio_t = ratio_m = ""
            print(f"{batch:>3} {length:>4}  {label:<26} {r['wall']:>8.3f} {r['cpu']:>8.3f} {r['peak_mb']:>14.1f} "
                  f"{r['value']:>12.6g}  {ratio_t:>17}  {ratio_m:>15}")
        if "value" in results["naive"] and "value" in results["ours_all"]:
            rel = abs(results["naive"]["value"] - results["ours_all"]["value"]) / abs(results["naive"]["value"])
            print(f"{'':>10}check: ours-all vs naive loss, relative difference {rel:.1e}")
        print()
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
