"""benchmarks/gram.py and benchmarks/mean_gram.py time the engine asked for and, with
``--fresh``, the first and the steady calls of the same Gram matrix in a new process."""

from __future__ import annotations

import sys
from functools import partial

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
