"""benchmarks/distributed.py: a small run launches itself under torchrun for one and two ranks
and prints its tables."""

from __future__ import annotations

import subprocess
import sys

from helpers import BENCHMARKS


def test_small_run_prints_every_table():
    command = [
        sys.executable,
        str(BENCHMARKS / "distributed.py"),
        "--size",
        "48",
        "--steps",
        "5",
        "--repeats",
        "1",
        "--mll-n",
        "48",
        "--engine",
        "tensor",
        "--ranks",
        "2",
        "--threads",
        "2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines if line.startswith(("1 rank", "2 ranks"))]
    assert len(rows) == 4  # (one thread, two ranks) x (symmetric, cross)
    two_ranks = [row for row in rows if row[0] == "2"]
    for row in rows:  # label, matrix, five figures, then each rank's own seconds
        ranks = 2 if row in two_ranks else 1
        assert len(row) == (6 if ranks == 2 else 5) + 5 + ranks
        [float(value) for value in row[-5 - ranks :]]  # all numbers
    memory = [line for line in lines if line.strip().startswith("2 ranks") and "/" in line]
    assert len(memory) == 1
    products = [line for line in lines if "products" in line]
    assert len(products) == 2 and all(int(line.split(", ")[-1].split()[0]) > 0 for line in products)
