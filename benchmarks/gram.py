"""Gram-matrix speed and memory: the fused engine and the tensor path against a baseline.

The baseline, run in the same process on the same inputs, is the published algorithm's shape:
an eager full-matrix scan over equal lengths that carries ``L`` dense ``N x N'`` matrices (and
the self-term vectors) and applies one tensor operation per term of the recursion. Variable
lengths (uniform over ``[T/4, T]``) are given to the baseline padded to ``T``, the cost such an
algorithm pays for them.

For each case it prints seconds, pair-steps-layers per second (``N^2 T L`` over the seconds, the
whole matrix counted even where symmetry halves the work), peak memory beyond the output and the
speed-up over the baseline; with ``--fresh``, also the first and the steady calls' seconds in a
new Python process (what a script pays, loading or compiling the compiled loop included).
``--engine`` chooses the engine timed (default ``fused``; ``auto`` is what users get). Where
the baseline would take long it is timed on the first rows only and scaled by ``N / rows`` (its
cost is exactly linear in rows); the table says so.

    python benchmarks/gram.py                          # CPU grid of issue 5 (long)
    python benchmarks/gram.py --sizes 1000 --steps 150 --layers 1 --nonlinearities relu \\
        --dtypes float32 --engine auto --fresh         # the CPU target case
    python benchmarks/gram.py --device cuda --sizes 10000 --steps 150 --layers 2
    python benchmarks/gram.py --memory 20000 100      # peak memory of one large Gram
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel

VARIANCES = {"relu": (1.8, 1.0, 0.1), "erf": (1.0, 1.0, 0.1)}
# H100 SXM: FP32 (non-tensor-core) peak 67 TFLOP/s. The fused kernel's inner cell (one pair,
# step and layer) takes about 40 floating-point operations counting arccos (or arcsin) and each
# square root as one: an estimate, stated as such in the output.
H100_FP32_PEAK = 67e12
OPS_PER_CELL = 40


def baseline_gram(x1, x2, variances, nonlinearity: str, num_layers: int) -> torch.Tensor:
    """The eager full-matrix scan (equal lengths): one tensor operation per term."""
    sw2, su2, sb2 = variances
    steps, m = x1.shape[-2:]

    def dual(k12, k11, k22):
        if nonlinearity == "relu":
            norm = torch.sqrt(k11) * torch.sqrt(k22)
            cos = torch.clamp(k12 / norm, -1, 1)
            theta = torch.arccos(cos)
            v = norm * (torch.sin(theta) + (math.pi - theta) * cos) / (2 * math.pi)
            return v, (math.pi - theta) / (2 * math.pi)
        prod = (1 + 2 * k11) * (1 + 2 * k22)
        v = 2 / math.pi * torch.arcsin(2 * k12 / torch.sqrt(prod))
        return v, 4 / math.pi / torch.sqrt(prod - 4 * k12 * k12)

    cross, th = [None] * num_layers, [None] * num_layers
    selves1, selves2 = [None] * num_layers, [None] * num_layers
    for t in range(steps):
        below = x1[:, t] @ x2[:, t].T / m
        below1 = (x1[:, t] * x1[:, t]).sum(-1) / m
        below2 = (x2[:, t] * x2[:, t]).sum(-1) / m
        below_th = below_vd = None
        for layer in range(num_layers):
            if t == 0:
                s = su2 * below + sb2
                s1 = su2 * below1 + sb2
                s2 = su2 * below2 + sb2
                theta_new = s.clone()
            else:
                v, vd = dual(cross[layer], selves1[layer][:, None], selves2[layer][None, :])
                v1 = dual(selves1[layer], selves1[layer], selves1[layer])[0]
                v2 = dual(selves2[layer], selves2[layer], selves2[layer])[0]
                s = sw2 * v + su2 * below + sb2
                s1 = sw2 * v1 + su2 * below1 + sb2
                s2 = sw2 * v2 + su2 * below2 + sb2
                theta_new = s + sw2 * vd * th[layer]
            if below_th is not None:
                theta_new = theta_new + su2 * below_vd * below_th
            cross[layer], selves1[layer], selves2[layer], th[layer] = s, s1, s2, theta_new
            below, below_vd = dual(s, s1[:, None], s2[None, :])
            below1 = dual(s1, s1, s1)[0]
            below2 = dual(s2, s2, s2)[0]
            below_th = theta_new
    v, vd = dual(cross[-1], selves1[-1][:, None], selves2[-1][None, :])
    return v + vd * th[-1]


class PeakMemory:
    """Peak memory above the level at entry: CUDA's allocator statistics, or on the CPU the
    resident set size sampled every millisecond from /proc (the allocator's own free lists
    count as used, so this is an upper bound)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self.peak = _rss()
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.start
        else:
            self.running = False
            self.thread.join()
            self.bytes = max(self.peak, _rss()) - self.start


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_inputs(n, steps, dtype, device, variable, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, steps, 1, generator=gen, dtype=dtype)
    if variable:
        lengths = torch.randint(max(1, steps // 4), steps + 1, (n,), generator=gen)
        x = x * (torch.arange(steps) < lengths[:, None]).unsqueeze(-1)
    else:
        lengths = torch.full((n,), steps)
    return x.to(device), lengths.to(device)


def timed(fn, device):
    _sync(device)
    start = time.perf_counter()
    with PeakMemory(device) as memory:
        out = fn()
        _sync(device)
    return time.perf_counter() - start, memory.bytes, out


def best_of(fn, device, repeats: int = 1) -> tuple[float, torch.Tensor]:
    """The fastest of ``repeats`` calls (:func:`timed`) and its result."""
    seconds, _, out = min((timed(fn, device) for _ in range(repeats)), key=lambda r: r[0])
    return seconds, out


def variances_of(nonlinearity: str, dtype, device) -> RecurrentVariances:
    """The benchmark's variances for ``nonlinearity`` as tensors of ``dtype`` on ``device``."""
    return RecurrentVariances(
        *(torch.tensor(v, dtype=dtype, device=device) for v in VARIANCES[nonlinearity])
    )


def fresh_first_call(engine: str, threads: int, **case) -> tuple[float, float]:
    """The first call's and the best of the next two calls' seconds of one Gram matrix
    (:func:`fresh_case`) in a new Python process: what a user's script pays, including
    loading a compiled loop from the on-disk cache (or compiling it)."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import torch; "
        f"torch.set_num_threads({threads}); from gram import fresh_case; "
        f"print(*fresh_case({engine!r}, **{case!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True
    )
    first, steady = out.stdout.split()[-2:]
    return float(first), float(steady)


def fresh_case(engine, n, steps, layers, nonlinearity, dtype, device, variable, readout="last"):
    """Seconds of the first and the best of the next two calls (see :func:`fresh_first_call`)."""
    dtype, device = getattr(torch, dtype.removeprefix("torch.")), torch.device(device)
    x, lengths = make_inputs(n, steps, dtype, device, variable)
    variances = variances_of(nonlinearity, dtype, device)
    options = dict(nonlinearity=nonlinearity, num_layers=layers, readout=readout, engine=engine)
    with torch.no_grad():
        calls = [
            timed(lambda: recurrent_kernel(x, lengths, x, lengths, variances, **options), device)
            for _ in range(3)
        ]
    return calls[0][0], min(c[0] for c in calls[1:])


def run_case(n, steps, layers, nonlinearity, dtype, device, variable, args):
    x, lengths = make_inputs(n, steps, dtype, device, variable)
    sw2, su2, sb2 = VARIANCES[nonlinearity]
    variances = variances_of(nonlinearity, dtype, device)
    options = dict(nonlinearity=nonlinearity, num_layers=layers)

    def fused_call():
        return recurrent_kernel(x, lengths, x, lengths, variances, engine=args.engine, **options)

    with torch.no_grad():
        # The first call compiles (Triton, or Inductor on the CPU) and warms caches: timed
        # apart; then the best of --repeats calls.
        first_call_s, _, _ = timed(fused_call, device)
        runs = [timed(fused_call, device) for _ in range(args.repeats)]
        fused_s, fused_mem, fused = min(runs, key=lambda r: r[0])
        out_bytes = fused.numel() * fused.element_size()
        rows = n
        baseline_cells = n * n * steps * layers
        if baseline_cells > args.baseline_cap:
            rows = max(16, int(n * args.baseline_cap / baseline_cells))
        base_s, base_mem, base = timed(
            lambda: baseline_gram(x[:rows], x, (sw2, su2, sb2), nonlinearity, layers), device
        )
        base_s *= n / rows
        tensor_s = None
        if args.tensor and n * n * steps * layers <= args.baseline_cap:
            tensor_s, _, _ = timed(
                lambda: recurrent_kernel(
                    x, lengths, x, lengths, variances, engine="tensor", **options
                ),
                device,
            )
    fresh = (None, None)
    if args.fresh:
        case = dict(n=n, steps=steps, layers=layers, nonlinearity=nonlinearity)
        case.update(dtype=str(dtype), device=str(device), variable=variable)
        fresh = fresh_first_call(args.engine, torch.get_num_threads(), **case)
    if not variable and rows == n:  # same inputs, same kernel: the values must agree
        # off the diagonal: on it the baseline's arccos of a rounded 1 is off by O(sqrt(eps))
        off = ~torch.eye(n, dtype=torch.bool, device=device)
        error = ((fused - base)[off].abs().max() / base.abs().max()).item()
    else:
        error = float("nan")
    rate = n * n * steps * layers / fused_s
    row = dict(
        N=n,
        T=steps,
        L=layers,
        phi=nonlinearity,
        dtype=str(dtype).removeprefix("torch."),
        lengths="[T/4,T]" if variable else "T",
        fused_s=fused_s,
        first_call_s=first_call_s,
        fresh_first_s=fresh[0],
        fresh_steady_s=fresh[1],
        cells_per_s=rate,
        peak_MiB=(fused_mem - out_bytes) / 2**20,
        baseline_s=base_s,
        baseline_rows=rows,
        speedup=base_s / fused_s,
        tensor_s=tensor_s,
        max_rel_diff=error,
    )
    if device.type == "cuda":
        row["fp32_peak_frac"] = rate * OPS_PER_CELL / H100_FP32_PEAK
    return row


def memory_check(n, steps, device, dtype):
    x, lengths = make_inputs(n, steps, dtype, device, variable=False)
    variances = variances_of("relu", dtype, device)
    recurrent_kernel(x[:1024], lengths[:1024], x[:1024], lengths[:1024], variances, engine="fused")
    seconds, peak, out = timed(
        lambda: recurrent_kernel(x, lengths, x, lengths, variances, engine="fused"), device
    )
    out_mib = out.numel() * out.element_size() / 2**20
    print(
        f"memory: N={n} T={steps} {dtype} on {device}: {seconds:.1f} s, output {out_mib:.0f} "
        f"MiB, peak beyond the output {(peak / 2**20) - out_mib:.0f} MiB"
    )


def add_triton_tile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--triton-tile",
        type=int,
        nargs=3,
        metavar=("ROWS", "COLS", "WARPS"),
        help="one program's tile and warps in the Triton kernel (CUDA)",
    )


def use_triton_tile(tile, dtypes, forward_mode: bool) -> None:
    """Run the Triton kernel (values, or forward mode) on ``tile`` for ``dtypes``, whatever
    the readout and depth (``triton_kernels.tiles``, which the launcher asks, answers it)."""
    if tile:
        from gpytorch_rntk._core.engines import triton_kernels as _triton

        default = _triton.tiles

        def tiles(dtype, mode, readout="last", num_layers=1):
            if dtype in dtypes and mode == forward_mode:
                return tuple(tile)
            return default(dtype, mode, readout, num_layers)

        _triton.tiles = tiles


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 150, 500])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--nonlinearities", nargs="+", default=["relu", "erf"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--variable", choices=["no", "yes", "both"], default="both")
    parser.add_argument(
        "--baseline-cap",
        type=float,
        default=2e9,
        help="time the baseline on fewer rows above this many pair-steps-layers",
    )
    parser.add_argument("--tensor", action="store_true", help="also time the tensor path")
    parser.add_argument(
        "--engine", default="fused", help="the engine timed (fused, auto, compiled, ...)"
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="also time the first and the steady calls in a new process (fresh_first_s, "
        "fresh_steady_s): loading or compiling included",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed fused calls (best kept)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory", type=int, nargs=2, metavar=("N", "T"))
    add_triton_tile_option(parser)
    args = parser.parse_args(argv)
    use_triton_tile(args.triton_tile, (torch.float32, torch.float64), forward_mode=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"device {device}"
        + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
        + f", torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if args.memory:
        memory_check(*args.memory, device, torch.float32)
        return
    variable = {"no": [False], "yes": [True], "both": [False, True]}[args.variable]
    columns = None
    for n in args.sizes:
        for steps in args.steps:
            for layers in args.layers:
                for nl in args.nonlinearities:
                    for dt in args.dtypes:
                        for var in variable:
                            row = run_case(
                                n, steps, layers, nl, getattr(torch, dt), device, var, args
                            )
                            if columns is None:
                                columns = list(row)
                                print("| " + " | ".join(columns) + " |")
                                print("|" + "---|" * len(columns))
                            print(
                                "| " + " | ".join(_fmt(row[c]) for c in columns) + " |", flush=True
                            )


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return "-" if value is None else str(value)


if __name__ == "__main__":
    main()
