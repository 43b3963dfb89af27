"""Data-parallel SVGP training with DistributedDataParallel on the gloo backend: two ranks with
batch B follow the trajectory of one rank with batch 2B (``variational_worker.py``, launched
under ``torchrun`` once per world size)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import run_ranks

from gpytorch_rntk.distributed import DataParallelELBO, split_batch

WORKER = Path(__file__).with_name("variational_worker.py")
# 63 rows in global batches of 16: the last one (15 rows) splits unevenly, 8 and 7, which the
# data term's weight must make up for.
N_DATA, BATCH, EPOCHS = 63, 8, 3


def _train(nproc: int, batch_size: int, out: Path) -> dict:
    done = run_ranks(
        WORKER,
        str(out),
        f"--batch-size={batch_size}",
        f"--n-data={N_DATA}",
        f"--epochs={EPOCHS}",
        nproc=nproc,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory) -> tuple[dict, dict]:
    folder = tmp_path_factory.mktemp("variational_ddp")
    return _train(1, 2 * BATCH, folder / "one.pt"), _train(2, BATCH, folder / "two.pt")


def test_two_ranks_follow_the_one_rank_trajectory(trajectories):
    one, two = trajectories
    assert (one["world_size"], two["world_size"]) == (1, 2)
    steps = EPOCHS * -(-N_DATA // (2 * BATCH))
    assert one["losses"].shape == two["losses"].shape == (steps,)
    assert one["losses"][-1] < one["losses"][0]  # it trained
    # Round-off only: the sum over the batch splits into two partial sums, and float64 keeps
    # the difference near 1e-15 over these steps.
    torch.testing.assert_close(two["losses"], one["losses"], rtol=1e-11, atol=0)
    assert one["state"].keys() == two["state"].keys()
    for name, want in one["state"].items():
        scale = want.abs().max()
        assert (two["state"][name] - want).abs().max() <= 1e-11 * scale, name
    # Every rank applied the same all-reduced gradients: bit for bit the same parameters.
    assert two["rank_spread"] == 0


def test_split_batch_covers_the_batch_and_weighs_its_rows():
    batch = torch.arange(100, 115)
    pieces = [split_batch(batch, rank, 2) for rank in (0, 1)]
    assert torch.equal(torch.cat([rows for rows, _ in pieces]), batch)
    assert [len(rows) for rows, _ in pieces] == [8, 7]
    assert [share for _, share in pieces] == [16 / 15, 14 / 15]
    assert split_batch(batch[:8], 1, 2)[1] == 1.0  # even pieces: the plain ELBO


def test_split_batch_refuses_a_batch_smaller_than_the_world():
    with pytest.raises(ValueError, match="1 rows cannot be split over 2 ranks"):
        split_batch(torch.arange(1), 1, 2)
    with pytest.raises(ValueError, match="rank 2 is outside a world of size 2"):
        split_batch(torch.arange(4), 2, 2)


def test_data_parallel_elbo_with_share_one_is_the_elbo():
    """Its terms, recombined, are GPyTorch's ELBO bit for bit; a share weights the data term."""
    import gpytorch

    from gpytorch_rntk import encode_sequences
    from gpytorch_rntk.models import SequenceVariationalGP, inducing_sequences

    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randn(t, 1, generator=gen, dtype=torch.float64) for t in (3, 5, 4, 6, 2)]
    x, y = encode_sequences(seqs), torch.randn(5, generator=gen, dtype=torch.float64)
    model = SequenceVariationalGP(inducing_sequences(x, 3), input_dim=1).double()
    likelihood = gpytorch.likelihoods.GaussianLikelihood().double()
    loss = DataParallelELBO(model, likelihood, num_data=50)
    elbo = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=50)
    assert torch.equal(loss(x, y), -elbo(model(x), y))
    terms = gpytorch.mlls.VariationalELBO(likelihood, model, 50, combine_terms=False)
    data, kl, prior = terms(model(x), y)
    assert torch.equal(loss(x, y, share=0.5), -(0.5 * data - kl + prior))
