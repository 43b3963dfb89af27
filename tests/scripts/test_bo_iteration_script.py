"""benchmarks/bo_iteration.py: the smoke run prints one timed iteration per model, and its
objective and option parsing do what they say."""

from __future__ import annotations

import torch
from helpers import BENCHMARKS, load_script


def test_smoke_run_prints_a_row_per_model(capsys):
    module = load_script(BENCHMARKS / "bo_iteration.py", "bo_iteration")
    module.main(["--smoke", "--threads", "1", "--kernel-options", "nonlinearity=erf"])
    out = capsys.readouterr().out
    assert "'nonlinearity': 'erf'" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| r")]
    assert [r[0].strip() for r in rows] == ["rntk", "rbf"]
    for row in rows:
        fit_s, acq_s, total_s = (float(c) for c in row[3:])
        assert fit_s > 0 and acq_s > 0
        assert abs(total_s - fit_s - acq_s) < 0.011  # (each printed to 0.01 s)


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
