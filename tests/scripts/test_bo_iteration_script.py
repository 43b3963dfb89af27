"""benchmarks/bo_iteration.py: the smoke run prints one timed iteration per model, and its
objective and option parsing do what they say."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import BENCHMARKS, load_script


def test_smoke_run_prints_a_row_per_model_and_setting(capsys):
    module = load_script(BENCHMARKS / "bo_iteration.py", "bo_iteration")
    module.main(
        ["--smoke", "--threads", "1", "--kernel-options", "nonlinearity=erf", "--settings"]
        + ["1,8,5", "2,8,3"]
    )
    out = capsys.readouterr().out
    assert "'nonlinearity': 'erf'" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| r")]
    assert [(r[0].strip(), r[3].strip()) for r in rows] == [
        ("rntk", "1,8,5"),
        ("rntk", "2,8,3"),
        ("rbf", "1,8,5"),
        ("rbf", "2,8,3"),
    ]
    for row in rows:
        fit_s, acq_s, total_s, value = (float(c) for c in row[4:])
        assert fit_s > 0 and acq_s > 0 and math.isfinite(value)
        assert abs(total_s - fit_s - acq_s) < 0.011  # (each printed to 0.01 s)
    assert rows[0][4] == rows[1][4]  # one fit per repeat, shared by the settings


def test_bad_settings_are_refused():
    module = load_script(BENCHMARKS / "bo_iteration.py", "bo_iteration")
    with pytest.raises(SystemExit):
        module.main(["--smoke", "--settings", "4,128"])


def test_objective_and_options():
    module = load_script(BENCHMARKS / "bo_iteration.py", "bo_iteration")
    assert module.parse_options(["normalize=True", "num_layers=2", "nonlinearity=erf"]) == {
        "normalize": True,
        "num_layers": 2,
        "nonlinearity": "erf",
    }
    x = torch.zeros(3, 4 * 2, dtype=torch.float64)
    assert module.objective(x, 4, 2).shape == (3, 1)
    assert module.objective(x, 4, 2).abs().max() == 0  # sin(0) = 0
    # the last step weighs most: a change there moves the objective more than at the start
    first, last = x.clone(), x.clone()
    first[:, 0], last[:, -1] = 0.3, 0.3
    assert module.objective(last, 4, 2)[0] > module.objective(first, 4, 2)[0] > 0
