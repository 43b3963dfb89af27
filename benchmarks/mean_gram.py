"""Mean-readout Gram matrices and their variance gradients: fused engine against tensor path.

Both run in the same process on the same inputs; the tensor path (``engine="tensor"``, the
reference) is the baseline. For each case it prints seconds for the Gram matrix alone and for
the Gram matrix plus the gradient of ``sum(K * W)`` for the three variances (the fused engine's
forward mode, the tensor path's checkpointed reverse mode), time pairs per second (``N N' T^2``
over the seconds), the speed-ups and the largest difference between the engines, relative to
the largest entry of the Gram matrix or to each gradient.
The fused engine's first call (compilation) is timed apart and excluded; ``--fresh`` also
times the first and the steady calls of the Gram matrix in a new Python process (loading or
compiling the compiled loop included), ``--engine auto`` what users get by default.

    python benchmarks/mean_gram.py                              # N = 100, T = 100, CPU
    python benchmarks/mean_gram.py --sizes 200 --engine auto --fresh   # the CPU target case
    python benchmarks/mean_gram.py --device cuda --sizes 100 1000 --steps 100 400

At large sizes the tensor path's gradient is out of reach (minutes, or the GPU's memory):
``--no-tensor-grad`` times the engine's gradient alone (checked against the tensor path by the
tests at small sizes). On CUDA the last column is the fraction of an H100's (or H200's) FP32
peak, at 40 operations per time-pair cell (as ``gram.py`` counts a step).
"""

from __future__ import annotations

import argparse
from functools import partial

import torch
from gram import (  # benchmarks/gram.py, beside this script
    H100_FP32_PEAK,
    OPS_PER_CELL,
    best_of,
    fresh_first_call,
    timed,
)

from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel


def gram_and_gradient(x, lengths, engine: str, grad: bool, weights):
    variances = [
        torch.tensor(v, dtype=x.dtype, device=x.device, requires_grad=grad) for v in (1.8, 1.0, 0.1)
    ]
    k = recurrent_kernel(
        x, lengths, x, lengths, RecurrentVariances(*variances), readout="mean", engine=engine
    )
    if not grad:
        return k
    grads = torch.autograd.grad((k * weights).sum(), variances)
    return torch.cat([k.detach().flatten(), torch.stack(grads)])


COLUMNS = (
    "N | T | fused_s | tensor_s | speedup | fused+grad_s | tensor+grad_s | speedup | "
    "grad/value (fused) | pairs_per_s | first_call_s | fresh_first_s | fresh_steady_s | "
    "max_rel_diff | fp32_peak_frac"
)


def run_case(
    n: int,
    steps: int,
    dtype,
    device,
    variable: bool,
    repeats: int,
    engine: str,
    fresh: bool,
    tensor_grad: bool = True,
) -> str:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.full((n,), steps)
    if variable:
        lengths = torch.randint(steps // 4, steps + 1, (n,), generator=gen)
    x = torch.randn(n, steps, 1, generator=gen, dtype=dtype)
    x = (x * (torch.arange(steps) < lengths[:, None]).unsqueeze(-1)).to(device)
    weights = torch.randn(n, n, generator=gen, dtype=dtype).to(device)
    lengths = lengths.to(device)
    seconds, errors, first = {}, [], 0.0
    for grad in (False, True):
        fused = partial(gram_and_gradient, x, lengths, engine, grad, weights)
        first = max(first, timed(fused, device)[0])
        seconds["fused", grad], k_fused = best_of(fused, device, repeats)
        if grad and not tensor_grad:
            seconds["tensor", grad] = float("nan")
            continue
        tensor = partial(gram_and_gradient, x, lengths, "tensor", grad, weights)
        seconds["tensor", grad], k_tensor = best_of(tensor, device)
        # (with gradients: the Gram matrix and the three gradients, each to its own scale)
        parts = [(k_fused, k_tensor)]
        if grad:
            parts = [(k_fused[:-3], k_tensor[:-3])] + list(
                zip(k_fused[-3:], k_tensor[-3:], strict=True)
            )
        errors += [((a - b).abs().max() / b.abs().max()).item() for a, b in parts]
    fresh_s = ("-", "-")
    if fresh:  # the same shapes in a new process (gram.py's inputs): loading or compiling
        case = dict(n=n, steps=steps, layers=1, nonlinearity="relu", dtype=str(dtype))
        case.update(device=str(device), variable=variable, readout="mean")
        fresh_s = [f"{t:.3g}" for t in fresh_first_call(engine, torch.get_num_threads(), **case)]
    pairs = n * n * float(lengths.double().mean()) ** 2
    cells = [
        n,
        f"{steps}{' (variable)' if variable else ''}",
        f"{seconds['fused', False]:.3g}",
        f"{seconds['tensor', False]:.3g}",
        f"{seconds['tensor', False] / seconds['fused', False]:.1f}",
        f"{seconds['fused', True]:.3g}",
        f"{seconds['tensor', True]:.3g}",
        f"{seconds['tensor', True] / seconds['fused', True]:.1f}",
        f"{seconds['fused', True] / seconds['fused', False]:.2f}",
        f"{pairs / seconds['fused', False]:.2e}",
        f"{first:.3g}",
        *fresh_s,
        f"{max(errors):.1e}",
        f"{pairs * OPS_PER_CELL / seconds['fused', False] / H100_FP32_PEAK:.3f}"
        if device.type == "cuda"
        else "-",
    ]
    return "| " + " | ".join(map(str, cells)) + " |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100])
    parser.add_argument("--steps", type=int, nargs="+", default=[100])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--variable", action="store_true", help="lengths uniform in [T/4, T]")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engine", default="fused", help="the engine timed against the tensor")
    parser.add_argument(
        "--fresh", action="store_true", help="also the first and steady calls in a new process"
    )
    parser.add_argument(
        "--no-tensor-grad",
        dest="tensor_grad",
        action="store_false",
        help="time the engine's gradient alone (the tensor path's is out of reach)",
    )
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    threads = torch.get_num_threads()
    print(f"device {device}, {args.dtype}, torch {torch.__version__}, {threads} threads")
    print(f"| {COLUMNS} |")
    print("|" + "---|" * len(COLUMNS.split("|")))
    for n in args.sizes:
        for steps in args.steps:
            row = run_case(
                n,
                steps,
                dtype,
                device,
                args.variable,
                args.repeats,
                args.engine,
                args.fresh,
                args.tensor_grad,
            )
            print(row, flush=True)


if __name__ == "__main__":
    main()
