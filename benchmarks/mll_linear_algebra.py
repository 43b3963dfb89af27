"""The marginal likelihood's linear algebra alone: GPyTorch's gradient against the written-down one.

For a dense SPD covariance ``K`` (``N x N``, requiring a gradient) and targets ``y``: *forward*
is ``-log N(y; 0, K)`` without gradients, *gradient* the same and ``d/dK``. ``gpytorch`` is
``MultivariateNormal.log_prob`` (Cholesky, differentiated through the factorisation by
PyTorch's Cholesky backward), ``cholesky`` the function behind
:class:`~gpytorch_rntk.mlls.CholeskyMarginalLogLikelihood` (``d/dK = (K^-1 - alpha alpha^T) / 2``
from ``torch.cholesky_inverse``). In one process, best of ``--repeats``; ``dK_diff`` is the
largest difference of the two gradients relative to their largest entry.

    python benchmarks/mll_linear_algebra.py --n 2000 4000
    python benchmarks/mll_linear_algebra.py --device cuda --n 5000 10000 --dtype float32
"""

from __future__ import annotations

import argparse

import gpytorch
import torch
from gram import best_of  # beside this script
from linear_operator.operators import DenseLinearOperator

from gpytorch_rntk.mlls import _GaussianLogProb


def gpytorch_loss(k, y):
    mean = torch.zeros_like(y)
    return -gpytorch.distributions.MultivariateNormal(mean, DenseLinearOperator(k)).log_prob(y)


def cholesky_loss(k, y):
    return -_GaussianLogProb.apply(y, k)


def run_case(n: int, dtype, device, repeats: int) -> list[str]:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen, dtype=dtype) / n**0.5
    covariance = (a @ a.T + torch.eye(n, dtype=dtype)).to(device)
    y = torch.randn(n, generator=gen, dtype=dtype).to(device)

    def forward(loss):
        with torch.no_grad():
            return loss(covariance, y)

    def gradient(loss):
        k = covariance.clone().requires_grad_()
        return torch.autograd.grad(loss(k, y), k)[0]

    rows, reference = [], None
    for name, loss in (("gpytorch", gpytorch_loss), ("cholesky", cholesky_loss)):
        seconds = {}
        with gpytorch.settings.max_cholesky_size(10**9):
            for mode, fn in (("forward", forward), ("gradient", gradient)):
                fn(loss)  # warm up
                seconds[mode], out = best_of(lambda fn=fn, loss=loss: fn(loss), device, repeats)
        reference = out if reference is None else reference
        diff = ((out - reference).abs().max() / reference.abs().max()).item()
        rows.append(
            f"| {n} | {name} | {seconds['forward']:.4g} | {seconds['gradient']:.4g} | "
            f"{seconds['gradient'] / seconds['forward']:.2f} | {diff:.1e} |"
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, nargs="+", default=[2000])
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    print(f"device {args.device}, {args.dtype}, torch {torch.__version__}")
    print("| N | mll | forward_s | gradient_s | gradient/forward | dK_diff |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        for row in run_case(n, dtype, device, args.repeats):
            print(row, flush=True)


if __name__ == "__main__":
    main()
