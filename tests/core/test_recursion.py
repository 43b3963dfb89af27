"""The recursion's one step (``_core.recursion.cell``), the self terms
(``_core.recursion.self_terms``) and the dual activations' table form: their hand-written
forward-mode tangents against :func:`torch.func.jvp` of the values."""

from __future__ import annotations

import pytest
import torch

from gpytorch_rntk._core.config import RecurrentVariances
from gpytorch_rntk._core.duals import ERF, NONLINEARITIES, RELU, side_tables, table_dual
from gpytorch_rntk._core.quadrature import as_dual
from gpytorch_rntk._core.recursion import cell, readout, self_terms

SHAPE = (5, 6)  # a tile of pairs


def _setup(seed: int, layers: int, same_pairs: bool):
    """Every input of one cell as an affine function of the four variances, so that the
    tangents along each variance are known exactly: ``f(v) = a + sum_i b_i v_i``."""
    gen = torch.Generator().manual_seed(seed)

    def affine(*shape, low=0.0):
        return low + torch.rand(*shape, generator=gen, dtype=torch.float64), 0.3 * torch.rand(
            4, *shape, generator=gen, dtype=torch.float64
        )

    state = [affine(*SHAPE, low=0.2) for _ in range(3 * layers)]
    selves = [(affine(SHAPE[0], 1, low=0.5), affine(1, SHAPE[1], low=0.5)) for _ in range(layers)]
    below = torch.randn(*SHAPE, generator=gen, dtype=torch.float64) * 0.3
    cont = torch.rand(*SHAPE, generator=gen) < 0.7
    start = (torch.rand(*SHAPE, generator=gen) < 0.5) & ~cont
    same = torch.zeros(*SHAPE, dtype=torch.bool)
    if same_pairs:  # identical sequences: the self-pair forms
        same[0, 0] = same[2, 3] = True
    return state, selves, below, cont, start, same


def _run(variances, setup, code, frozen, directions):
    state, selves, below, cont, start, same = setup
    v = torch.stack(variances)

    def at(pair):  # value and (with directions) its tangent along each direction
        a, b = pair
        return a + torch.tensordot(v, b, 1), [b[i] for i in directions]

    flat = []
    width = 3 + 3 * len(directions)
    for layer in range(len(state) // 3):
        values = [at(state[3 * layer + k]) for k in range(3)]
        flat += [values[k][0] for k in range(3)]
        for p in range(len(directions)):
            flat += [values[k][1][p] for k in range(3)]
    tables, d_tables = [], []
    for side_a, side_b in selves:
        sides, hs = [], []
        for s_pair in (side_a, side_b):
            s, ds = at(s_pair)
            table, h = side_tables(
                s[None, None], torch.stack(ds)[None, None] if directions else None, code
            )
            sides.append(tuple(table[0, 0]))
            hs.append(None if h is None else h[0, 0])
        tables.append(sides)
        d_tables.append([(hs[0][p], hs[1][p]) for p in range(len(directions))])
    eps = torch.finfo(torch.float64).eps

    def dual(s, sides, same_, tangents):
        return table_dual(s, *sides, same_, code, eps, tangents)

    cell(flat, below, cont, start, tables, same, variances, dual, frozen, directions, d_tables)
    assert len(flat) == width * (len(state) // 3)
    return readout(flat, len(directions), frozen)


@pytest.mark.parametrize("code", [RELU, ERF], ids=["relu", "erf"])
@pytest.mark.parametrize("frozen", [0, 1, 2])
def test_cell_tangents_match_jvp(code, frozen):
    # erf's self-pair form reads the pair's self terms only (the cross term of identical
    # sequences equals them), so random inputs test it only where it takes no self pair;
    # ReLU's self-pair form (V = S / 2) reads the cross term.
    setup = _setup(seed=3 + frozen, layers=2, same_pairs=code == RELU)
    variances = tuple(torch.tensor(v, dtype=torch.float64) for v in (1.3, 0.8, 0.2, 0.5))
    directions = (0, 1, 2, 3)
    value, tangents = _run(variances, setup, code, frozen, directions)
    for p, i in enumerate(directions):
        unit = tuple(torch.ones_like(v) if k == i else torch.zeros_like(v) for k, v in
                     enumerate(variances))  # fmt: skip
        primal, expected = torch.func.jvp(
            lambda *v: _run(v, setup, code, frozen, ())[0], variances, unit
        )
        torch.testing.assert_close(primal, value, rtol=1e-14, atol=0)
        assert expected.abs().max() > 0
        torch.testing.assert_close(tangents[p], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["relu", "erf", "tanh"])
@pytest.mark.parametrize("init", [False, True])
def test_self_term_tangents_match_jvp(nonlinearity, init, dtype, device):
    # two layers, variable lengths (0 past each), along every variance and a subset; tanh
    # (a quadrature dual) through the generic Dual.self_slope
    dual = NONLINEARITIES.get(nonlinearity) or as_dual(nonlinearity)
    gen = torch.Generator().manual_seed(5)
    values = torch.randn(4, 7, 3, generator=gen, dtype=torch.float64).to(dtype)
    lengths = torch.tensor([7, 3, 5, 1])
    values[torch.arange(7) >= lengths.unsqueeze(-1)] = 0
    values, lengths = values.to(device), lengths.to(device)
    variances = tuple(torch.tensor(v, dtype=dtype, device=device) for v in (1.3, 0.8, 0.2, 0.5))

    def tables(*v):
        return torch.stack(self_terms(values, lengths, RecurrentVariances(*v), dual, 2, init), -1)

    for directions in ((0, 1, 2, 3), (2, 0)):
        found, derivatives = self_terms(
            values, lengths, RecurrentVariances(*variances), dual, 2, init, directions
        )
        torch.testing.assert_close(torch.stack(found, -1), tables(*variances), rtol=0, atol=0)
        derivatives = torch.stack(derivatives, -2)  # (N, T, L, P)
        for p, i in enumerate(directions):
            unit = tuple(torch.ones_like(v) if k == i else torch.zeros_like(v) for k, v in
                         enumerate(variances))  # fmt: skip
            expected = torch.func.jvp(tables, variances, unit)[1]
            assert expected.abs().max() > 0 or (i == 3 and not init)
            tol = 1e-12 if dtype == torch.float64 else 1e-5
            torch.testing.assert_close(derivatives[..., p], expected, rtol=tol, atol=tol)
