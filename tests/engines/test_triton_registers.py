"""The Triton kernel's tiles fit in registers: compiled for an H100 (sm_90a) by Triton and its
ptxas, which needs no GPU, the worst cases of ``_triton.TILES`` spill nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "triton_registers.py"


def _resources(*options: str) -> list[list[str]]:
    from triton import knobs

    try:  # the ptxas Triton ships for its CUDA backend (found by running its --version)
        found = Path(knobs.nvidia.ptxas.path).is_file()
    except Exception:  # no NVIDIA backend for this platform
        found = False
    if not found:
        pytest.skip("Triton's ptxas cannot run here")
    # Not under Triton's interpreter, which the Triton tests switch on in this process.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), *options], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [line.strip("|").split(" | ") for line in out.stdout.splitlines()[2:]]


@pytest.mark.parametrize(
    "options,cases",
    [
        (("--layers", "3", "--directions", "4"), 4),  # forward mode, 2 dtypes x relu, erf
        (("--layers", "3", "--directions", "0", "--dtypes", "float64"), 2),  # values
        (("--layers", "2", "3", "--directions", "0", "--dtypes", "float32"), 4),
        (("--readout", "mean", "--layers", "3", "--directions", "0"), 4),
        (("--readout", "geometric", "--layers", "2", "--directions", "4"), 4),
    ],
    ids=["forward-mode", "values-float64", "values-float32", "mean", "geometric"],
)
def test_tiles_do_not_spill(options, cases):
    rows = _resources(*options)
    assert len(rows) == cases
    for dtype, layers, directions, phi, tile, registers, stores, loads, *_ in rows:
        assert int(registers) <= 255
        assert (int(stores), int(loads)) == (0, 0), (dtype, layers, directions, phi, tile)
