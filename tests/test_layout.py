"""encode_sequences / decode_sequences round trips and dtypes."""

from __future__ import annotations

import numpy as np
import torch

from gpytorch_rntk import decode_sequences, encode_sequences


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
