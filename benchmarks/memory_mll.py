"""Peak memory and time of one exact-GP marginal-likelihood gradient with the RNTK.

Each measurement runs in a fresh subprocess and reports its peak resident set size above the
process's own baseline (python + torch + gpytorch loaded, data built). The same measurement runs
twice: with glibc's default allocator settings, and with ``MALLOC_MMAP_THRESHOLD_=65536``, which
returns every large tensor to the system when it is freed, so that the figure shows the live
tensor peak rather than heap fragmentation. A plain-autograd run (no checkpointing over time) at a
smaller size shows what the checkpointing saves, as a ratio in the same run.

    python benchmarks/memory_mll.py                 # N = 1000, T = 150, float64 (issue 2)
    python benchmarks/memory_mll.py --n 300 --t 50  # quick
    python benchmarks/memory_mll.py --n 5000 --t 100 --engine fused   # issue 5's 4 GiB case

``--engine``: the MLL gradient through the tensor path (reverse mode, checkpointed) and/or the
fused engine (forward-mode gradients for the hyperparameters, see docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def measure(n: int, t: int, plain: bool, forward: bool = False, engine: str = "tensor") -> dict:
    import gpytorch
    import torch

    import gpytorch_rntk._core.engines.tensor as F
    from gpytorch_rntk import RNTKKernel

    if plain:  # plain autograd through every step
        F.PLAIN_AUTOGRAD_PAIR_STEPS = 2**62
    torch.manual_seed(0)
    lengths = torch.randint(t // 4, t + 1, (n,))
    steps = torch.randn(n, t, dtype=torch.float64) * (torch.arange(t) < lengths[:, None])
    x = torch.cat([lengths[:, None].double(), steps], 1)
    y = torch.randn(n, dtype=torch.float64)

    class GP(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(RNTKKernel(input_dim=1, engine=engine))

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(z), self.covar_module(z)
            )

    model = GP().double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    if engine == "fused":  # compile the value and forward-mode loops first, on a subset
        warm = x[: min(n, 1024)]
        model.set_train_data(warm, y[: len(warm)], strict=False)
        (-mll(model(warm), y[: len(warm)])).backward()
        model.zero_grad()
        model.set_train_data(x, y, strict=False)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    with gpytorch.settings.max_cholesky_size(10**6):
        loss = -mll(model(x), y)
        loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grads_finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters())
    result = {"seconds": seconds, "peak_mib": peak - baseline, "grads_finite": grads_finite}
    if forward:  # the same Gram matrix without gradients, by the same engine
        with torch.no_grad():
            start = time.perf_counter()
            model.covar_module(x).to_dense()
            result["forward_s"] = time.perf_counter() - start
    return result


def run(
    n: int, t: int, plain: bool, mmap_threshold: bool, forward: bool = False, engine="tensor"
) -> dict:
    env = dict(os.environ)
    if mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    cmd = [sys.executable, __file__, "--child", "--n", str(n), "--t", str(t), "--engine", engine]
    if plain:
        cmd.append("--plain")
    if forward:
        cmd.append("--forward")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--t", type=int, default=150)
    parser.add_argument("--plain-n", type=int, default=300, help="size of the plain-autograd run")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--forward", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--engine",
        nargs="+",
        default=["tensor", "fused"],
        help="engines for the MLL gradient at --n (the plain-autograd comparison uses 'tensor')",
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.n, args.t, args.plain, args.forward, args.engine[0])))
        return
    print(f"exact-GP MLL gradient, RNTK relu L=1, float64, lengths uniform in [T/4, T], T={args.t}")
    print(f"{'N':>6} {'scan':>20} {'malloc':>16} {'seconds':>8} {'peak MiB':>9}")
    cases = [(args.plain_n, True, "tensor"), (args.plain_n, False, "tensor")]
    cases += [(args.n, False, engine) for engine in args.engine]
    for n, plain, engine in cases:
        for mmap_threshold in (False, True):
            last = n == args.n and mmap_threshold
            r = run(n, args.t, plain, mmap_threshold, forward=last, engine=engine)
            assert r["grads_finite"], "non-finite gradient"
            label = "tensor, plain autograd" if plain else f"{engine}"
            malloc = "mmap>=64KiB" if mmap_threshold else "glibc default"
            print(
                f"{n:>6} {label:>20} {malloc:>16} {r['seconds']:>8.1f} {r['peak_mib']:>9.0f}",
                flush=True,
            )
            if "forward_s" in r:
                f = r["forward_s"]
                print(
                    f"  forward K(x, x) by the same engine, no gradient: {f:.1f} s; "
                    f"MLL loss and gradient / forward = {r['seconds'] / f:.1f}"
                )


if __name__ == "__main__":
    main()
