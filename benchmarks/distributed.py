"""Sharded Gram matrices over torch.distributed ranks: throughput per rank, scaling, memory.

Run plainly, the script is the driver: for each entry of ``--ranks`` it launches itself under
``torchrun --standalone --nproc_per_node P`` (gloo on the CPU, NCCL with ``--device cuda``, one
GPU per rank), each rank with ``--threads`` / P intra-op threads on the CPU so that every run
uses the same cores, and also a one-rank, one-thread run (the per-core baseline). Each run
computes, on the same random sequences (lengths uniform over ``[T/2, T]``, ``m = 1``, the
RNTK, ReLU, last readout):

* ``K(X, X)`` through :class:`~gpytorch_rntk.distributed.ShardedKernel` (each rank its rows
  from the diagonal on, every entry once: the exact GP's training matrix), and
* ``K(X, Z)`` for ``Z`` as many other sequences, each rank its rows, gathered on every rank,

after one warm-up call on 64 rows (compilation, if the engine compiles), timed with barriers,
best of ``--repeats``. It prints seconds, pair-steps per second (``N N' T``, the whole matrix
counted even where symmetry halves the work), per rank, the speed-up over the first of
``--ranks`` (one rank with all the threads, by default) and the efficiency per core against
the one-thread run, and each rank's own time before the closing barrier (their spread is the
imbalance); the growth of each rank's peak resident memory during ``K(X, X)`` (its shard
included) against its shard's bytes; and the products (conjugate-gradient and Lanczos
iterations) of one marginal-likelihood gradient on the sharded ``K(X, X)`` (GPyTorch's
iterative path, default settings) with the seconds it took (the second of two calls: the first
compiles, if the engine compiles).

The runs follow one another, never side by side; a ratio between runs of this script compares
separate processes on the same machine, so run it on an otherwise idle machine.

    python benchmarks/distributed.py                          # N = 2000, T = 100, 1 and 2 ranks
    python benchmarks/distributed.py --size 500 --steps 20 --repeats 1   # seconds (a smoke run)
    python benchmarks/distributed.py --device cuda --ranks 1 2 4 8 --size 20000 --steps 150
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time

import gpytorch
import torch
import torch.distributed as dist
from gpytorch.kernels import ScaleKernel

from gpytorch_rntk import RNTKKernel, encode_sequences
from gpytorch_rntk.distributed import ShardedGram, ShardedKernel


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000, help="sequences N on each side")
    parser.add_argument("--steps", type=int, default=100, help="longest sequence T")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads in all")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--mll-n", type=int, default=1000, help="N of the MLL gradient; 0 skips")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _worker(args: argparse.Namespace) -> None:
    cuda = args.device == "cuda"
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)  # the same probe vectors on every rank (SPMD)
    gen = torch.Generator().manual_seed(0)

    def batch(n: int, t: int) -> torch.Tensor:
        lengths = torch.randint(t // 2, t + 1, (n,), generator=gen).tolist()
        seqs = [torch.randn(length, 1, generator=gen, dtype=dtype) for length in lengths]
        return encode_sequences(seqs, max_len=t).to(device)

    x, z = batch(args.size, args.steps), batch(args.size, args.steps)
    kernel = RNTKKernel(input_dim=1, engine=args.engine).to(device=device, dtype=dtype)
    sharded = ShardedKernel(kernel)

    def timed(fn) -> dict:
        """Best of the repeats: the wall time (barrier to barrier) and, of that repeat, each
        rank's own time before the closing barrier (the spread shows imbalance)."""
        best = dict(seconds=float("inf"))
        for _ in range(args.repeats):
            dist.barrier()
            start = time.perf_counter()
            out = fn()
            if cuda:
                torch.cuda.synchronize()
            own = time.perf_counter() - start
            dist.barrier()
            seconds = time.perf_counter() - start
            owns = [None] * world
            dist.all_gather_object(owns, own)
            if seconds < best["seconds"]:
                best = dict(seconds=seconds, ranks=owns)
            del out
        return best

    with torch.no_grad():
        sharded.forward(x[:64], x[:64])  # warm-up: compilation, first-call overheads
        sharded.forward(x[:64], z[:64])
        before = _peak_rss_mib()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        gram = sharded.forward(x, x)
        shard_mib = gram.upper.numel() * gram.upper.element_size() / 2**20
        # (the growth of the peak resident set: the shard included, as it is still held)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mib() - before
        del gram
        symmetric = timed(lambda: sharded.forward(x, x).upper)
        cross = timed(lambda: sharded.forward(x, z))

    mll = {}
    if args.mll_n:
        xs = x[: args.mll_n]
        ys = torch.sin(xs[:, 1:].sum(-1))
        covar = ShardedKernel(ScaleKernel(kernel))
        likelihood = gpytorch.likelihoods.GaussianLikelihood().to(device=device, dtype=dtype)
        model = _ExactGP(xs, ys, likelihood, covar).to(device=device, dtype=dtype)
        calls = []
        original = ShardedGram._matmul

        def counted(self, rhs):  # count the products (CG and Lanczos iterations)
            calls.append(rhs.shape[-1])
            return original(self, rhs)

        ShardedGram._matmul = counted
        mll_fn = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        with gpytorch.settings.max_cholesky_size(0):
            for _ in range(2):  # the first call compiles, if the engine compiles
                calls.clear()
                dist.barrier()
                start = time.perf_counter()
                (-mll_fn(model(xs), ys)).backward()
                dist.barrier()
            mll = dict(seconds=time.perf_counter() - start, products=len(calls), n=args.mll_n)
        ShardedGram._matmul = original

    peaks = [None] * world
    dist.all_gather_object(peaks, dict(peak_mib=peak, shard_mib=shard_mib))
    if rank == 0:
        print(
            json.dumps(dict(world=world, symmetric=symmetric, cross=cross, memory=peaks, mll=mll)),
            flush=True,
        )
    dist.destroy_process_group()


