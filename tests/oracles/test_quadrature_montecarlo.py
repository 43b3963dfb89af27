"""Finite-width Monte Carlo for the quadrature duals: the seed-averaged empirical NTK and NNGP of
wide networks with tanh, sigmoid, GELU, SiLU, softplus and a user's function against the kernels
(as tests/oracles/test_montecarlo.py does for ReLU and erf, with ``finite_width.assert_agrees``:
every entry within 6 of its standard errors, the standard errors at most 2.5 % of the scale).

Measured (width 512, lengths 1-3, every nonlinearity here): one layer, last readout, 64 seeds:
largest |z| 1.9, scale-relative errors 0.5-2.2 %, largest standard error 1.7 % of the scale; two
layers (slow), 96 seeds: last readout |z| 2.4, errors up to 2.6 %; mean readout |z| 3.2, errors up
to 1.7 % (standard errors up to 2.0 %).
"""

from __future__ import annotations

import pytest
import torch
from finite_width import assert_agrees, empirical_kernel_statistics
from helpers import random_sequences

from gpytorch_rntk import RNNGPKernel, RNTKKernel, encode_sequences

HYPER = dict(recurrent_var=1.5, input_var=1.0, bias_var=0.1)
SEED = 20  # the batch (the checks are statistical; one batch, as test_montecarlo.py's)


def sine(x):
    """A user's function, neither odd-symmetric like tanh nor monotone: sin(x) + x / 2."""
    return torch.sin(x) + 0.5 * x


NONLINEARITIES = ["tanh", "sigmoid", "gelu", "silu", "softplus", sine]
IDS = ["tanh", "sigmoid", "gelu", "silu", "softplus", "sine"]


def analytic(seqs, num_layers, nonlinearity, readout="last", **hyper):
    """(NTK, NNGP) of the kernels."""
    x = encode_sequences(seqs)
    out = []
    for cls in (RNTKKernel, RNNGPKernel):
        kernel = cls(seqs[0].shape[1], num_layers, nonlinearity, readout=readout).double()
        kernel.initialize(**(HYPER | hyper))
        with torch.no_grad():
            out.append(kernel(x).to_dense())
    return out


def empirical(seqs, num_layers, nonlinearity, width, seeds, readout="last"):
    return empirical_kernel_statistics(
        seqs,
        seeds=range(seeds),
        width=width,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        readout=readout,
        **HYPER,
    )


def check(lengths, num_layers, nonlinearity, width, seeds, readout="last"):
    seqs = random_sequences(lengths, m=3, seed=SEED)
    ntk, nngp = analytic(seqs, num_layers, nonlinearity, readout)
    emp_ntk, emp_nngp = empirical(seqs, num_layers, nonlinearity, width, seeds, readout)
    assert_agrees(*emp_ntk, ntk, "NTK")
    assert_agrees(*emp_nngp, nngp, "NNGP")


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES, ids=IDS)
def test_finite_width_network_matches_quadrature_kernels(nonlinearity):
    """Width 512, 64 seeds, lengths 1-3, one layer, the last readout."""
    check([1, 2, 3, 3], 1, nonlinearity, width=512, seeds=64)


@pytest.mark.slow
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES, ids=IDS)
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_finite_width_network_matches_quadrature_kernels_deep(readout, nonlinearity):
    """Two layers, both readouts; 96 seeds (with 64 the largest standard error, 2.45 % of the
    scale, came too close to the check's 2.5 %)."""
    check([1, 2, 3, 3], 2, nonlinearity, width=512, seeds=96, readout=readout)


def test_the_check_fails_on_a_wrong_kernel():
    """The same seed averages that agree with the tanh kernels disagree with those of 10 %
    smaller recurrent_var, of half the bias_var, and of sigmoid(2x) = (tanh(x) + 1) / 2 (the
    check has the power to fail: a wrong dual or recursion term shows)."""
    seqs = random_sequences([1, 2, 3, 3], m=3, seed=SEED)
    emp = empirical(seqs, 1, "tanh", width=512, seeds=64)
    names = ("NTK", "NNGP")
    for name, stats, limit in zip(names, emp, analytic(seqs, 1, "tanh"), strict=True):
        assert_agrees(*stats, limit, name)
    wrong = [
        analytic(seqs, 1, "tanh", recurrent_var=1.35),
        analytic(seqs, 1, "tanh", bias_var=0.05),
    ]
    wrong.append(analytic(seqs, 1, lambda x: torch.sigmoid(2 * x)))
    for limits in wrong:
        failures = 0
        for stats, limit in zip(emp, limits, strict=True):
            try:
                assert_agrees(*stats, limit)
            except AssertionError:
                failures += 1
        assert failures > 0
