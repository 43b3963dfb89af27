"""benchmarks/classification.py runs end to end at smoke size and writes its table."""

from __future__ import annotations

import math
import re
import sys

import pytest
import torch
from helpers import BENCHMARKS, load_script

aeon_datasets = pytest.importorskip("aeon.datasets")  # ships the data sets' .ts files

SCRIPT = BENCHMARKS / "classification.py"


@pytest.fixture(scope="module")
def classification():
    yield load_script(SCRIPT, "classification_benchmark")
    del sys.modules["classification_benchmark"]


def test_smoke_run_writes_the_table(classification, tmp_path):
    output = tmp_path / "classification.md"
    result = classification.main(
        ["--smoke", "--datasets", "ItalyPowerDemand", "--output", str(output)]
    )
    assert result["labels"] == ["RNTK select", "RBF GP", "SVM RBF", "1-NN ED"]
    accuracy = result["accuracy"]["ItalyPowerDemand"]
    assert set(accuracy) == set(result["labels"])
    # Two balanced classes: chance is 0.5; every method sits well above it even at smoke size.
    assert all(0.6 < a <= 1.0 for a in accuracy.values()), accuracy
    # The GP classifiers also get a test NLPD: below log 2 (chance for two classes) here.
    nlpd = result["nlpd"]["ItalyPowerDemand"]
    assert set(nlpd) == {"RNTK select", "RBF GP"}
    assert all(0 < v < math.log(2) for v in nlpd.values()), nlpd

    table = output.read_text()
    assert table == result["table"]
    lines = table.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:6] == ["data set", "N train", "N test", "T", "m", "classes"]
    assert header[6:] == [*result["labels"], "1-NN DTW (published)"]
    row = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert row[:6] == ["ItalyPowerDemand", "20 of 67", "60 of 1029", "24", "1", "2"]
    assert row[-1] == "0.950"
    # The select variant says what it chose on the training split, with its training MLL.
    chosen = table.split("Configurations chosen on the training split by `select`")[1]
    assert "criterion mll" in chosen
    assert re.search(
        r"- ItalyPowerDemand: RNTK (last|mean)( bi)?, [12] layers? \(MLL/N -?\d", chosen
    )


