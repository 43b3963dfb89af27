"""Finite-width Monte Carlo: the network of docs/kernels.md, its empirical NTK and NNGP against the
kernels (docs/kernels.md, *Monte Carlo against finite networks*).

The seed-averaged empirical kernels fluctuate around the limit by a standard error that shrinks
like 1/sqrt(width * seeds) and differs from entry to entry (long sequences' self terms the
most), plus a finite-width bias of order 1/width. ``finite_width.assert_agrees`` measures each
entry's deviation in its own standard error over the seeds (at most 6), and asks the standard
errors to be at most 2.5 % of the kernel's scale, so a wrong recursion term (which moves the
kernel by tens of percent) fails while sampling noise passes.
"""

from __future__ import annotations

import pytest
import torch
from finite_width import assert_agrees, empirical_kernel_statistics
from helpers import random_sequences

from gpytorch_rntk import RNNGPKernel, RNTKKernel, encode_sequences

HYPER = dict(recurrent_var=1.5, input_var=1.0, bias_var=0.1)
# The batches each readout's checks were first calibrated on (the checks are statistical).
SEEDS = {"last": 20, "mean": 22}


def analytic(seqs, num_layers, nonlinearity, readout="last", frozen_layers=0, variant=(), **hyper):
    """(NTK, NNGP) of the kernels; ``frozen_layers`` applies to the NTK only (RNNGPKernel
    freezes every layer)."""
    x = encode_sequences(seqs)
    out = []
    for cls, frozen in ((RNTKKernel, {"frozen_layers": frozen_layers}), (RNNGPKernel, {})):
        kernel = cls(
            input_dim=seqs[0].shape[1],
            num_layers=num_layers,
            nonlinearity=nonlinearity,
            readout=readout,
            **dict(variant),
            **frozen,
        ).double()
        kernel.initialize(**(HYPER | hyper))
        with torch.no_grad():
            out.append(kernel(x).to_dense())
    return out


def check(lengths, num_layers, nonlinearity, width, seeds, readout="last", **variant):
    """The seed-averaged empirical (NTK, NNGP) of the network with the given readout (the last
    state, or the average over time) against RNTKKernel / RNNGPKernel (``assert_agrees``)."""
    seqs = random_sequences(lengths, m=3, seed=SEEDS[readout])
    init = {"init_var": variant.pop("init_var")} if "init_var" in variant else {}
    frozen = variant.pop("frozen_layers", 0)
    ntk, nngp = analytic(seqs, num_layers, nonlinearity, readout, frozen, variant, **init)
    emp_ntk, emp_nngp = empirical_kernel_statistics(
        seqs,
        seeds=range(seeds),
        width=width,
        num_layers=num_layers,
        nonlinearity=nonlinearity,
        readout=readout,
        frozen_layers=frozen,
        **variant,
        **init,
        **HYPER,
    )
    assert_agrees(*emp_ntk, ntk, "NTK")
    assert_agrees(*emp_nngp, nngp, "NNGP")


def variant_id(variant):
    return "-".join(f"{k}={v}" for k, v in variant.items()) or "plain"


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("readout", ["last", "mean"])
def test_finite_width_network_matches_kernels(readout, num_layers, nonlinearity):
    """Width 512, 64 seeds, lengths 1-3 (for the mean readout a wrong boundary or a missing
    diagonal moves the kernel by tens of percent)."""
    check([1, 2, 3, 3], num_layers, nonlinearity, width=512, seeds=64, readout=readout)


def test_finite_width_mean_readout_shared_initial_state_different_lengths():
    """A shared initial state enters the d = 0 diagonal of every pair of the mean readout, equal
    lengths or not (leaving it out for T != T' moves this kernel by 14-16 %)."""
    check([2, 3, 4, 3], 1, "erf", 512, 64, readout="mean", init_var=0.5, initial_state="shared")


WIDE_CASES = [("last", num_layers, {}) for num_layers in (1, 2)] + [
    ("mean", 2, variant)
    for variant in (
        {"bidirectional": True, "frozen_layers": 1, "init_var": 0.3, "initial_state": "per_input"},
        {"init_var": 0.5, "initial_state": "shared"},
    )
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "readout,num_layers,variant",
    WIDE_CASES,
    ids=[f"{r}-{n}-{variant_id(v)}" for r, n, v in WIDE_CASES],
)
@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_finite_width_network_matches_kernels_wide(readout, num_layers, variant, nonlinearity):
    """Width 2048, 32 seeds, lengths 2-6."""
    check([2, 6, 4, 5, 3, 6], num_layers, nonlinearity, 2048, 32, readout=readout, **variant)


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
@pytest.mark.parametrize(
    "variant", [{"bidirectional": True}, {"frozen_layers": 1}], ids=["bidirectional", "frozen1"]
)
def test_finite_width_variants(variant, nonlinearity):
    """The bidirectional network (two stacks, one on the reversed sequence) and the NTK with the
    first layer's gradients left out, against the kernels."""
    seqs = random_sequences([1, 2, 3, 3], m=3, seed=21)
    kernel = RNTKKernel(input_dim=3, num_layers=2, nonlinearity=nonlinearity, **variant).double()
    kernel.initialize(**HYPER)
    with torch.no_grad():
        ntk = kernel(encode_sequences(seqs)).to_dense()
    emp_ntk, _ = empirical_kernel_statistics(
        seqs,
        seeds=range(64),
        width=512,
        num_layers=2,
        nonlinearity=nonlinearity,
        **variant,
        **HYPER,
    )
    assert_agrees(*emp_ntk, ntk, "NTK")


@pytest.mark.parametrize("nonlinearity", ["relu", "erf"])
def test_the_check_fails_on_a_wrong_kernel(nonlinearity):
    """The Monte Carlo check has the power to fail: the same seed averages that agree with the
    kernels disagree with kernels of 10 % smaller recurrent_var or half the bias_var (2.8 % to
    17 % of the kernel's scale, 7 to 14 standard errors)."""
    seqs = random_sequences([1, 2, 3, 3], m=3, seed=SEEDS["last"])
    emp = empirical_kernel_statistics(
        seqs, seeds=range(64), width=512, num_layers=2, nonlinearity=nonlinearity, **HYPER
    )
    names = ("NTK", "NNGP")
    for name, stats, limit in zip(names, emp, analytic(seqs, 2, nonlinearity), strict=True):
        assert_agrees(*stats, limit, name)
    for wrong in ({"recurrent_var": 1.35}, {"bias_var": 0.05}):
        limits = analytic(seqs, 2, nonlinearity, **wrong)
        for name, stats, limit in zip(names, emp, limits, strict=True):
            with pytest.raises(AssertionError, match="max \\|z\\|"):
                assert_agrees(*stats, limit, name)
