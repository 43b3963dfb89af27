"""benchmarks/ehrlich_bo.py: the smoke run on an Ehrlich function, and its pieces."""

from __future__ import annotations

import pytest
import torch
from helpers import BENCHMARKS, load_script

pytest.importorskip("holo.test_functions.closed_form")

SCRIPT = BENCHMARKS / "ehrlich_bo.py"


@pytest.fixture(scope="module")
def benchmark():
    return load_script(SCRIPT, "ehrlich_benchmark")


def test_initial_designs_are_feasible_and_the_optimum_scores_one(benchmark):
    function = benchmark.ehrlich(8, 12, 2, 3, seed=4)
    designs = benchmark.markov_samples(function, 20, torch.Generator().manual_seed(0))
    assert all(torch.isfinite(function(d.unsqueeze(0))).all() for d in designs)
    scores = benchmark.score(function, designs)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert benchmark.score(function, [function.optimal_solution()]).item() == 1.0
    # an infeasible design (a forbidden transition) is counted 0, not -inf
    banned = (function.transition_matrix == 0).nonzero()[0].tolist()
    bad = torch.tensor(banned * 6)
    assert function(bad.unsqueeze(0)).item() == -float("inf")
    assert benchmark.score(function, [bad]).item() == 0.0


def test_feasibility_is_the_transition_matrix(benchmark):
    function = benchmark.ehrlich(8, 12, 2, 3, seed=4)
    feasible = benchmark.feasibility(function)
    designs = benchmark.markov_samples(function, 20, torch.Generator().manual_seed(0))
    assert all(feasible(d) for d in designs)
    a, b = (function.transition_matrix == 0).nonzero()[0].tolist()
    bad = designs[0].clone()
    bad[4], bad[5] = a, b
    assert not feasible(bad) and function(bad.unsqueeze(0)).item() == -float("inf")


def test_ga_children_are_new_feasible_designs(benchmark):
    function = benchmark.ehrlich(8, 12, 2, 3, seed=4)
    gen = torch.Generator().manual_seed(1)
    designs = benchmark.markov_samples(function, 6, gen)
    values = benchmark.score(function, designs)
    children = benchmark.propose_ga(designs, values, function, 5, gen)
    keys = {tuple(c.tolist()) for c in children}
    assert len(keys) == 5 and not keys & {tuple(d.tolist()) for d in designs}
    assert all(c.shape == (12,) and c.min() >= 0 and c.max() < 8 for c in children)
    assert all(torch.isfinite(function(c.unsqueeze(0))).all() for c in children)


def test_smoke_run_prints_every_method(benchmark, capsys):
    benchmark.main(["--smoke"])
    rows = [line for line in capsys.readouterr().out.splitlines() if " | " in line]
    assert rows[0].startswith("method | s/round | best@6 | best@8")
    table = {row.split(" | ")[0]: row.split(" | ")[2:] for row in rows[1:]}
    assert set(table) == set(benchmark.METHODS)
    for cells in table.values():
        best = [float(cell.split(" +- ")[0]) for cell in cells]
        assert len(best) == 2 and 0 <= best[0] <= best[1] <= 1


def test_evolve_search_returns_new_feasible_children(benchmark, capsys):
    """--search evolve: the GP methods evaluate GA children chosen by the acquisition."""
    benchmark.main(["--smoke", "--search", "evolve", "--methods", "rntk,onehot"])
    assert "GP search evolve" in capsys.readouterr().out
    function = benchmark.ehrlich(8, 12, 2, 3, seed=4)
    gen = torch.Generator().manual_seed(2)
    designs = benchmark.markov_samples(function, 8, gen)
    values = benchmark.score(function, designs)
    options = benchmark.argparse.Namespace(
        search="evolve", pool=32, batch=3, rntk_kwargs={}, starts=2, fresh=1
    )
    found = benchmark.propose_gp("rntk", designs, values, function, options, gen)
    keys = {tuple(t.tolist()) for t in found}
    assert len(keys) == 3 and not keys & {tuple(d.tolist()) for d in designs}
    assert all(benchmark.feasibility(function)(t) for t in found)


def test_runs_split_by_seed_summarise_together(benchmark, capsys, tmp_path):
    """--first-seed and --curves split a run over processes; --summarise reads them back."""
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for first, path in zip((0, 1), files, strict=True):
        benchmark.main(
            ["--smoke", "--methods", "ga", "--first-seed", str(first), "--curves", str(path)]
        )
    capsys.readouterr()
    records = [benchmark.json.loads(p.read_text()) for p in files]
    assert [r["seed"] for r in records] == [0, 1]
    benchmark.main(["--summarise", *map(str, files)])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ga, ")]
    assert len(rows) == 1 and rows[0].startswith("ga, 2 seeds | ")
    best = torch.tensor([r["best"] for r in records])
    means = [float(cell.split(" +- ")[0]) for cell in rows[0].split(" | ")[2:]]
    assert means == pytest.approx([round(v, 3) for v in best.mean(0).tolist()], abs=1e-9)
    with pytest.raises(SystemExit, match="seed 0 of ga"):  # the same seed twice
        benchmark.main(["--summarise", str(files[0]), str(files[0])])


def test_prior_variance_is_constant_only_when_normalised(benchmark, capsys):
    """--prior-variance: the mean-readout RNTK's k(x, x) varies over designs; normalised, not."""
    common = ["--prior-variance", "--sizes", "8,12,2,3", "--seeds", "1", "--init", "12"]
    common += ["--pool", "32"]
    benchmark.main([*common, "--rntk-options", "readout=mean"])
    benchmark.main([*common, "--rntk-options", "readout=mean,normalize=True"])
    plain, normalised = [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("v, T")
    ]
    ratio = float(plain.split("(max / min ")[1].split(")")[0])
    assert ratio > 1.05 and float(plain.rsplit(" ", 1)[1]) > 0.5  # repetitive designs higher
    assert "(max / min 1)" in normalised and normalised.endswith("none (constant)")
