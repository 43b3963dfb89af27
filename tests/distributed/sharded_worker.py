"""Run by ``tests/distributed/test_sharded.py`` under ``torchrun`` (every rank runs it):
``python sharded_worker.py CASE OUT``. Each rank computes the sharded results and, in the same
process, the single-process ones, and saves both to ``OUT/rank{r}.pt`` for the test to compare.

Cases:
* ``gram``: gathered and per-rank Gram matrices (last and mean readouts, variable lengths,
  uneven shards, one sequence so that a rank has no rows, bidirectional) and ``gram_matrix``;
* ``gp``: an exact GP on N = 1000 sequences, marginal likelihood, its gradients and
  predictions, by GPyTorch's Cholesky path (the gathered matrix) and by its iterative path
  (conjugate gradients on the row blocks);
* ``botorch``: BoTorch's ``SingleTaskGP`` on a sharded kernel, fitted and predicting;
* ``mismatch``: the ranks pass different inputs, or different vectors to a product;
* ``fail``: rank 1 raises; the run must end with its error, rank 0 not left waiting;
* ``hang``: rank 1 never reaches the collective; rank 0 must raise within the group's timeout.
"""

from __future__ import annotations

import datetime
import sys
import time
from itertools import pairwise
from pathlib import Path

import gpytorch
import torch
import torch.distributed as dist
from gpytorch.kernels import ScaleKernel

from gpytorch_rntk import RNTKKernel, encode_sequences, gram_matrix
from gpytorch_rntk.distributed import ShardedGram, ShardedKernel, gather_rows

DTYPE = torch.float64


def sequences(n: int, seed: int, lengths: tuple[int, int] = (2, 9), m: int = 2):
    gen = torch.Generator().manual_seed(seed)
    ts = torch.randint(*lengths, (n,), generator=gen).tolist()
    return [torch.randn(t, m, generator=gen, dtype=DTYPE) for t in ts]


def gram_case(rank: int) -> dict:
    out = {}
    x_seqs, z_seqs = sequences(23, 0), sequences(17, 1)
    x, z = encode_sequences(x_seqs), encode_sequences(z_seqs, max_len=8)
    for readout in ("last", "mean"):
        for bidirectional in (False, True):
            name = f"{readout}{'-bi' if bidirectional else ''}"
            kernel = RNTKKernel(
                input_dim=2, readout=readout, bidirectional=bidirectional, engine="tensor"
            ).double()
            kernel.initialize(recurrent_var=1.3, input_var=0.8, bias_var=0.2)
            sharded = ShardedKernel(kernel)
            with torch.no_grad():
                shard = sharded.shard(x, z)
                gathered = gather_rows(shard.matrix, shard.bounds)
                same_tiles = torch.cat(
                    [kernel.forward(x[a:b], z) for a, b in pairwise(shard.bounds)]
                )
                symmetric = sharded.forward(x, x)
                chunked = ShardedKernel(kernel)
                chunked.chunk_elements = 40  # 3-4 columns per call
                out[name] = dict(
                    bounds=shard.bounds,
                    rows=shard.rows,
                    shard=shard.matrix,
                    gathered=gathered,
                    same_tiles=same_tiles,
                    one_call=kernel.forward(x, z),
                    forward=sharded.forward(x, z),
                    symmetric_dense=symmetric.to_dense(),
                    symmetric_diagonal=symmetric.diagonal(),
                    symmetric_matmul=symmetric
                    @ torch.linspace(-1, 1, 23 * 3, dtype=DTYPE).view(23, 3),
                    entries=symmetric[
                        torch.tensor([0, 22, 5, 22, 3]), torch.tensor([3, 22, 0, 3, 20])
                    ],
                    symmetric_bounds=symmetric.bounds,
                    symmetric_upper=symmetric.upper,
                    symmetric_same_tiles=same_tiles_symmetric(kernel, x, symmetric.bounds),
                    single=kernel.forward(x, x),
                    chunked_symmetric=chunked.forward(x, x).to_dense(),
                    chunked_cross=chunked.forward(x, z),
                    one_sequence=sharded.shard(x[:1], z),
                    one_sequence_gathered=sharded.forward(x[:1], z),
                    one_sequence_single=kernel.forward(x[:1], z),
                )
                assert isinstance(symmetric, ShardedGram)
    out["gram_matrix"] = dict(
        rows=gram_matrix(x_seqs, z_seqs, distributed="rows", readout="mean"),
        gathered=gram_matrix(x_seqs, z_seqs, distributed="gathered", readout="mean"),
        single=gram_matrix(x_seqs, z_seqs, readout="mean"),
        symmetric_gathered=gram_matrix(x_seqs, distributed="gathered"),
        symmetric_single=gram_matrix(x_seqs),
    )
    return out


def same_tiles_symmetric(kernel, x, bounds) -> torch.Tensor:
    """K(x, x) from the blocks ShardedGram keeps, computed in this process and mirrored."""
    upper = torch.zeros(x.shape[0], x.shape[0], dtype=DTYPE)
    for a, b in pairwise(bounds):
        upper[a:b, a:b] = kernel.forward(x[a:b], x[a:b])
        upper[a:b, b:] = kernel.forward(x[a:b], x[b:])
    starts = torch.tensor(bounds[:-1]).repeat_interleave(torch.tensor(bounds).diff())
    kept = torch.arange(x.shape[0]) >= starts.unsqueeze(-1)
    return torch.where(kept, upper, upper.T)


class ExactGP(gpytorch.models.ExactGP):
    def __init__(self, x, y, likelihood, covar):
        super().__init__(x, y, likelihood)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = covar

    def forward(self, x):
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


