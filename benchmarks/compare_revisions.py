"""The fused engine of this checkout against the one at another git revision, in one process.

The package at ``--against`` (a git revision, or a folder holding an older checkout) is copied
into a temporary folder as ``gpytorch_rntk_old`` and both engines are timed on the same inputs,
alternately, best of ``--repeats``: the Gram matrix (*values*) and the Gram matrix with its
forward-mode derivatives along the three variances of a zero initial state and their
contraction (*gradient*, what an exact GP's marginal-likelihood gradient asks of the kernel).
The ratios old / new are what a change to the engine gains, measured where both run under the
same load (these machines are noisy); the largest differences between the two engines' results
are printed too.

    python benchmarks/compare_revisions.py --against cdceee7 --n 1000 --t 100
    python benchmarks/compare_revisions.py --against cdceee7 --device cuda --n 4000 --t 150 \\
        --layers 2 --dtype float32
"""

from __future__ import annotations

import argparse
import importlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import partial
from pathlib import Path

import torch
from gram import VARIANCES, make_inputs, timed  # beside this script

from gpytorch_rntk.functional import recurrent_kernel

ROOT = Path(__file__).resolve().parents[1]


def load_revision(revision: str, folder: Path, module: str = "fused"):
    """The module ``module`` of the package at ``revision`` (a git revision, or a checkout's
    folder where there is no git history), imported as ``gpytorch_rntk_old`` (its modules
    import each other relatively)."""
    if Path(revision).is_dir():
        shutil.copytree(Path(revision) / "gpytorch_rntk", folder / "gpytorch_rntk_old")
    else:
        archive = subprocess.run(
            ["git", "archive", revision, "gpytorch_rntk"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        (folder / "gpytorch_rntk").rename(folder / "gpytorch_rntk_old")
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"gpytorch_rntk_old.{module}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--against", required=True, help="the old engine: a git revision or a checkout's folder"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--t", type=int, default=100)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--nonlinearity", default="relu", choices=["relu", "erf"])
    parser.add_argument("--readout", default="last", choices=["last", "mean"])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--equal", action="store_true", help="equal lengths T (default: uniform over [T/4, T])"
    )
    parser.add_argument(
        "--engine",
        default="fused",
        choices=["fused", "tensor"],
        help="fused: the old fused_kernel against engine='fused'; tensor: the old and new "
        "recurrent_kernel(engine='tensor') (reverse-mode gradients)",
    )
    args = parser.parse_args(argv)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    x, lengths = make_inputs(args.n, args.t, dtype, device, variable=not args.equal)
    with tempfile.TemporaryDirectory() as folder:
        if args.engine == "fused":  # the old fused_kernel against engine="fused" (the same)
            old = load_revision(args.against, Path(folder)).fused_kernel
        else:
            old = partial(
                load_revision(args.against, Path(folder), "functional").recurrent_kernel,
                engine="tensor",
            )
        engines = {"old": old, "new": partial(recurrent_kernel, engine=args.engine)}

        def run(module, gradient: bool):
            variances = [
                torch.tensor(v, dtype=dtype, device=device, requires_grad=gradient)
                for v in VARIANCES[args.nonlinearity]
            ]
            init_var = torch.zeros((), dtype=dtype, device=device)  # (a zero initial state)
            gram = module(
                x, lengths, x, lengths, [*variances, init_var], nonlinearity=args.nonlinearity,
                num_layers=args.layers, readout=args.readout,
            )  # fmt: skip
            if not gradient:
                return gram, gram.new_zeros(0)
            # the contraction an MLL gradient does, with a fixed weight matrix
            grads = torch.autograd.grad((gram * gram.detach()).sum(), variances)
            return gram.detach(), torch.stack(grads)

        seconds, results = {}, {}
        for mode in ("values", "gradient"):
            for name, module in engines.items():
                results[name, mode] = run(module, mode == "gradient")  # compile, warm up
            for _ in range(args.repeats):
                for name, module in engines.items():
                    elapsed, _, _ = timed(lambda m=module, g=mode == "gradient": run(m, g), device)
                    seconds[name, mode] = min(seconds.get((name, mode), elapsed), elapsed)
    print(
        f"device {args.device}, N {args.n}, T {args.t} "
        f"({'equal lengths' if args.equal else 'lengths over [T/4, T]'}), L {args.layers}, "
        f"{args.nonlinearity}, {args.readout} readout, {args.dtype}, {args.engine} engine, "
        f"old = {args.against}, best of {args.repeats}"
    )
    print("| mode | old_s | new_s | old/new | gram_diff | gradient_diff |")
    print("|---|---|---|---|---|---|")
    for mode in ("values", "gradient"):
        (old, old_grads), (new, new_grads) = results["old", mode], results["new", mode]
        # the Gram matrices' largest difference relative to their largest entry; the
        # gradients' largest relative difference
        diff = ((new - old).abs().max() / old.abs().max()).item()
        grads = (
            ((new_grads - old_grads).abs() / old_grads.abs()).max().item()
            if mode == "gradient"
            else float("nan")
        )
        print(
            f"| {mode} | {seconds['old', mode]:.4g} | {seconds['new', mode]:.4g} | "
            f"{seconds['old', mode] / seconds['new', mode]:.3g} | {diff:.1e} | {grads:.1e} |"
        )
    print(
        f"gradient/values: old {seconds['old', 'gradient'] / seconds['old', 'values']:.2f}, "
        f"new {seconds['new', 'gradient'] / seconds['new', 'values']:.2f}"
    )


if __name__ == "__main__":
    main()