def test_class_probabilities_and_nlpd(classification):
    mean = torch.tensor([[2.0, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    # No posterior variance: the softmax of the means over the classes.
    exact = classification.class_probabilities(mean, torch.zeros_like(mean))
    assert torch.allclose(exact, torch.softmax(mean, dim=0))
    # With variance the probabilities still sum to one, and move towards 1/2 (more uncertain).
    spread = classification.class_probabilities(mean, torch.full_like(mean, 4.0), samples=4096)
    assert torch.allclose(spread.sum(0), torch.ones(3, dtype=torch.float64))
    assert ((spread[0] - 0.5).abs() < (exact[0] - 0.5).abs())[:2].all()
    # equal means: 1/2 up to the Monte Carlo error (about 0.006 with 4096 draws)
    assert (spread[:, 2] - 0.5).abs().max() < 0.03


def test_variant_names(classification):
    kv = classification.KernelVariant
    assert classification.parse_variants("rntk,nngp-bi,rbf,1nn", "last", False) == [
        kv("rntk", "last", False),
        kv("nngp", "last", True),
        "rbf",
        "1nn",
    ]
    # --readout and --bidirectional set what a name leaves open.
    assert classification.parse_variants("rntk,rntk-last-uni", "mean", True) == [
        kv("rntk", "mean", True),
        kv("rntk", "last", False),
    ]
    every = classification.parse_variants("all", "last", False)
    assert len({m for m in every if isinstance(m, kv)}) == 8
    assert every[8:] == ["select", "rbf", "svm", "1nn"]
    assert classification.parse_variants("select,svm", "last", False) == ["select", "svm"]
    assert classification.parse_variants(classification.DEFAULT_VARIANTS, "last", False) == [
        "select",
        "rbf",
        "svm",
        "1nn",
    ]
    with pytest.raises(ValueError, match="Unknown method"):
        classification.parse_variants("lstm", "last", False)


def test_mean_readout_and_bidirectional_variants_run(classification, tmp_path):
    result = classification.main(
        ["--smoke", "--iters", "1", "--max-train", "10", "--max-test", "10"]
        + ["--datasets", "ItalyPowerDemand", "--variants", "rntk-mean,nngp-bi"]
        + ["--output", str(tmp_path / "variants.md")]
    )
    assert result["labels"] == ["RNTK mean", "NNGP bi"]
    assert all(0.0 <= a <= 1.0 for a in result["accuracy"]["ItalyPowerDemand"].values())


def test_select_variant_options(classification, tmp_path):
    """--select-by loo and a smaller grid: two candidates, both printed, one chosen."""
    result = classification.main(
        ["--smoke", "--iters", "1", "--max-train", "10", "--max-test", "10"]
        + ["--datasets", "ItalyPowerDemand", "--variants", "select"]
        + ["--select-by", "loo", "--select-layers", "1", "--select-readouts", "last"]
        + ["--output", str(tmp_path / "select.md")]
    )
    assert result["labels"] == ["RNTK select"]
    assert 0.0 <= result["accuracy"]["ItalyPowerDemand"]["RNTK select"] <= 1.0
    assert "criterion loo" in result["table"] and "LOO/N" in result["table"]
    assert re.search(r"RNTK last( bi)?, 1 layer \(MLL/N", result["table"])


def test_selection_candidates(classification):
    args = classification.parse_args(["--select-layers", "1,2", "--select-kernels", "rntk,nngp"])
    candidates = classification.selection_candidates(args)
    assert len(candidates) == 16  # 2 kernels x 2 readouts x 2 directions x 2 depths
    assert classification.describe(candidates[-1]) == "NNGP mean bi, 2 layers"
    assert classification.describe({"readout": "last", "num_layers": 1}) == "RNTK last, 1 layer"


def test_svm_with_a_class_smaller_than_the_folds(classification):
    """C and gamma by cross-validation on the training split, also when a class has fewer
    members than folds (stratified 2-fold) or a single member (plain k-fold)."""
    import numpy as np

    rng = np.random.default_rng(0)
    centres = np.array([[0.0] * 6, [3.0] * 6, [-3.0] * 6])

    def sample(counts):
        y = np.repeat(np.arange(len(counts)), counts)
        return torch.from_numpy(centres[y] + rng.normal(size=(len(y), 6))), torch.from_numpy(y)

    test_x, test_y = sample([20, 20, 20])
    for counts, folds in (([12, 10, 2], "2-fold"), ([12, 10, 1], "5-fold")):
        train_x, train_y = sample(counts)
        accuracy, detail = classification.svm_accuracy(train_x, train_y, test_x, test_y, 0)
        assert folds in detail and "/ (D var)" in detail
        assert accuracy > 0.6


def test_unavailable_dataset_gets_a_row(classification, tmp_path):
    result = classification.main(
        ["--smoke", "--datasets", "NoSuchSet", "--variants", "1nn", "--output", str(tmp_path / "t")]
    )
    assert result["unavailable"] == ["NoSuchSet"]
    assert "NoSuchSet (not available offline)" in result["table"]


def test_stratified_subset_keeps_every_class(classification):
    import numpy as np

    labels = np.array([0] * 90 + [1] * 8 + [2] * 2)
    keep = classification.stratified_subset(labels, 10, np.random.default_rng(0))
    assert len(keep) == 10 and len(set(keep)) == 10
    assert set(labels[keep]) == {0, 1, 2}


def test_read_ts_matches_aeon(classification):
    import numpy as np

    # Equal-length univariate and variable-length multivariate (12 channels, 7-29 frames).
    for name in ("ItalyPowerDemand", "JapaneseVowels"):
        folder = classification.find_dataset(name, classification.bundled_data_dirs())
        path = folder / f"{name}_TRAIN.ts"
        seqs, labels = classification.read_ts(path)
        expected, expected_labels = aeon_datasets.load_from_ts_file(str(path))
        assert len(seqs) == len(expected)
        for ours, theirs in zip(seqs, expected, strict=True):
            np.testing.assert_array_equal(ours, np.asarray(theirs, dtype=np.float64).T)
        np.testing.assert_array_equal(labels, np.asarray(expected_labels).astype(str))


def test_geometric_decay_starts_keep_the_best_training_likelihood(classification, capsys):
    """With several starting decays the geometric readout keeps the fit of the highest training
    marginal likelihood: the same model as a single fit from that start."""
    common = ["--smoke", "--datasets", "ItalyPowerDemand", "--variants", "rntk-geo"]
    several = classification.main([*common, "--decay-starts", "0.5,0.99"])
    printed = capsys.readouterr().out
    found = re.search(
        r"decay starts \[0\.5, 0\.99\]: the best training MLL \(.*\) from (\S+)", printed
    )
    assert found, printed
    decay = re.search(r"readout_decay (\S+)", printed).group(1)
    single = classification.main([*common, "--decay-starts", found.group(1)])
    assert re.search(r"readout_decay (\S+)", capsys.readouterr().out).group(1) == decay
    assert single["accuracy"] == several["accuracy"] and single["nlpd"] == several["nlpd"]