def gp_case(rank: int) -> dict:
    seqs = sequences(1000, 2, lengths=(3, 9), m=1)
    x = encode_sequences(seqs)
    gen = torch.Generator().manual_seed(3)
    y = torch.stack([s[-3:].sum() for s in seqs]) + 0.1 * torch.randn(1000, generator=gen)
    test = encode_sequences(sequences(9, 4, lengths=(3, 9), m=1), max_len=8)

    def run(sharded: bool) -> dict:
        torch.manual_seed(5)  # the same probe vectors for the iterative path
        kernel = ScaleKernel(RNTKKernel(input_dim=1, engine="tensor"))
        likelihood = gpytorch.likelihoods.GaussianLikelihood()
        likelihood.noise = 0.05
        model = ExactGP(x, y, likelihood, ShardedKernel(kernel) if sharded else kernel).double()
        model.train()
        mll = gpytorch.mlls.ExactMarginalLogLikelihood(likelihood, model)
        loss = -mll(model(x), y)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.eval()
        with torch.no_grad():
            posterior = model(test)
            mean, variance = posterior.mean, posterior.variance
        return dict(loss=loss.detach(), grads=grads, mean=mean, variance=variance)

    out = {}
    # (GPyTorch's conjugate gradients stall near a relative residual of 1e-6 in float64, so the
    # iterative path asks for 1e-5, which it reaches)
    for path, size in (("cholesky", 10**6), ("iterative", 0)):
        with (
            gpytorch.settings.max_cholesky_size(size),
            gpytorch.settings.cg_tolerance(1e-5),
            gpytorch.settings.eval_cg_tolerance(1e-5),
            gpytorch.settings.max_cg_iterations(1000),
            gpytorch.settings.min_preconditioning_size(500),  # the preconditioner's rows too
        ):
            out[path] = dict(sharded=run(True), single=run(False))
    with gpytorch.settings.max_cholesky_size(10**6):
        out["exact"] = run(False)
    return out


def botorch_case(rank: int) -> dict:
    """The docs' example: BoTorch's SingleTaskGP on a sharded kernel, fitted by
    fit_gpytorch_mll on the iterative path, and its posterior; also in one process."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP

    seqs = sequences(150, 6, lengths=(3, 11), m=1)
    x = encode_sequences(seqs)
    y = torch.stack([s[-3:].sum() for s in seqs]).unsqueeze(-1)
    test = encode_sequences(sequences(20, 7, lengths=(3, 11), m=1), max_len=10)
    test_y = torch.stack([s[-3:].sum() for s in sequences(20, 7, lengths=(3, 11), m=1)])
    out = {}
    for name in ("sharded", "single"):
        torch.manual_seed(0)
        kernel = ScaleKernel(RNTKKernel(input_dim=1))
        covar = ShardedKernel(kernel) if name == "sharded" else kernel
        model = SingleTaskGP(x, y, covar_module=covar)
        with gpytorch.settings.max_cholesky_size(0):
            fit_gpytorch_mll(gpytorch.mlls.ExactMarginalLogLikelihood(model.likelihood, model))
            with torch.no_grad():
                mean = model.posterior(test).mean.squeeze(-1)
        out[name] = dict(
            parameters={n: p.detach().clone() for n, p in kernel.named_parameters()},
            mean=mean,
            test_y=test_y,
        )
    return out


def mismatch_case(rank: int) -> dict:
    """The ranks' inputs or product vectors differ (e.g. unseeded probe vectors): each must
    raise, never return a wrong product."""
    x = encode_sequences(sequences(6, 0))
    kernel = ShardedKernel(RNTKKernel(input_dim=2).double())
    errors = {}
    with torch.no_grad():
        for name, call in (
            ("inputs", lambda: kernel.forward(x + rank, x + rank)),
            ("vectors", lambda: kernel.forward(x, x) @ torch.full((6, 1), float(rank))),
            (
                "hyperparameters",
                lambda: (
                    kernel.initialize(**{"base_kernel.bias_var": rank + 1.0}),
                    kernel.forward(x, x),
                ),
            ),
            ("bounds", lambda: ShardedGram(torch.zeros(1, 1), bounds=(0, 1))),
        ):
            try:
                call()
                errors[name] = None
            except (RuntimeError, ValueError) as error:
                errors[name] = str(error)
    return errors


def fail_case(rank: int) -> dict:
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    gather_rows(torch.zeros(1, 3), (0, 1, 2))  # rank 1 never joins
    return {}


def hang_case(rank: int) -> dict:
    if rank == 1:
        time.sleep(60)  # never joins: rank 0 must not wait for it past the timeout
        return {}
    start = time.perf_counter()
    try:
        gather_rows(torch.zeros(1, 3), (0, 1, 2))
    except RuntimeError as error:
        print(f"rank 0 raised after {time.perf_counter() - start:.1f} s: {error}", flush=True)
        raise
    return {}


def main() -> None:
    case, out_dir = sys.argv[1], Path(sys.argv[2])
    timeout = datetime.timedelta(seconds=5 if case == "hang" else 60 if case == "fail" else 120)
    dist.init_process_group("gloo", timeout=timeout)
    rank = dist.get_rank()
    torch.set_default_dtype(DTYPE)
    cases = {
        "gram": gram_case,
        "gp": gp_case,
        "botorch": botorch_case,
        "mismatch": mismatch_case,
        "fail": fail_case,
        "hang": hang_case,
    }
    results = cases[case](rank)
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
