"""benchmarks/mll_gradient.py and mll_linear_algebra.py: small runs whose rows must agree on the
loss and gradients."""

from __future__ import annotations

import sys
from functools import partial

import pytest
from helpers import BENCHMARKS, load_script


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_engines_agree(monkeypatch, capsys, nonlinearity):
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")  # the compiled loop, run eagerly
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports gram.py beside it
    register = partial(monkeypatch.setitem, sys.modules)
    module = load_script(BENCHMARKS / "mll_gradient.py", "mll_gradient", register)

    options = ["--n", "30", "--t", "12", "--repeats", "1", "--engines", "tensor", "fused"]
    options += ["--nonlinearity", nonlinearity]
    module.main([*options, "--mlls", "gpytorch", "cholesky"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[3:]]
    assert {row[2].strip() for row in rows} == {nonlinearity}
    assert [(row[0].strip(), row[1].strip()) for row in rows] == [
        ("tensor", "gpytorch"),
        ("tensor", "cholesky"),
        ("fused", "gpytorch"),
        ("fused", "cholesky"),
    ]
    for row in rows:
        forward, gradient, ratio = (float(c) for c in row[7:10])
        assert forward > 0 and gradient > 0 and abs(ratio - gradient / forward) < 0.01 * ratio
    # loss and every hyperparameter's gradient against the first row's (float64)
    assert float(rows[0][10]) == 0 and all(float(row[10]) < 1e-10 for row in rows[1:])


def test_linear_algebra_agrees(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    register = partial(monkeypatch.setitem, sys.modules)
    module = load_script(BENCHMARKS / "mll_linear_algebra.py", "mll_linear_algebra", register)

    module.main(["--n", "40", "--repeats", "1"])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines()[3:]]
    assert [row[1].strip() for row in rows] == ["gpytorch", "cholesky"]
    for row in rows:
        forward, gradient = float(row[2]), float(row[3])
        assert forward > 0 and gradient > 0
    # the written-down d/dK against PyTorch's Cholesky backward (float64)
    assert float(rows[0][5]) == 0 and float(rows[1][5]) < 1e-12
