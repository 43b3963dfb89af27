"""The compiled engine's built CPU loop against the tensor engine on small Gram matrices, in one
process: where ``engine="auto"`` should use the package once it is built.

Each case times ``engine="tensor"`` and ``engine="compiled"`` (best of ``--repeats`` after one
untimed call; the compiled engine's packages must be built, e.g. by ``python -m
gpytorch_rntk.warmup``, or its first call builds them) on ``K(x, x)`` of N sequences with
lengths drawn from ``[T/2, T]``: ReLU values in float32 and float64 (last readout), the mean
readout's values in float64, and an erf fit's value and gradients for three variances in
float64 (``sequence_gp``'s defaults). Prints the seconds and their ratio; say what else ran on
the machine when you quote them.

    python benchmarks/small_sizes.py
"""

from __future__ import annotations

import argparse
import warnings
from functools import partial

import torch
from gram import best_of  # (beside this script)

from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel

CASES = (
    ("last", "relu", torch.float32, False),
    ("last", "relu", torch.float64, False),
    ("mean", "relu", torch.float64, False),
    ("last", "erf", torch.float64, True),
)
SIZES = ((8, 20), (16, 30), (32, 50), (64, 50), (128, 50), (256, 50))


def _gram(x, lengths, readout, nonlinearity, grad, engine) -> None:
    variances = RecurrentVariances(
        *(torch.tensor(v, dtype=x.dtype, requires_grad=grad) for v in (1.8, 1.0, 0.1))
    )
    k = recurrent_kernel(
        x, lengths, x, lengths, variances, engine=engine, readout=readout, nonlinearity=nonlinearity
    )
    if grad:
        k.sum().backward()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--largest-mean", type=int, default=128, help="the mean readout's N")
    parser.add_argument(
        "--sizes", nargs="+", default=[f"{n},{t}" for n, t in SIZES], help="N,T pairs"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    warnings.simplefilter("ignore")  # (a CompilationWarning where a package is built)
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads")
    print("| readout | phi | dtype | what | N | T | tensor_s | compiled_s | tensor / compiled |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for readout, nonlinearity, dtype, grad in CASES:
        for n, steps in (map(int, size.split(",")) for size in args.sizes):
            if readout == "mean" and n > args.largest_mean:
                continue
            x = torch.randn(n, steps, 1, generator=generator, dtype=dtype)
            lengths = torch.randint(steps // 2, steps + 1, (n,), generator=generator)

            case = partial(_gram, x, lengths, readout, nonlinearity, grad)
            case("tensor"), case("compiled")  # (untimed: first calls)
            tensor = best_of(partial(case, "tensor"), device, args.repeats)[0]
            compiled = best_of(partial(case, "compiled"), device, args.repeats)[0]
            print(
                f"| {readout} | {nonlinearity} | {str(dtype).removeprefix('torch.')} | "
                f"{'value+grad' if grad else 'value'} | {n} | {steps} | {tensor:.4f} | "
                f"{compiled:.4f} | {tensor / compiled:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
