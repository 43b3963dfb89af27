"""Validate the two test oracles: ``reference.py`` (golden values; alignment and variant
identities) and ``finite_width.py`` (Monte Carlo). docs/kernels.md states the recursions and
variants, and under *How the kernels are checked* the golden values and the Monte Carlo check.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from finite_width import assert_agrees, empirical_kernel_statistics
from reference import reference_gram, reference_kernel


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


# ---------------------------------------------- G1 (docs/kernels.md, *Golden values*)
G1_X = _t([[1.0, 0.0], [-0.5, 1.0], [2.0, -1.0]])
G1_XP = _t([[0.3, -0.2], [0.7, 0.4]])
G1_HP: dict[str, Any] = {
    "recurrent_var": 2.0,
    "input_var": 1.0,
    "bias_var": 0.01,
    "init_var": 0.25,
    "initial_state": "per_input",
}
# phi, L, (Th(x,x), Th(x,x'), Th(x',x'), K(x,x), K(x,x'), K(x',x'))
G1_TABLE = [
    (
        "relu",
        1,
        (5.4825000000, 0.7262460424, 1.1975000000, 2.0775000000, 0.5176502390, 0.4550000000),
    ),
    (
        "relu",
        2,
        (7.9850000000, 1.0324259121, 2.1762500000, 1.9675000000, 0.6342877656, 0.6312500000),
    ),
    (
        "erf",
        1,
        (2.6823299285, 0.1511457914, 1.5113373936, 0.6825350268, 0.0932982896, 0.4744467700),
    ),
    (
        "erf",
        2,
        (4.2288611281, 0.0213518661, 2.4928916382, 0.5689928887, 0.0174885329, 0.5220889178),
    ),
]


@pytest.mark.parametrize(("nonlinearity", "num_layers", "golden"), G1_TABLE)
def test_golden_g1(nonlinearity: str, num_layers: int, golden: tuple[float, ...]) -> None:
    """Reference matches G1 (mixed lengths T = 3, T' = 2, per-input initial state) to 1e-9."""
    pairs = ((G1_X, G1_X), (G1_X, G1_XP), (G1_XP, G1_XP))
    kw = {"num_layers": num_layers, "nonlinearity": nonlinearity, **G1_HP}
    got = [reference_kernel(a, b, ntk=ntk, **kw) for ntk in (True, False) for a, b in pairs]
    assert got == pytest.approx(golden, abs=1e-9, rel=0)
    # symmetry: Th(x', x) = Th(x, x') up to rounding
    assert reference_kernel(G1_XP, G1_X, **kw) == pytest.approx(got[1], abs=1e-13, rel=0)


# ---------------------------------------------- G2 (docs/kernels.md, *Golden values*)
G2_X = [
    row[:, None]
    for row in _t([[0.5, -0.2, 0.1, 0.3], [-0.4, 0.4, 0.2, -0.1], [0.1, 0.1, -0.6, 0.2]])
]
G2_HP: dict[str, Any] = {
    "nonlinearity": "relu",
    "recurrent_var": 1.4142**2,
    "input_var": 0.25,
    "bias_var": 0.01,
}
G2_TABLE = [
    (
        1,
        True,
        [
            [0.2724876771, 0.0665002389, 0.0826285475],
            [0.0665002389, 0.2674883963, 0.0569493751],
            [0.0826285475, 0.0569493751, 0.2262443659],
        ],
    ),
    (
        1,
        False,
        [
            [0.0687474107, 0.0393073999, 0.0448956987],
            [0.0393073999, 0.0662474107, 0.0361384593],
            [0.0448956987, 0.0361384593, 0.0724984416],
        ],
    ),
    (
        2,
        True,
        [
            [0.2098341602, 0.0850518443, 0.0914666841],
            [0.0850518443, 0.2042099513, 0.0810886790],
            [0.0914666841, 0.0810886790, 0.1542137693],
        ],
    ),
    (
        2,
        False,
        [
            [0.0454669579, 0.0357974164, 0.0347560472],
            [0.0357974164, 0.0451545478, 0.0331677376],
            [0.0347560472, 0.0331677376, 0.0392176651],
        ],
    ),
]


@pytest.mark.parametrize(("num_layers", "ntk", "golden"), G2_TABLE)
def test_golden_g2(num_layers: int, ntk: bool, golden: list[list[float]]) -> None:
    """Reference Gram matrix matches G2 (s_w = 1.4142 exactly, s_h = 0) to 1e-9."""
    got = reference_gram(G2_X, G2_X, num_layers=num_layers, ntk=ntk, **G2_HP)
    assert (got - _t(golden)).abs().max() < 1e-9


# ---------------------------------------------------------------- identities
def _seqs(lengths: list[int], m: int = 2, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(T, m, generator=gen, dtype=torch.float64) for T in lengths]


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_last_readout_only_needs_aligned_diagonal(nonlinearity: str) -> None:
    """With last-step readout only the diagonal t' - t = T' - T is used (docs/kernels.md,
    *Alignment at the last element*).

    ``aligned_only`` leaves every other cell NaN, so any dependency on them would show up.
    """
    xs = _seqs([1, 2, 4, 5])
    for ntk in (True, False):
        kw: dict[str, Any] = {
            "num_layers": 2,
            "nonlinearity": nonlinearity,
            "recurrent_var": 1.3,
            "input_var": 0.8,
            "bias_var": 0.1,
            "init_var": 0.3,
            "initial_state": "per_input",
            "ntk": ntk,
            "frozen_layers": 1,
        }
        full = reference_gram(xs, xs, **kw)
        assert torch.equal(full, reference_gram(xs, xs, aligned_only=True, **kw))
        assert torch.isfinite(full).all()
        assert torch.equal(full, full.T)


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_variant_identities(nonlinearity: str) -> None:
    """L_f = L gives the NNGP kernel; mean = last for T = 1; bidirectional = sum of directions."""
    xs = _seqs([1, 3, 4])
    kw: dict[str, Any] = {
        "num_layers": 2,
        "nonlinearity": nonlinearity,
        "recurrent_var": 1.5,
        "input_var": 1.0,
        "bias_var": 0.1,
    }
    nngp = reference_gram(xs, xs, ntk=False, **kw)
    assert torch.equal(reference_gram(xs, xs, frozen_layers=2, **kw), nngp)
    ones = _seqs([1, 1, 1], seed=1)
    mean = reference_gram(ones, ones, readout="mean", **kw)
    assert torch.equal(mean, reference_gram(ones, ones, **kw))
    rev = [x.flip(0) for x in xs]
    bi = reference_gram(xs, xs, bidirectional=True, **kw)
    torch.testing.assert_close(bi, reference_gram(xs, xs, **kw) + reference_gram(rev, rev, **kw))


# ------------------------------------------------ Monte Carlo (docs/kernels.md, finite networks)
MC_HP: dict[str, Any] = {"recurrent_var": 1.5, "input_var": 1.0, "bias_var": 0.1}


def _mc_check(xs: list[torch.Tensor], width: int, seeds: range, **kw: Any) -> None:
    """The seed-averaged empirical (NTK, NNGP) against the reference (``assert_agrees``)."""
    ntk, nngp = empirical_kernel_statistics(xs, seeds, width=width, **kw)
    assert_agrees(*ntk, reference_gram(xs, xs, **kw), "NTK")
    assert_agrees(*nngp, reference_gram(xs, xs, ntk=False, **kw), "NNGP")


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_mc_fast(nonlinearity: str) -> None:
    """Small, fast Monte-Carlo check: width 512, 64 seeds, L = 2, mixed lengths, s_h = 0.

    At these sizes the error is dominated by seed-to-seed noise, not finite-width bias: many
    seeds at a small width are cheaper and more accurate than a few seeds at a large one.
    """
    xs = _seqs([1, 2, 3, 3], m=3)
    _mc_check(xs, 512, range(64), num_layers=2, nonlinearity=nonlinearity, **MC_HP)


@pytest.mark.slow
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_mc_width_2048(nonlinearity: str, num_layers: int) -> None:
    """Width 2048, 32 seeds, lengths 2..6."""
    xs = _seqs([2, 3, 4, 5, 6, 6], m=3)
    _mc_check(xs, 2048, range(32), num_layers=num_layers, nonlinearity=nonlinearity, **MC_HP)


VARIANTS: list[dict[str, Any]] = [
    {"readout": "mean"},
    {"bidirectional": True},
    {"frozen_layers": 1},
    {"init_var": 0.5, "initial_state": "per_input"},
    {"init_var": 0.5, "initial_state": "shared"},
    {
        "readout": "mean",
        "bidirectional": True,
        "frozen_layers": 1,
        "init_var": 0.3,
        "initial_state": "per_input",
    },
]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_mc_variants(nonlinearity: str, variant: dict[str, Any]) -> None:
    """The variants and initial-state conventions of docs/kernels.md, width 512, 96 seeds, L = 2.

    The inputs include a repeated sequence, so the per-input indicator 1[x = x'] is exercised.
    """
    xs = _seqs([2, 3, 4, 5, 6, 4], m=3)
    xs.append(xs[2].clone())
    _mc_check(xs, 512, range(96), num_layers=2, nonlinearity=nonlinearity, **MC_HP, **variant)


def test_relu_zero_variance_is_finite() -> None:
    """s_b = 0 with zero steps gives exactly-zero variances; the reference must stay finite."""
    xs = [_t([[0.0], [0.0], [1.0]]), _t([[0.0], [2.0]]), _t([[0.0]])]
    kw: dict[str, Any] = {"num_layers": 2, "recurrent_var": 2.0, "input_var": 1.0, "bias_var": 0.0}
    gram = reference_gram(xs, xs, nonlinearity="relu", readout="mean", **kw)
    assert torch.isfinite(gram).all()
    assert gram[2, 2] == 0.0
