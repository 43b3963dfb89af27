"""benchmarks/uci.py: the smoke run on one small UCI set, and the Grams it slices."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import BENCHMARKS, load_script

pytest.importorskip("sklearn")
pytest.importorskip("botorch")
pytest.importorskip("tqdm")

SCRIPT = BENCHMARKS / "uci.py"


@pytest.fixture(scope="module")
def uci():
    module = load_script(SCRIPT, "uci_benchmark")
    if not (Path(module.DEFAULT_DATA) / "iris" / "iris_R.dat").exists():
        pytest.skip(f"UCI data not found at {module.DEFAULT_DATA} (set UCI_DATA)")
    return module


def test_smoke_run_on_one_set(uci, tmp_path):
    out = tmp_path / "uci.csv"
    summary = uci.main(["--smoke", "--datasets", "iris", "--out", str(out)])

    with out.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["dataset", "rows", "total_rows", "features", "classes", *uci.METHODS]
    assert [row[0] for row in rows[1:]] == ["iris", "mean"]
    assert rows[1][1:5] == [str(uci.SMOKE_MAX_ROWS), "150", "4", "3"]
    accuracies = np.array([[float(a) for a in row[5:]] for row in rows[1:]])
    assert accuracies.shape == (2, len(uci.METHODS))
    assert np.all((accuracies >= 0) & (accuracies <= 1))
    np.testing.assert_allclose(accuracies[0], accuracies[1])  # the mean over one set
    assert json.loads(out.with_suffix(".json").read_text())["subset"] == summary["subset"]

    methods = summary["datasets"][0]["methods"]
    for method in uci.METHODS:  # 4 test accuracies, their mean reported
        assert len(methods[method]["test_accuracies"]) == 4
        assert methods[method]["accuracy"] == pytest.approx(
            np.mean(methods[method]["test_accuracies"])
        )
    for kind in uci.RECURRENT_KINDS:  # the selected order is the best on validation
        selected = methods[f"{kind}-selected"]
        order = selected["chosen"][0]["order"]
        best = max(methods[f"{kind}-{o}"]["validation"][0] for o in uci.ORDERS)
        assert selected["validation"][0] == best == methods[f"{kind}-{order}"]["validation"][0]
        assert selected["test_accuracies"] == methods[f"{kind}-{order}"]["test_accuracies"]


def test_subsampled_splits_stay_splits(uci):
    data = uci.load_dataset(Path(uci.DEFAULT_DATA), "iris", max_rows=50, seed=3)
    assert data.x.shape == (50, 4) and data.total_rows == 150
    assert np.linalg.norm(data.x, axis=1).max() == pytest.approx(1.0)  # the authors' scaling
    fit, validate = data.validation
    assert np.intersect1d(fit, validate).size == 0
    assert sorted(np.concatenate([fit, validate])) == list(range(50))
    for train, test in data.folds:
        assert np.intersect1d(train, test).size == 0 and train.max() < 50 and test.max() < 50
    for task in uci.selection_tasks(data, "inner"):  # no test row takes part in the choice
        (train, test) = task.pairs[0]
        assert np.intersect1d(np.concatenate([task.fit, task.validate]), test).size == 0
        assert sorted(np.concatenate([task.fit, task.validate])) == sorted(train)


def test_sliced_grams_are_the_kernels(uci):
    """The reversed and bidirectional Grams built from two scans match ``gram_matrix``."""
    from gpytorch_rntk import gram_matrix

    x = np.random.default_rng(0).normal(size=(7, 5)) / 3
    setting, grams = next(uci.recurrent_grams(x, {**uci.GRIDS["smoke"], "num_layers": [2]}))
    variances = {k: setting[k] for k in ("recurrent_var", "input_var", "bias_var")}
    rows = list(x[:, :, None])
    for kind in uci.RECURRENT_KINDS:
        forward = gram_matrix(rows, kernel=kind, num_layers=2, **variances)
        both = gram_matrix(rows, kernel=kind, num_layers=2, bidirectional=True, **variances)
        reversed_rows = [r[::-1].copy() for r in rows]
        backward = gram_matrix(reversed_rows, kernel=kind, num_layers=2, **variances)
        np.testing.assert_allclose(grams[f"{kind}-forward"], forward, rtol=1e-12)
        np.testing.assert_allclose(grams[f"{kind}-reversed"], backward, rtol=1e-12)
        np.testing.assert_allclose(grams[f"{kind}-bidirectional"], both, rtol=1e-12)
    assert not np.allclose(grams["rntk-forward"], grams["nngp-forward"])
