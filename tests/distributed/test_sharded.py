"""Sharded Gram matrices and an exact GP on them, in two processes on the gloo backend (each
test launches ``sharded_worker.py`` under ``torchrun``; see there for the cases)."""

from __future__ import annotations

import time
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_ranks

from gpytorch_rntk import RNTKKernel, encode_sequences, gram_matrix
from gpytorch_rntk.distributed import ShardedKernel, gather_rows, local_rows, row_bounds

WORKER = Path(__file__).with_name("sharded_worker.py")


def _launch(case: str, out: Path) -> list[dict]:
    done = run_ranks(WORKER, case, str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def gram_results(tmp_path_factory) -> list[dict]:
    return _launch("gram", tmp_path_factory.mktemp("gram"))


@pytest.mark.parametrize("name", ["last", "last-bi", "mean", "mean-bi"])
def test_gathered_gram_equals_the_single_process_gram(gram_results, name):
    mine, other = gram_results[0][name], gram_results[1][name]
    # the two ranks hold adjacent, uneven blocks that the gather joins
    assert mine["bounds"] == other["bounds"] and len(mine["bounds"]) == 3
    assert mine["rows"] == range(*mine["bounds"][:2]) and other["rows"] == range(
        *mine["bounds"][1:]
    )
    assert torch.equal(mine["gathered"], torch.cat([mine["shard"], other["shard"]]))
    # bit for bit the single process's values for the same row blocks, and to round-off one
    # call on all rows (the tensor engine aligns and sorts each block by itself)
    assert torch.equal(mine["gathered"], mine["same_tiles"])
    assert _relative(mine["gathered"], mine["one_call"]) < 1e-14
    assert torch.equal(mine["forward"], mine["gathered"])
    # K(X, X) kept as row blocks: its dense form, diagonal, products and entries
    assert _relative(mine["symmetric_dense"], mine["single"]) < 1e-14
    assert torch.equal(mine["symmetric_diagonal"], mine["symmetric_dense"].diagonal())
    v = torch.linspace(-1, 1, 23 * 3, dtype=torch.float64).view(23, 3)
    assert torch.allclose(mine["symmetric_matmul"], mine["symmetric_dense"] @ v, rtol=1e-14)
    dense = mine["symmetric_dense"]
    assert torch.equal(mine["entries"], dense[[0, 22, 5, 22, 3], [3, 22, 0, 3, 20]])
    # each entry computed once: rank r keeps its rows from its diagonal block on, and the
    # dense form is those blocks mirrored, bit for bit as in one process
    a, b, n = *mine["symmetric_bounds"][:2], 23
    assert 0 < b < n and mine["symmetric_upper"].shape == (b - a, n - a)
    assert other["symmetric_upper"].shape == (n - b, n - b)
    assert torch.equal(mine["symmetric_dense"], mine["symmetric_same_tiles"])
    # computed a few columns per call (to bound the memory beyond the shard): the same values
    assert _relative(mine["chunked_symmetric"], mine["single"]) < 1e-14
    assert _relative(mine["chunked_cross"], mine["one_call"]) < 1e-14


def test_a_rank_without_rows(gram_results):
    """One sequence over two ranks: the first gets no rows, the gather still works."""
    mine, other = gram_results[0]["last"], gram_results[1]["last"]
    assert mine["one_sequence"].rows == range(0, 0) and other["one_sequence"].rows == range(0, 1)
    assert mine["one_sequence"].matrix.shape == (0, 17)
    assert torch.equal(mine["one_sequence_gathered"], mine["one_sequence_single"])


def test_gram_matrix_rows_and_gathered(gram_results):
    mine, other = gram_results[0]["gram_matrix"], gram_results[1]["gram_matrix"]
    joined = np.concatenate([mine["rows"].matrix, other["rows"].matrix])
    assert mine["rows"].rows.stop == other["rows"].rows.start
    np.testing.assert_array_equal(mine["gathered"], joined)
    np.testing.assert_allclose(mine["gathered"], mine["single"], rtol=1e-14)
    # K(x, x) gathered: each entry computed once (ShardedGram), the one-process matrix
    np.testing.assert_allclose(mine["symmetric_gathered"], mine["symmetric_single"], rtol=1e-14)
    # (symmetric to round-off: the tensor engine's own diagonal blocks are, 2e-16 apart)
    np.testing.assert_allclose(mine["symmetric_gathered"], mine["symmetric_gathered"].T, rtol=1e-14)


@pytest.fixture(scope="module")
def gp_results(tmp_path_factory) -> dict:
    return _launch("gp", tmp_path_factory.mktemp("gp"))[0]


def test_exact_gp_cholesky_path_equals_the_single_process(gp_results):
    """Below max_cholesky_size GPyTorch factors the gathered matrix: the marginal likelihood,
    its gradients (summed over the ranks' row blocks) and the predictions are the
    single-process Cholesky results."""
    sharded, exact = gp_results["cholesky"]["sharded"], gp_results["exact"]
    assert _relative(sharded["loss"], exact["loss"]) < 1e-12
    for got, want in zip(sharded["grads"].values(), exact["grads"].values(), strict=True):
        assert _relative(got, want) < 1e-12
    assert _relative(sharded["mean"], exact["mean"]) < 1e-12
    assert _relative(sharded["variance"], exact["variance"]) < 1e-12


def test_exact_gp_iterative_path_on_row_blocks(gp_results):
    """Above max_cholesky_size no rank holds the matrix: conjugate gradients and Lanczos run on
    the row blocks. With the same probe vectors the sharded run gives the single-process
    iterative run's values to the CG tolerance (1e-5; the runs' matrices differ in the last
    bit, so they may stop an iteration apart), and its predictions are the exact ones to that
    tolerance; the log-determinant is GPyTorch's stochastic estimate in both."""
    sharded, single = gp_results["iterative"]["sharded"], gp_results["iterative"]["single"]
    exact = gp_results["exact"]
    assert _relative(sharded["loss"], single["loss"]) < 1e-8
    # the gradient as one vector (the mean constant's is a near-cancellation, about 1e-4 of
    # the others)
    got, want = (torch.cat([g.reshape(-1) for g in r["grads"].values()]) for r in (sharded, single))
    assert _relative(got, want) < 1e-6
    for key in ("mean", "variance"):
        assert _relative(sharded[key], single[key]) < 1e-4
        assert _relative(sharded[key], exact[key]) < 1e-4


def test_botorch_fit_on_a_sharded_kernel(tmp_path):
    """The docs' example: fit_gpytorch_mll on the iterative path. The ranks end with the same
    hyperparameters and posterior bit for bit; the hyperparameters differ from the
    single-process fit's along the likelihood's flat direction (outputscale against input_var,
    each fit a stochastic objective), the predictions agree."""
    ranks = _launch("botorch", tmp_path)
    for name in ("sharded", "single"):
        for key, value in ranks[0][name]["parameters"].items():
            assert torch.equal(value, ranks[1][name]["parameters"][key])
        assert torch.equal(ranks[0][name]["mean"], ranks[1][name]["mean"])
    sharded, single = ranks[0]["sharded"], ranks[0]["single"]
    r2 = 1 - ((sharded["mean"] - sharded["test_y"]) ** 2).mean() / sharded["test_y"].var()
    assert r2 > 0.99
    assert _relative(sharded["mean"], single["mean"]) < 1e-4


def test_ranks_that_disagree_get_an_error_not_a_wrong_product(tmp_path):
    for errors in _launch("mismatch", tmp_path):
        assert "passed different inputs or hyperparameters" in errors["inputs"]
        assert "passed different inputs or hyperparameters" in errors["hyperparameters"]
        assert "passed different vectors to multiply" in errors["vectors"]
        assert "torch.manual_seed" in errors["vectors"]
        assert "must have world_size + 1 = 3 entries" in errors["bounds"]


def test_a_rank_that_fails_ends_the_run(tmp_path):
    """The other rank, waiting in a collective, does not wait for the timeout (60 s here)."""
    start = time.perf_counter()
    done = run_ranks(WORKER, "fail", str(tmp_path), timeout=120)
    assert done.returncode != 0
    assert "rank 1 fails on purpose" in done.stdout + done.stderr
    assert time.perf_counter() - start < 50


def test_a_rank_that_never_arrives_gives_a_clear_error(tmp_path):
    done = run_ranks(WORKER, "hang", str(tmp_path), timeout=120)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "another rank has probably stopped or not reached this point" in output
    raised = [line for line in output.splitlines() if "rank 0 raised after" in line]
    assert raised and float(raised[0].split("after ")[1].split(" s")[0]) < 30


def test_row_bounds_balance_the_work():
    assert row_bounds(torch.tensor([1.0, 1.0, 1.0, 1.0, 4.0]), 2) == (0, 4, 5)
    assert row_bounds(torch.ones(10), 3) == (0, 3, 7, 10)  # the middle row of a tie goes left
    assert row_bounds(torch.ones(1), 2) == (0, 0, 1)
    assert row_bounds(torch.zeros(4), 2) == (0, 2, 4)
    lengths = torch.randint(1, 100, (1000,), generator=torch.Generator().manual_seed(0)).double()
    bounds = row_bounds(lengths, 4)
    shares = torch.stack([lengths[a:b].sum() for a, b in pairwise(bounds)]) / lengths.sum()
    assert (shares - 0.25).abs().max() < 100 / lengths.sum()  # within one row's work
    with pytest.raises(ValueError, match="one number per row"):
        row_bounds(torch.ones(2, 2), 2)
    with pytest.raises(ValueError, match="positive integer"):
        row_bounds(torch.ones(2), 0)
    with pytest.raises(ValueError, match="non-negative"):
        row_bounds(torch.tensor([1.0, -1.0]), 2)


def test_without_a_process_group_the_error_says_what_to_do():
    x = encode_sequences([torch.randn(3, 1), torch.randn(4, 1)])
    message = "needs an initialised process group"
    with pytest.raises(RuntimeError, match=message):
        ShardedKernel(RNTKKernel(input_dim=1)).shard(x)
    with pytest.raises(RuntimeError, match=message):
        gather_rows(torch.zeros(1, 2), (0, 1))
    with pytest.raises(RuntimeError, match=message):
        local_rows(lambda: torch.zeros(1, 2))
    with pytest.raises(RuntimeError, match=message):
        gram_matrix([np.ones(3)], distributed="rows")
    with pytest.raises(ValueError, match="distributed must be None"):
        gram_matrix([np.ones(3)], distributed="shard")
    with pytest.raises(TypeError, match="gpytorch Kernel"):
        ShardedKernel(lambda x: x)
    with torch.autograd.forward_ad.dual_level():
        variance = torch.autograd.forward_ad.make_dual(torch.ones(()), torch.ones(()))
        with pytest.raises(ValueError, match="forward-mode tangents"):
            local_rows(lambda: variance * torch.ones(1, 2), [variance])
