"""benchmarks/validation_overhead.py runs and prints a row per size with a ratio in (0, 1)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_prints_the_ratio(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # it imports gram.py beside it
    path = ROOT / "benchmarks" / "validation_overhead.py"
    spec = importlib.util.spec_from_file_location("validation_overhead", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    module.main(["--n", "6", "--b", "3", "--t", "5", "--calls", "2", "--repeats", "1"])
    rows = capsys.readouterr().out.splitlines()[3:]
    assert len(rows) == 1
    n, b, steps, call_ms, check_ms, ratio = (float(c) for c in rows[0].split("|")[1:-1])
    assert (n, b, steps) == (6, 3, 5)
    assert call_ms > 0 and check_ms > 0 and 0 < ratio < 1
