"""Finite-width Monte Carlo for the geometric readout and per-channel input variances (ARD).

The networks of ``finite_width``: the geometric readout averages the last layer's states with
weights ``readout_decay^(T - t)`` (normalised per sequence); ARD scales the first layer's input
weights of channel ``c`` by ``sqrt(input_var[c])`` (the layers above use their mean). Seed
averages of their empirical NTK and NNGP must agree with ``RNTKKernel`` / ``RNNGPKernel`` within
the sampling error (``finite_width.assert_agrees``), and must not agree with the kernels of a
wrong decay or of channel variances in the wrong order (the check's power).
"""

from __future__ import annotations

import pytest
import torch
from finite_width import assert_agrees, empirical_kernel_statistics
from helpers import random_sequences

from gpytorch_rntk import RNNGPKernel, RNTKKernel, encode_sequences

HYPER = dict(recurrent_var=1.5, bias_var=0.1)
CHANNELS = [2.5, 0.25, 1.0]  # very different relevance per channel


def kernels(seqs, num_layers, nonlinearity, readout, input_var, readout_decay=None):
    """(NTK, NNGP) Gram matrices of the kernels (float64)."""
    ard = not isinstance(input_var, float)
    options = dict(
        input_dim=seqs[0].shape[1],
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        readout=readout,
        ard_num_dims=seqs[0].shape[1] if ard else None,
    )
    values = dict(HYPER, input_var=torch.tensor(input_var) if ard else input_var)
    if readout_decay is not None:
        values["readout_decay"] = readout_decay
    out = []
    for cls in (RNTKKernel, RNNGPKernel):
        kernel = cls(**options).double()
        kernel.initialize(**values)
        with torch.no_grad():
            out.append(kernel(encode_sequences(seqs)).to_dense())
    return out


def empirical(seqs, num_layers, nonlinearity, readout, input_var, readout_decay=1.0):
    return empirical_kernel_statistics(
        seqs,
        seeds=range(64),
        width=512,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        readout=readout,
        readout_decay=readout_decay,
        input_var=input_var,
        **HYPER,
    )


SLOW = pytest.mark.slow  # (about a minute each on two cores; one case of each runs by default)


@pytest.mark.parametrize(
    "num_layers,nonlinearity",
    [(2, "erf"), pytest.param(1, "relu", marks=SLOW), pytest.param(2, "relu", marks=SLOW)],
)
def test_geometric_readout_matches_finite_networks(num_layers, nonlinearity):
    """Width 512, 64 seeds, lengths 1-4, decay 0.6 (the weights of a 4-step sequence run from
    0.46 down to 0.10), against the kernels; a kernel with decay 0.9 (or the mean readout)
    lies many standard errors away."""
    seqs = random_sequences([1, 2, 4, 3], m=3, seed=31)
    emp_ntk, emp_nngp = empirical(seqs, num_layers, nonlinearity, "geometric", 1.0, 0.6)
    ntk, nngp = kernels(seqs, num_layers, nonlinearity, "geometric", 1.0, 0.6)
    assert_agrees(*emp_ntk, ntk, "NTK")
    assert_agrees(*emp_nngp, nngp, "NNGP")
    wrong_ntk, _ = kernels(seqs, num_layers, nonlinearity, "geometric", 1.0, 0.9)
    with pytest.raises(AssertionError):
        assert_agrees(*emp_ntk, wrong_ntk, "NTK")


@pytest.mark.parametrize(
    "readout,nonlinearity",
    [("last", "relu"), pytest.param("mean", "erf", marks=SLOW)],
)
def test_per_channel_input_variances_match_finite_networks(readout, nonlinearity):
    """A network whose first layer's input weights have a variance per channel, two layers (the
    second reads the mean), against the ARD kernels; the channel variances reversed are
    rejected."""
    seqs = random_sequences([1, 3, 2, 3], m=3, seed=32)
    emp_ntk, emp_nngp = empirical(seqs, 2, nonlinearity, readout, CHANNELS)
    ntk, nngp = kernels(seqs, 2, nonlinearity, readout, CHANNELS)
    assert_agrees(*emp_ntk, ntk, "NTK")
    assert_agrees(*emp_nngp, nngp, "NNGP")
    wrong_ntk, _ = kernels(seqs, 2, nonlinearity, readout, CHANNELS[::-1])
    with pytest.raises(AssertionError):
        assert_agrees(*emp_ntk, wrong_ntk, "NTK")
