"""The Triton kernel's speed on several tiles (rows x columns, warps), in one process.

Each tile is tried on the same inputs (equal lengths) for the values, or with ``--gradient``
the values and their forward-mode derivatives along the three variances: the best of
``--repeats`` calls after a first one (compiling), its ratio to the first tile listed (the
baseline, e.g. the one ``triton_kernels`` uses now) and, on CUDA, the fraction of an H100's (or
H200's) FP32 peak at 40 operations per cell (as ``gram.py`` counts). Registers and spills of a
tile, without a GPU: ``triton_registers.py --tile``.

    python benchmarks/triton_tiles.py --device cuda --n 10000 --t 150 --layers 2 \\
        --dtype float32 --tiles 32x64x4 32x32x4 16x64x4
    python benchmarks/triton_tiles.py --device cuda --readout mean --n 1000 --t 150 \\
        --tiles 32x32x8 16x32x4 --gradient
"""

from __future__ import annotations

import argparse

import torch
from gram import (  # beside this script
    H100_FP32_PEAK,
    OPS_PER_CELL,
    VARIANCES,
    best_of,
    make_inputs,
    use_triton_tile,
)

from gpytorch_rntk._core.engines import triton_kernels as _triton
from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel


def gram(x, lengths, layers: int, readout: str, gradient: bool) -> torch.Tensor:
    variances = [
        torch.tensor(v, dtype=x.dtype, device=x.device, requires_grad=gradient)
        for v in VARIANCES["relu"]
    ]
    k = recurrent_kernel(
        x, lengths, x, lengths, RecurrentVariances(*variances), num_layers=layers,
        readout=readout, engine="triton",
    )  # fmt: skip
    if gradient:
        torch.autograd.grad(k.sum(), variances)
    return k.detach()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--t", type=int, default=150)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--readout", default="last", choices=["last", "mean", "geometric"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--gradient", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiles", nargs="+", required=True, help="ROWSxCOLSxWARPS each")
    args = parser.parse_args(argv)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    x, lengths = make_inputs(args.n, args.t, dtype, device, variable=False)
    default = _triton.tiles
    cells = args.n**2 * args.layers * (args.t if args.readout == "last" else args.t**2)
    print(
        f"device {device}, N {args.n}, T {args.t}, L {args.layers}, relu, {args.readout} "
        f"readout, {args.dtype}, {'values and gradient' if args.gradient else 'values'}, "
        f"best of {args.repeats}"
    )
    print("| tile | seconds | baseline/tile | cells_per_s | fp32_peak_frac | max_rel_diff |")
    print("|---|---|---|---|---|---|")
    first = reference = None
    for tile in args.tiles:
        _triton.tiles = default  # (each tile on the kernel's own choice, not the previous one)
        use_triton_tile([int(v) for v in tile.split("x")], [dtype], args.gradient)
        run = lambda: gram(x, lengths, args.layers, args.readout, args.gradient)  # noqa: E731
        run()  # compile
        seconds, k = best_of(run, device, args.repeats)
        first, reference = first or seconds, k if reference is None else reference
        rate = cells / seconds
        peak = f"{rate * OPS_PER_CELL / H100_FP32_PEAK:.3f}" if device.type == "cuda" else "-"
        diff = ((k - reference).abs().max() / reference.abs().max()).item()
        print(
            f"| {tile} | {seconds:.4g} | {first / seconds:.2f} | {rate:.3g} | {peak} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
