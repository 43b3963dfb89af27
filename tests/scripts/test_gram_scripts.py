"""benchmarks/gram.py and benchmarks/mean_gram.py time the engine asked for and, with
``--fresh``, the first and the steady calls of the same Gram matrix in a new process."""

from __future__ import annotations

import sys
from functools import partial

import pytest
import torch
from helpers import BENCHMARKS, load_script


def _load(monkeypatch, name: str):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # mean_gram.py imports gram.py beside it
    return load_script(BENCHMARKS / f"{name}.py", name, partial(monkeypatch.setitem, sys.modules))


def _table(printed: str) -> list[dict[str, str]]:
    lines = [line for line in printed.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].split("|")[1:-1]]
    return [
        dict(zip(header, (c.strip() for c in r.split("|")[1:-1]), strict=True)) for r in lines[2:]
    ]


def test_gram_times_the_engine_and_a_fresh_process(monkeypatch, capsys):
    gram = _load(monkeypatch, "gram")
    gram.main(
        ["--sizes", "12", "--steps", "6", "--layers", "1", "--nonlinearities", "relu"]
        + ["--dtypes", "float64", "--variable", "no", "--engine", "tensor", "--fresh"]
    )
    (row,) = _table(capsys.readouterr().out)
    assert (row["N"], row["T"], row["dtype"]) == ("12", "6", "float64")
    assert float(row["fresh_first_s"]) > 0 and float(row["fresh_steady_s"]) > 0
    assert float(row["max_rel_diff"]) < 1e-12  # the tensor engine against the eager scan


def test_fresh_case_computes_the_asked_kernel(monkeypatch):
    """The fresh process's Gram matrix is the one asked for (readout included)."""
    gram = _load(monkeypatch, "gram")
    calls = []
    real = gram.recurrent_kernel

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(gram, "recurrent_kernel", spy)
    first, steady = gram.fresh_case(
        "tensor", 5, 4, 2, "erf", "torch.float64", "cpu", True, readout="mean"
    )
    assert first > 0 and steady > 0 and len(calls) == 3
    assert calls[0] == dict(nonlinearity="erf", num_layers=2, readout="mean", engine="tensor")


def test_mean_gram_reports_fresh_first_calls(monkeypatch, capsys):
    mean_gram = _load(monkeypatch, "mean_gram")
    mean_gram.main(["--sizes", "5", "--steps", "4", "--engine", "tensor", "--fresh"])
    (row,) = _table(capsys.readouterr().out)
    assert row["N"] == "5" and float(row["fresh_first_s"]) > 0
    assert float(row["fresh_steady_s"]) > 0 and float(row["max_rel_diff"]) == 0


def test_mean_gram_without_the_tensor_gradient(monkeypatch, capsys):
    """``--no-tensor-grad`` times the engine's gradient alone (the tensor path's columns say
    nan) and still checks the values against the tensor path."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    mean_gram = _load(monkeypatch, "mean_gram")
    mean_gram.main(["--sizes", "6", "--steps", "4", "--engine", "compiled", "--no-tensor-grad"])
    (row,) = _table(capsys.readouterr().out)
    assert row["tensor+grad_s"] == "nan" and float(row["fused+grad_s"]) > 0
    assert float(row["max_rel_diff"]) < 1e-12 and row["fp32_peak_frac"] == "-"


def test_triton_tiles_times_each_tile(monkeypatch, capsys):
    """``triton_tiles.py`` runs the Triton kernel (here under Triton's interpreter) on each
    tile asked for, the same Gram matrix on every one."""
    from gpytorch_rntk._core.engines.fused import triton_available

    if not triton_available(torch.device("cpu")):
        pytest.skip("Triton cannot run here")
    tiles = _load(monkeypatch, "triton_tiles")
    monkeypatch.setattr(tiles._triton, "tiles", tiles._triton.tiles)  # (restored after)
    tiles.main(
        ["--device", "cpu", "--n", "9", "--t", "3", "--layers", "1", "--readout", "mean"]
        + ["--dtype", "float64", "--gradient", "--repeats", "1", "--tiles", "16x16x4", "8x8x4"]
    )
    rows = _table(capsys.readouterr().out)
    assert [r["tile"] for r in rows] == ["16x16x4", "8x8x4"]
    assert float(rows[0]["baseline/tile"]) == 1.0 and float(rows[1]["max_rel_diff"]) < 1e-12


def test_small_sizes_times_both_engines(monkeypatch, capsys):
    """benchmarks/small_sizes.py prints one row per case and size, with both engines' seconds
    and their ratio (the compiled loop run eagerly here: no package is built)."""
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")
    small = _load(monkeypatch, "small_sizes")
    small.main(["--repeats", "1", "--threads", "1", "--sizes", "4,3", "6,4", "--largest-mean", "4"])
    rows = _table(capsys.readouterr().out)
    assert len(rows) == 4 * 2 - 1  # the mean readout at N = 4 only
    for row in rows:
        tensor, compiled = float(row["tensor_s"]), float(row["compiled_s"])
        assert tensor > 0 and compiled > 0
        # (each time is printed to 1e-4 s, the ratio to 0.01)
        slack = tensor / compiled * (5e-5 / tensor + 5e-5 / compiled) + 0.005
        assert abs(float(row["tensor / compiled"]) - tensor / compiled) <= slack
