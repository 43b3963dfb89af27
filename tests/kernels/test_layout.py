"""encode_sequences / decode_sequences round trips and dtypes; sequences that do not fit the
declared step dimension."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gpytorch_rntk import RNTKKernel, decode_sequences, encode_sequences
from gpytorch_rntk.models import SequenceVariationalGP


def test_round_trip_multivariate_keeps_float64():
    seqs = [np.random.default_rng(0).normal(size=(t, 3)) for t in (4, 1, 6)]
    x = encode_sequences(seqs, max_len=7)
    assert x.dtype == torch.float64 and x.shape == (3, 1 + 7 * 3)
    values, lengths = decode_sequences(x, input_dim=3)
    assert lengths.tolist() == [4, 1, 6] and values.shape == (3, 7, 3)
    for seq, v, t in zip(seqs, values, lengths, strict=True):
        np.testing.assert_array_equal(v[:t].numpy(), seq)
        assert (v[t:] == 0).all()


def test_univariate_1d_inputs_and_batch_dims():
    x = encode_sequences([torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
    torch.testing.assert_close(x, torch.tensor([[2.0, 1.0, 2.0], [1.0, 3.0, 0.0]]))
    values, lengths = decode_sequences(x.expand(4, 2, 3), input_dim=1)
    assert values.shape == (4, 2, 2, 1) and lengths.shape == (4, 2)


def test_decode_ignores_values_past_length_and_rounds_lengths():
    x = torch.tensor([[1.6, 5.0, 9.0, 9.0]])
    values, lengths = decode_sequences(x, input_dim=1)
    assert lengths.tolist() == [2]
    torch.testing.assert_close(values[0, :, 0], torch.tensor([5.0, 9.0, 0.0]))


def _wider_than_declared():
    """Sequences of m = 2 values per step, encoded, as a kernel with input_dim=1 reads them."""
    gen = torch.Generator().manual_seed(0)
    return encode_sequences([torch.randn(t, 2, generator=gen) for t in (3, 5, 4)])


def test_training_data_with_more_values_per_step_than_input_dim_warns():
    """Any width 1 + k fits input_dim=1, so m = 2 data passed the width check silently; every
    row then has values past its length (2 T_i values read as T_i steps)."""
    x = _wider_than_declared()
    with pytest.warns(UserWarning, match="encoded with more than input_dim=1 values per step"):
        RNTKKernel(1)(x).to_dense()
    with pytest.warns(UserWarning, match="encoded with more than input_dim=1"):
        SequenceVariationalGP(x, input_dim=1)


def test_training_lengths_beyond_the_width_warn():
    """m = 1 data read with input_dim=2: the longest row's length exceeds the steps the width
    holds for input_dim=2."""
    x = encode_sequences([torch.randn(t) for t in (4, 2, 3)])
    with pytest.warns(UserWarning, match=r"lengths up to 4 exceed T_max = 2"):
        RNTKKernel(2)(x).to_dense()


def test_canonical_training_data_and_optimiser_candidates_do_not_warn():
    x = _wider_than_declared()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RNTKKernel(2)(x).to_dense()  # the right input_dim
        kernel = RNTKKernel(1).eval()  # candidates: values past the length are allowed
        kernel(x, x).to_dense()
        kernel(x).to_dense()
        # one canonical training row is enough: values past the lengths of the others are
        # what BoTorch's optimisers leave in candidates appended to the training data
        mixed = torch.cat([encode_sequences([torch.randn(6)], max_len=10), x])
        RNTKKernel(1)(mixed).to_dense()