class _ExactGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, covar):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def _launch(args: argparse.Namespace, ranks: int, threads: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={ranks}",
        __file__,
        "--worker",
        *(
            f"--{k.replace('_', '-')}={v}"
            for k, v in vars(args).items()
            if k not in ("ranks", "worker")
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"the {ranks}-rank run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = _parse()
    if args.worker:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        return _worker(args)
    cpu = args.device == "cpu"
    runs = {}
    if cpu:
        runs["1 rank, 1 thread"] = (1, _launch(args, 1, 1))
    for ranks in args.ranks:
        threads = max(1, args.threads // ranks) if cpu else 1
        label = f"{ranks} rank{'s' * (ranks > 1)}" + (f", {threads} thread(s) each" if cpu else "")
        runs[label] = (ranks, _launch(args, ranks, threads))
    cells = args.size * args.size * args.steps
    print(
        f"N = N' = {args.size}, T = {args.steps}, {args.dtype}, engine={args.engine}, "
        f"{args.device}; "
        f"{cells:.2e} pair-steps per matrix"
    )
    base = list(runs.values())[1 if cpu else 0][1]  # the first of --ranks, all threads
    core = runs.get("1 rank, 1 thread", (1, None))[1]
    print(
        f"{'run':<28} {'matrix':<9} {'seconds':>8} {'cells/s':>9} {'per rank':>9} "
        f"{'speed-up':>8} {'per core':>8}  ranks' own seconds"
    )
    for label, (ranks, result) in runs.items():
        cores = ranks * (max(1, args.threads // ranks) if cpu and "1 thread" not in label else 1)
        for matrix in ("symmetric", "cross"):
            seconds = result[matrix]["seconds"]
            speedup = base[matrix]["seconds"] / seconds
            per_core = core[matrix]["seconds"] / seconds / cores if core else float("nan")
            own = " ".join(f"{t:.2f}" for t in result[matrix]["ranks"])
            print(
                f"{label:<28} {matrix:<9} {seconds:8.2f} {cells / seconds:9.2e} "
                f"{cells / seconds / ranks:9.2e} {speedup:8.2f} {per_core:8.2f}  {own}"
            )
    print("\npeak memory per rank beyond the inputs (MiB) against its shard of K(X, X) (MiB):")
    for label, (_, result) in runs.items():
        memory = ", ".join(f"{m['peak_mib']:.0f} / {m['shard_mib']:.0f}" for m in result["memory"])
        print(f"  {label:<28} {memory}")
    if args.mll_n:
        print(f"\nMLL gradient on the sharded K(X, X), N = {args.mll_n}, iterative path:")
        for label, (_, result) in runs.items():
            mll = result["mll"]
            print(f"  {label:<28} {mll['seconds']:.2f} s, {mll['products']} products")


if __name__ == "__main__":
    main()
