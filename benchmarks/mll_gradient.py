"""Exact-GP marginal-likelihood gradient against its forward pass, per engine, in one process.

For an exact GP with ``ScaleKernel(RNTKKernel)`` on ``N`` sequences with lengths spread over
``[T/4, T]``: *forward* is the negative marginal log likelihood without gradients (the Gram
matrix, its Cholesky factor, the solve), *gradient* the same loss and its backward pass for all
hyperparameters. The printed ratio gradient / forward is issue 5's target (at most 3); the
loss and gradients of each row are compared with the first row's. ``--mlls``: GPyTorch's
``ExactMarginalLogLikelihood`` (``gpytorch``, which differentiates through the Cholesky
factorisation) and/or :class:`~gpytorch_rntk.mlls.CholeskyMarginalLogLikelihood`
(``cholesky``, the same loss with the covariance's gradient written down). Best of
``--repeats`` after one warm-up call (compilation) per row.

    python benchmarks/mll_gradient.py --device cuda --n 2000 5000 --t 100
    python benchmarks/mll_gradient.py --n 500 --t 50 --engines fused tensor   # CPU, quick
    python benchmarks/mll_gradient.py --n 2000 --engines fused --mlls gpytorch cholesky
    python benchmarks/mll_gradient.py --device cuda --n 2000 --engines fused --triton-tile 16 32 8
"""

from __future__ import annotations

import argparse

import gpytorch
import torch
from gram import add_triton_tile_option, best_of, use_triton_tile  # beside this script

from gpytorch_rntk import RNTKKernel
from gpytorch_rntk.mlls import CholeskyMarginalLogLikelihood

MLLS = {
    "gpytorch": gpytorch.mlls.ExactMarginalLogLikelihood,
    "cholesky": CholeskyMarginalLogLikelihood,
}


class _GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, engine: str, layers: int, nonlinearity: str):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        kernel = RNTKKernel(
            input_dim=1, engine=engine, num_layers=layers, nonlinearity=nonlinearity
        )
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, z):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(z), self.covar_module(z))


def run_case(n: int, steps: int, args) -> list[str]:
    dtype, device = getattr(torch, args.dtype), torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(steps // 4, steps + 1, (n,), generator=gen)
    values = torch.randn(n, steps, dtype=dtype, generator=gen) * (
        torch.arange(steps) < lengths[:, None]
    )
    x = torch.cat([lengths[:, None].to(dtype), values], 1).to(device)
    y = torch.randn(n, dtype=dtype, generator=gen).to(device)
    rows, reference = [], None
    for engine, mll_name in ((e, m) for e in args.engines for m in args.mlls):
        model = _GP(x, y, engine, args.layers, args.nonlinearity).to(device=device, dtype=dtype)
        mll = MLLS[mll_name](model.likelihood, model)
        parameters = [p for _, p in sorted(model.named_parameters())]

        def forward(model=model, mll=mll):
            with torch.no_grad():
                return -mll(model(x), y)

        def gradient(model=model, mll=mll, parameters=parameters):
            loss = -mll(model(x), y)
            grads = torch.autograd.grad(loss, parameters)
            return torch.cat([loss.detach().reshape(1), *(g.reshape(-1) for g in grads)])

        with gpytorch.settings.max_cholesky_size(10**9):  # exact: Cholesky, no CG
            model.train()
            seconds = {}
            for name, fn in (("forward", forward), ("gradient", gradient)):
                fn()  # compile and warm up
                seconds[name], out = best_of(fn, device, args.repeats)
        reference = out if reference is None else reference
        difference = ((out - reference).abs() / reference.abs().clamp(min=1e-300)).max().item()
        rows.append(
            f"| {engine} | {mll_name} | {args.nonlinearity} | {n} | {steps} | {args.layers} | "
            f"{args.dtype} | "
            f"{seconds['forward']:.4g} | {seconds['gradient']:.4g} | "
            f"{seconds['gradient'] / seconds['forward']:.2f} | {difference:.1e} |"
        )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, nargs="+", default=[1000])
    parser.add_argument("--t", type=int, nargs="+", default=[100])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--nonlinearity", default="relu", choices=["relu", "erf"])
    parser.add_argument("--engines", nargs="+", default=["fused", "tensor"])
    parser.add_argument("--mlls", nargs="+", default=["gpytorch"], choices=list(MLLS))
    parser.add_argument("--repeats", type=int, default=3)
    add_triton_tile_option(parser)  # the forward-mode kernel's
    args = parser.parse_args(argv)
    use_triton_tile(args.triton_tile, [getattr(torch, args.dtype)], forward_mode=True)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        "| engine | mll | phi | N | T | L | dtype | forward_s | gradient_s | gradient/forward "
        "| max_rel_diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        for steps in args.t:
            for row in run_case(n, steps, args):
                print(row, flush=True)


if __name__ == "__main__":
    main()
