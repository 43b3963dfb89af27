"""Bad input to every public entry point raises a specific error before any computation; empty
sets give empty results."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gpytorch.constraints import Interval
from gpytorch.priors import GammaPrior

from gpytorch_rntk import RNNGPKernel, RNTKKernel, decode_sequences, encode_sequences, gram_matrix
from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel, recurrent_kernel_diag
from gpytorch_rntk.models import SequenceVariationalGP, inducing_sequences

X = encode_sequences([torch.randn(3, 2), torch.randn(2, 2), torch.randn(4, 2)]).double()
VALUES, LENGTHS = decode_sequences(X, 2)
VARIANCES = RecurrentVariances(*torch.tensor([1.8, 1.0, 0.1], dtype=torch.float64))


def _with(**changes):
    """recurrent_kernel on (VALUES, LENGTHS) against itself, with some arguments replaced."""
    args = dict(values1=VALUES, lengths1=LENGTHS, values2=VALUES[:2], lengths2=LENGTHS[:2])
    args["variances"] = VARIANCES
    return lambda: recurrent_kernel(**(args | changes))


@pytest.mark.parametrize(
    "call,error,message",
    [
        # the kernel functions
        (_with(lengths1=LENGTHS - 3), ValueError, r"lengths of values1 must be in \[1, T = 4\]"),
        (_with(lengths2=LENGTHS[:2] + 9), ValueError, "lengths of values2 must be in"),
        (_with(lengths1=LENGTHS.double()), TypeError, "must be an integer tensor"),
        (_with(lengths1=LENGTHS[:2]), ValueError, r"lengths of values1 have shape \(2,\)"),
        (_with(values1=VALUES.long()), TypeError, "values1 must be a floating-point tensor"),
        (_with(values1=VALUES[0]), ValueError, r"shape \(..., N, T, m\)"),
        (_with(values1=VALUES[:, :0], lengths1=LENGTHS), ValueError, "T, m >= 1"),
        (_with(values2=VALUES[:2].float()), ValueError, "must share a dtype and a device"),
        (_with(values2=VALUES[:2, :, :1]), ValueError, "m = 2 values per step and values2 1"),
        (_with(values1=VALUES.clone().fill_(float("nan"))), ValueError, "values1 has NaN/inf"),
        (_with(paired=True), ValueError, "paired needs as many sequences"),
        (_with(variances=VARIANCES._replace(bias_var=-0.1)), ValueError, "bias_var must be"),
        (_with(num_layers=2.0), ValueError, "num_layers must be a positive integer"),
        (_with(num_layers=2, frozen_layers=0.5), ValueError, "frozen_layers must be an integer"),
        (
            lambda: recurrent_kernel_diag(VALUES, LENGTHS * 0, VARIANCES),
            ValueError,
            "lengths of values1 must be in",
        ),
        (
            lambda: recurrent_kernel(
                VALUES, LENGTHS, VALUES, LENGTHS, VARIANCES, engine="fused", frozen_layers=2
            ),
            ValueError,
            "frozen_layers must be an integer in",
        ),
        (
            lambda: recurrent_kernel(
                VALUES[None], LENGTHS[None], VALUES[None], LENGTHS[None], VARIANCES, engine="fused"
            ),
            ValueError,
            r"unbatched \(N, T, m\)",
        ),
        (
            lambda: recurrent_kernel(
                VALUES, LENGTHS + 1, VALUES, LENGTHS, VARIANCES, engine="fused"
            ),
            ValueError,
            "lengths of values1 must be in",
        ),
        # the kernels
        (lambda: RNTKKernel(2)(X.long()), TypeError, "must be floating point"),
        (
            lambda: RNTKKernel(1, nonlinearity="erf")(torch.full((2, 3), 1e10)),
            ValueError,
            "erf's dual activations overflow torch.float32",
        ),
        (lambda: RNTKKernel(2)(X, X[:2], diag=True), ValueError, "diag=True needs as many"),
        (lambda: RNTKKernel(2)(X, X[:, :7]), ValueError, "x1 has width 9 and x2 width 7"),
        (lambda: RNTKKernel(2.0), ValueError, "input_dim must be a positive integer"),
        (lambda: RNTKKernel(2, recurrent_var=1.0), TypeError, r"unexpected keyword.*recurrent_var"),
        (lambda: RNTKKernel(2, bidirectional="no"), TypeError, "bidirectional must be True or"),
        (lambda: RNTKKernel(2, variable_length=1), TypeError, "variable_length must be True or"),
        (lambda: RNTKKernel(2, init_var_prior=GammaPrior(2.0, 4.0)), ValueError, "no init_var"),
        (lambda: RNTKKernel(2, init_var_constraint=Interval(0.1, 1)), ValueError, "no init_var"),
        (lambda: RNNGPKernel(2, frozen_layers=1), TypeError, "RNNGPKernel takes no frozen_layers"),
        (lambda: setattr(RNTKKernel(2), "initial_state", "shared"), AttributeError, "fixed at"),
        # the layout
        (lambda: decode_sequences(X.numpy(), 2), TypeError, "must be a torch.Tensor"),
        (lambda: decode_sequences(X, 0), ValueError, "input_dim must be a positive integer"),
        (lambda: decode_sequences(X[0], 2), ValueError, r"must be \(..., N, D\)"),
        (lambda: encode_sequences([np.zeros((3, 0))]), ValueError, r"no values \(m = 0\)"),
        (lambda: encode_sequences([[1.0, 2.0]], max_len=3.0), ValueError, "max_len must be a"),
        (
            lambda: encode_sequences([torch.zeros(2049, dtype=torch.float16)]),
            ValueError,
            "holds lengths only up to 2048",
        ),
        # gram_matrix
        (lambda: gram_matrix([np.ones(3)], recurrent_var=float("inf")), ValueError, "finite"),
        (lambda: gram_matrix([np.ones(3)], bias_var=-1.0), ValueError, "non-negative"),
        (lambda: gram_matrix([np.ones(3)], init_var=1.0), ValueError, "init_var needs"),
        (lambda: gram_matrix([np.ones(3)], num_layer=2), TypeError, r"unexpected.*num_layer"),
        (lambda: gram_matrix([np.ones(3)], kernel="nngp", frozen_layers=1), TypeError, "frozen"),
        (lambda: gram_matrix([np.ones(3)], bias_var="0.1"), TypeError, "bias_var must be a num"),
        (lambda: gram_matrix(np.ones((3, 2))), TypeError, "seqs1 must be a list of sequences"),
        (lambda: gram_matrix([["a", "b"]]), TypeError, "must be an array of numbers"),
        (lambda: encode_sequences([np.ones(2) * 1j]), TypeError, "Sequence 0 is complex"),
        (lambda: encode_sequences([[1.0], [[[2.0]]]]), ValueError, r"Sequence 1 has shape"),
        (lambda: encode_sequences([object()]), TypeError, "Sequence 0 is not an array of num"),
        # variational GPs
        (lambda: inducing_sequences(X[None], 2), ValueError, r"train_x must be an \(N, D\)"),
        (lambda: inducing_sequences(X, 1.5), ValueError, "num_inducing must be a positive"),
        (
            lambda: SequenceVariationalGP(X[:2].float(), 2)(X[:, :7].float()),
            ValueError,
            "Inputs of width 7, inducing sequences of width 9",
        ),
    ],
)
def test_bad_input_raises_a_specific_error(call, error, message):
    with pytest.raises(error, match=message):
        out = call()
        if hasattr(out, "to_dense"):
            out.to_dense()


def test_empty_sets_give_empty_results():
    kernel = RNTKKernel(2).double()
    assert kernel(X[:0], X).to_dense().shape == (0, 3)
    assert kernel(X, X[:0]).to_dense().shape == (3, 0)
    assert kernel(X[:0], diag=True).shape == (0,)
    assert recurrent_kernel(VALUES[:0], LENGTHS[:0], VALUES, LENGTHS, VARIANCES).shape == (0, 3)
    empty = recurrent_kernel(VALUES, LENGTHS, VALUES[:0], LENGTHS[:0], VARIANCES, engine="fused")
    assert empty.shape == (3, 0)
    seqs = [np.ones((3, 2)), np.zeros((2, 2))]
    assert gram_matrix(seqs, []).shape == (2, 0)
    assert gram_matrix([], seqs).shape == (0, 2)


def test_integer_and_boolean_likes_are_accepted():
    """NumPy and 0-d torch integers count as integers, NumPy booleans as flags."""
    kernel = RNTKKernel(torch.tensor(2), num_layers=np.int64(2), bidirectional=np.bool_(False))
    assert (kernel.input_dim, kernel.num_layers, kernel.bidirectional) == (2, 2, False)
    kernel = RNTKKernel(2, num_layers=torch.tensor(2), frozen_layers=torch.tensor(1))
    assert (kernel.num_layers, kernel.frozen_layers) == (2, 1)
    with pytest.raises(ValueError, match="num_layers must be a positive integer"):
        RNTKKernel(2, num_layers=torch.tensor(True))
    assert decode_sequences(X, np.int64(2))[0].shape == VALUES.shape
    assert np.isfinite(gram_matrix([np.ones(3), np.zeros(2)], bias_var=0.0)).all()
