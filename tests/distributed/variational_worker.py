"""Run by ``tests/distributed/test_variational_ddp.py`` under ``torchrun`` (every rank runs it):
``python variational_worker.py OUT --batch-size B``. Data-parallel training of a
:class:`~gpytorch_rntk.models.SequenceVariationalGP`: natural gradients (``gpytorch.optim.NGD``)
for q(u), Adam for the hyperparameters, the likelihood's noise and the inducing sequences, with
the ELBO wrapped in ``DistributedDataParallel``.

Every step the ranks draw the same global mini-batch of ``world_size * B`` sequences (one
generator, one seed) and rank ``r`` trains on the ``r``-th contiguous piece of it, so one
process with batch ``2B`` sees exactly the batches that two processes with batch ``B`` share.
Rank 0 saves the global loss of every step (the mean of the ranks' losses) and the final
parameters to ``OUT`` with ``torch.save``.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import gpytorch
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from gpytorch_rntk import encode_sequences
from gpytorch_rntk.distributed import DataParallelELBO, split_batch
from gpytorch_rntk.models import SequenceVariationalGP, inducing_sequences

DTYPE = torch.float64


def sequences(n: int, m: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` random sequences of 2-10 steps of dimension ``m`` (encoded) and noisy targets."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 11, (n,), generator=gen).tolist()
    seqs = [torch.randn(t, m, generator=gen, dtype=DTYPE) for t in lengths]
    y = torch.stack([s[-2:].sum() for s in seqs]) + 0.1 * torch.randn(n, generator=gen, dtype=DTYPE)
    return encode_sequences(seqs), y


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where rank 0 saves the losses and parameters")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per rank B")
    parser.add_argument("--n-data", type=int, default=63, help="training sequences N")
    parser.add_argument("--inducing", type=int, default=8, help="inducing sequences M")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    # A timeout, so that a rank that dies or hangs makes the others fail instead of waiting for
    # the default 30 minutes.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(args.seed)  # the same on every rank (and for every world size)

    x, y = sequences(args.n_data, m=2, seed=args.seed)
    model = SequenceVariationalGP(
        inducing_sequences(x, args.inducing),
        input_dim=2,
        variational_distribution=gpytorch.variational.NaturalVariationalDistribution,
    ).to(DTYPE)
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(DTYPE)
    # GPyTorch initialises q(u) from the prior (plus random noise) at the first call; do it
    # before wrapping, so that DDP's start-up broadcast of rank 0's parameters covers it.
    with torch.no_grad():
        model(x[:1])
    # DDP's forward re-broadcasts rank 0's buffers (the inducing lengths, GPyTorch's flags and
    # constraint bounds): they never change, so this is one small redundant broadcast a step,
    # kept because the switch to skip it was renamed in torch 2.13 (broadcast_buffers ->
    # forward_sync_buffers) and the package supports torch >= 2.1.
    elbo = DistributedDataParallel(DataParallelELBO(model, likelihood, num_data=len(y)))
    optimizers = [
        gpytorch.optim.NGD(model.variational_parameters(), num_data=len(y), lr=0.1),
        torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=0.05),
    ]

    generator = torch.Generator().manual_seed(args.seed)  # the global batch order
    losses = []
    for _ in range(args.epochs):
        for batch in torch.randperm(len(y), generator=generator).split(
            args.batch_size * world_size
        ):
            rows, share = split_batch(batch, rank, world_size)
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss = elbo(x[rows], y[rows], share)
            loss.backward()  # DDP averages the gradients over the ranks here
            for optimizer in optimizers:
                optimizer.step()  # the same averaged gradients, so the same step on each rank
            global_loss = loss.detach().clone()
            dist.all_reduce(global_loss)
            losses.append(global_loss / world_size)

    # The ranks must hold the same parameters: gather them all to check on rank 0.
    state = {
        name: value.detach().clone()
        for name, value in [*model.named_parameters(), *likelihood.named_parameters()]
    }
    flat = torch.cat([value.flatten() for value in state.values()])
    everyone = [torch.empty_like(flat) for _ in range(world_size)]
    dist.all_gather(everyone, flat)
    if rank == 0:
        torch.save(
            {
                "world_size": world_size,
                "losses": torch.stack(losses),
                "state": state,
                "rank_spread": max((other - flat).abs().max().item() for other in everyone),
            },
            args.out,
        )
        print(f"world size {world_size}: final loss {losses[-1].item():.6f}", flush=True)
    dist.barrier()  # no rank leaves while rank 0 is still saving
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
