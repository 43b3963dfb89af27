"""What the geometric readout and per-channel input variances (ARD) cost, against their baselines
in the same process.

1. ``readout="geometric"`` against ``readout="mean"`` (the same diagonal scan, plus one weight
   product per cell): the Gram matrix, and the Gram matrix plus the gradient of ``sum(K * W)``
   for the variances and the decay, per engine (``--engines``; the compiled engine's first call,
   its compilation, is excluded).
2. Truncation: how many of the ``T x T'`` grid's cells a scan would still need if it dropped
   the diagonals whose weights are all below ``eps`` relative (each kept diagonal must still run
   from its start, so only whole diagonals can go): the fraction of cells kept, per decay.
3. ARD against one ``input_var``: one exact-GP marginal-likelihood step (value and backward
   through ``ScaleKernel(RNTKKernel)``), with ``ard_num_dims=m`` and without.

Timings alternate the two variants, best of ``--repeats``; they are ratios in one process, so
say what else ran on the machine when you quote them.

    python benchmarks/readout_ard_cost.py                       # N = 100, T = 60, CPU, float64
    python benchmarks/readout_ard_cost.py --n 200 --t 100 --engines tensor compiled
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial

import gpytorch
import torch

from gpytorch_rntk import RNTKKernel, encode_sequences
from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel


def _best(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _gram(values, lengths, readout: str, engine: str, grad: bool, weights):
    hyper = [torch.tensor(v, dtype=values.dtype, requires_grad=grad) for v in (1.8, 1.0, 0.1)]
    decay = torch.tensor(0.9 if readout == "geometric" else 1.0, dtype=values.dtype)
    decay.requires_grad_(grad and readout == "geometric")
    variances = RecurrentVariances(*hyper, 0.0, decay)
    k = recurrent_kernel(
        values, lengths, values, lengths, variances, readout=readout, engine=engine
    )
    if grad:
        wanted = hyper + ([decay] if decay.requires_grad else [])
        torch.autograd.grad((k * weights).sum(), wanted)
    return k


def readout_costs(n: int, steps: int, dtype, engines, repeats: int) -> None:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(steps // 2, steps + 1, (n,), generator=gen)
    values = torch.randn(n, steps, 2, generator=gen, dtype=dtype)
    values = values * (torch.arange(steps) < lengths[:, None]).unsqueeze(-1)
    weights = torch.randn(n, n, generator=gen, dtype=dtype)
    print(f"\n## Geometric against mean readout (N = {n}, T in [{steps // 2}, {steps}], {dtype})")
    print("engine | grad | mean_s | geometric_s | geometric/mean")
    print("---|---|---|---|---")
    for engine in engines:
        for grad in (False, True):
            runs = {
                r: partial(_gram, values, lengths, r, engine, grad, weights)
                for r in ("mean", "geometric")
            }
            for run in runs.values():  # warm-up (compilation, caches)
                run()
            seconds = {r: math.inf for r in runs}
            for _ in range(repeats):  # alternate the two
                for r, run in runs.items():
                    seconds[r] = min(seconds[r], _best(run, 1))
            ratio = seconds["geometric"] / seconds["mean"]
            print(
                f"{engine} | {grad} | {seconds['mean']:.3f} | {seconds['geometric']:.3f} | "
                f"{ratio:.2f}"
            )


def truncation(steps: int, eps: float) -> None:
    """Cells on the diagonals a truncated scan would keep, for equal lengths ``T``: diagonal
    ``d`` (``t' - t``) ends at a cell whose steps are ``|d|`` and 0 steps before the ends, so its
    largest weight product is ``decay^|d|`` relative to the grid's largest."""
    print(f"\n## Truncation at eps = {eps:g} relative (T = T' = {steps})")
    print("decay | diagonals kept (|d| <= K) | K | cells kept / all cells")
    print("---|---|---|---")
    total = steps * steps
    for decay in (0.5, 0.8, 0.9, 0.95, 0.99, 0.999):
        reach = min(steps - 1, math.ceil(math.log(eps) / math.log(decay)))
        kept = sum(steps - abs(d) for d in range(-reach, reach + 1))
        print(f"{decay} | {2 * reach + 1} | {reach} | {kept / total:.3f}")


class _GP(gpytorch.models.ExactGP):
    def __init__(self, x, y, kernel):
        super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(kernel)

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def ard_costs(n: int, steps: int, channels: int, dtype, repeats: int) -> None:
    gen = torch.Generator().manual_seed(1)
    lengths = torch.randint(steps // 2, steps + 1, (n,), generator=gen).tolist()
    x = encode_sequences([torch.randn(t, channels, generator=gen) for t in lengths]).to(dtype)
    y = torch.randn(n, generator=gen, dtype=dtype)
    models = {}
    for name, ard in (("one input_var", None), ("ARD", channels)):
        model = _GP(x, y, RNTKKernel(input_dim=channels, ard_num_dims=ard)).to(dtype)
        model.train()
        models[name] = (model, gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model))

    def step(name):
        model, mll = models[name]
        model.zero_grad()
        (-mll(model(x), y)).backward()

    for name in models:
        step(name)
    seconds = {name: math.inf for name in models}
    for _ in range(repeats):
        for name in models:
            seconds[name] = min(seconds[name], _best(lambda name=name: step(name), 1))
    print(
        f"\n## ARD: one marginal-likelihood step (N = {n}, T in [{steps // 2}, {steps}], "
        f"m = {channels}, {dtype}, engine='auto')"
    )
    print("one input_var_s | ARD_s | ARD/one")
    print("---|---|---")
    ratio = seconds["ARD"] / seconds["one input_var"]
    print(f"{seconds['one input_var']:.3f} | {seconds['ARD']:.3f} | {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--t", type=int, default=60)
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--engines", nargs="+", default=["tensor", "compiled"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eps", type=float, default=1e-10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--parts", nargs="+", default=["readout", "truncation", "ard"], help="what to measure"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if "readout" in args.parts:
        readout_costs(args.n, args.t, dtype, args.engines, args.repeats)
    if "truncation" in args.parts:
        truncation(args.t, args.eps)
    if "ard" in args.parts:
        ard_costs(args.n, args.t, args.channels, dtype, args.repeats)


if __name__ == "__main__":
    main()
