"""benchmarks/compare_revisions.py: this checkout against a copy of itself, which must agree."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from helpers import BENCHMARKS, load_script

ROOT = Path(__file__).resolve().parents[2]


def test_against_itself(monkeypatch, capsys):
    monkeypatch.setenv("GPYTORCH_RNTK_COMPILE", "0")  # the compiled loop, run eagerly
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports gram.py beside it
    monkeypatch.setattr(sys, "path", list(sys.path))  # it adds the old engine's folder
    for name in [m for m in sys.modules if m.startswith("gpytorch_rntk_old")]:
        monkeypatch.delitem(sys.modules, name)
    module = load_script(
        BENCHMARKS / "compare_revisions.py",
        "compare_revisions",
        partial(monkeypatch.setitem, sys.modules),
    )

    try:  # the "old" engine: this checkout's package, copied (a folder, no git needed)
        module.main(["--against", str(ROOT), "--n", "24", "--t", "10", "--repeats", "1"])
    finally:
        for name in [m for m in sys.modules if m.startswith("gpytorch_rntk_old")]:
            del sys.modules[name]
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|")[1:-1] for line in lines[3:5]]
    assert [row[0].strip() for row in rows] == ["values", "gradient"]
    for _, old, new, ratio, gram, _ in rows:
        assert float(old) > 0 and float(new) > 0
        assert abs(float(ratio) - float(old) / float(new)) < 0.01 * float(ratio)
        assert float(gram) == 0  # the same code on the same inputs
    assert float(rows[1][5]) == 0
    assert lines[5].startswith("gradient/values: old ")
