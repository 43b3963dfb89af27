"""Peak memory and time of one exact-GP marginal-likelihood gradient with the RNTK.

Each measurement runs in a fresh subprocess and reports its peak resident set size above the
process's own baseline (python + torch + gpytorch loaded, data built). The same measurement runs
twice: with glibc's default allocator settings, and with ``MALLOC_MMAP_THRESHOLD_=65536``, which
returns every large tensor to the system when it is freed, so that the figure shows the live
tensor peak rather than heap fragmentation. A plain-autograd run (no checkpointing over time) at a
smaller size shows what the checkpointing saves, as a ratio in the same run.

    python benchmarks/memory_mll.py                 # N = 1000, T = 150, float64 (issue 2)
    python benchmarks/memory_mll.py --n 300 --t 50  # quick
    python benchmarks/memory_mll.py --n 5000 --t 100 --plain-n 200   # issue 5's 4 GiB case
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def measure(n: int, t: int, plain: bool, forward: bool = False) -> dict:
    import gpytorch
    import torch

    import gpytorch_rntk.functional as F
    from gpytorch_rntk import RNTKKernel

    if plain:  # plain autograd through every step
        F._PLAIN_AUTOGRAD_PAIR_STEPS = 2**62
    torch.manual_seed(0)
    lengths = torch.randint(t // 4, t + 1, (n,))
    steps = torch.randn(n, t, dtype=torch.float64) * (torch.arange(t) < lengths[:, None])
    x = torch.cat([lengths[:, None].double(), steps], 1)
    y = torch.randn(n, dtype=torch.float64)

    class GP(gpytorch.models.ExactGP):
        def __init__(self):
            super().__init__(x, y, gpytorch.likelihoods.GaussianLikelihood())
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(RNTKKernel(input_dim=1))

        def forward(self, z):
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(z), self.covar_module(z)
            )

    model = GP().double()
    mll = gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    with gpytorch.settings.max_cholesky_size(10**6):
        loss = -mll(model(x), y)
        loss.backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    grads_finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters())
    result = {"seconds": seconds, "peak_mib": peak - baseline, "grads_finite": grads_finite}
    if forward:  # the same Gram matrix without gradients, by each engine (after the above)
        kernel = model.covar_module.base_kernel
        for engine in ("tensor", "fused"):
            kernel.engine = engine
            with torch.no_grad():
                if engine == "fused":  # the first call compiles: not timed
                    kernel(x[:1024], x[:1024]).to_dense()
                start = time.perf_counter()
                kernel(x).to_dense()
                result[f"forward_{engine}_s"] = time.perf_counter() - start
    return result


def run(n: int, t: int, plain: bool, mmap_threshold: bool, forward: bool = False) -> dict:
    env = dict(os.environ)
    if mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    cmd = [sys.executable, __file__, "--child", "--n", str(n), "--t", str(t)]
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
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.n, args.t, args.plain, args.forward)))
        return
    print(f"exact-GP MLL gradient, RNTK relu L=1, float64, lengths uniform in [T/4, T], T={args.t}")
    print(f"{'N':>6} {'scan':>12} {'malloc':>16} {'seconds':>8} {'peak MiB':>9}")
    for n, plain in ((args.plain_n, True), (args.plain_n, False), (args.n, False)):
        for mmap_threshold in (False, True):
            last = n == args.n and not plain and mmap_threshold
            r = run(n, args.t, plain, mmap_threshold, forward=last)
            assert r["grads_finite"], "non-finite gradient"
            label = "plain autograd" if plain else "checkpointed"
            malloc = "mmap>=64KiB" if mmap_threshold else "glibc default"
            print(
                f"{n:>6} {label:>12} {malloc:>16} {r['seconds']:>8.1f} {r['peak_mib']:>9.0f}",
                flush=True,
            )
            if "forward_tensor_s" in r:
                for engine in ("tensor", "fused"):
                    f = r[f"forward_{engine}_s"]
                    print(
                        f"  forward K(x, x) by the {engine} engine (no gradient): {f:.1f} s; "
                        f"MLL gradient / forward = {r['seconds'] / f:.1f}"
                    )


if __name__ == "__main__":
    main()
