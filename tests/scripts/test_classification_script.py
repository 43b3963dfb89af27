"""benchmarks/classification.py runs end to end at smoke size and writes its table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

aeon_datasets = pytest.importorskip("aeon.datasets")  # ships the data sets' .ts files

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "classification.py"


@pytest.fixture(scope="module")
def classification():
    spec = importlib.util.spec_from_file_location("classification_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_smoke_run_writes_the_table(classification, tmp_path):
    output = tmp_path / "classification.md"
    result = classification.main(
        ["--smoke", "--datasets", "ItalyPowerDemand", "--output", str(output)]
    )
    assert result["labels"] == ["RNTK", "RBF GP", "1-NN ED"]
    accuracy = result["accuracy"]["ItalyPowerDemand"]
    assert set(accuracy) == set(result["labels"])
    # Two balanced classes: chance is 0.5; every method sits well above it even at smoke size.
    assert all(0.6 < a <= 1.0 for a in accuracy.values()), accuracy

    table = output.read_text()
    assert table == result["table"]
    lines = table.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:6] == ["data set", "N train", "N test", "T", "m", "classes"]
    assert header[6:] == [*result["labels"], "1-NN DTW (published)"]
    row = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert row[:6] == ["ItalyPowerDemand", "20 of 67", "60 of 1029", "24", "1", "2"]
    assert row[-1] == "0.950"


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
