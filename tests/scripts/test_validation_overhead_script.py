"""benchmarks/validation_overhead.py runs and prints a row per size with a ratio in (0, 1)."""

from __future__ import annotations

import sys
from functools import partial

from helpers import BENCHMARKS, load_script


def test_prints_the_ratio(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports gram.py beside it
    module = load_script(
        BENCHMARKS / "validation_overhead.py",
        "validation_overhead",
        partial(monkeypatch.setitem, sys.modules),
    )
    module.main(["--n", "6", "--b", "3", "--t", "5", "--calls", "2", "--repeats", "1"])
    rows = capsys.readouterr().out.splitlines()[3:]
    assert len(rows) == 1
    n, b, steps, call_ms, check_ms, ratio = (float(c) for c in rows[0].split("|")[1:-1])
    assert (n, b, steps) == (6, 3, 5)
    assert call_ms > 0 and check_ms > 0 and 0 < ratio < 1
