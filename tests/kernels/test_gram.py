"""gram_matrix: one call for kernel methods outside GPyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_sequences
from reference import reference_gram

from gpytorch_rntk import RNTKKernel, gram_matrix


@pytest.mark.parametrize("kernel", ["rntk", "nngp"])
def test_gram_matrix_matches_reference(kernel):
    seqs1 = [s.numpy() for s in random_sequences([3, 5, 2], m=2, seed=30)]
    seqs2 = [s.numpy() for s in random_sequences([4, 1], m=2, seed=31)]
    hyper = dict(recurrent_var=1.9, input_var=0.7, bias_var=0.2)
    gram = gram_matrix(seqs1, seqs2, kernel=kernel, num_layers=2, nonlinearity="erf", **hyper)
    assert isinstance(gram, np.ndarray) and gram.dtype == np.float64 and gram.shape == (3, 2)
    expected = reference_gram(
        [torch.as_tensor(s) for s in seqs1],
        [torch.as_tensor(s) for s in seqs2],
        num_layers=2,
        nonlinearity="erf",
        ntk=kernel == "rntk",
        **hyper,
    )
    np.testing.assert_allclose(gram, expected.numpy(), rtol=1e-8)
    square = gram_matrix(seqs1, kernel=kernel, num_layers=2, nonlinearity="erf", **hyper)
    np.testing.assert_array_equal(square, square.T)


def test_gram_matrix_precomputed_svm_separates_classes():
    sklearn_svm = pytest.importorskip("sklearn.svm")
    rng = np.random.default_rng(0)
    # Class 1 ends with a rise, class 0 with a fall; lengths differ within each class.
    seqs = [
        np.concatenate([rng.normal(size=t), [0.0, 1.5 * (2 * c - 1)]])
        for c in (0, 1)
        for t in (3, 6, 4, 8, 5)
    ]
    labels = [0] * 5 + [1] * 5
    svm = sklearn_svm.SVC(kernel="precomputed").fit(gram_matrix(seqs), labels)
    assert (svm.predict(gram_matrix(seqs, seqs)) == labels).all()


def test_gram_matrix_rejects_unknown_kernel():
    with pytest.raises(ValueError, match="Unknown kernel 'rbf'"):
        gram_matrix([np.zeros(3)], kernel="rbf")


def test_gram_matrix_of_one_short_sequence_by_hand():
    """The sequence [1, 2], ReLU RNTK with the default variances (recurrent_var 1.8,
    input_var 1, bias_var 0.1, zero initial state), set exactly in float64. ReLU's dual
    activations on a self pair are V(k) = k / 2 and V'(k) = 1 / 2, so S_1 = 1 + 0.1 = 1.1 =
    Theta_1, S_2 = 1.8 * 0.55 + 4 + 0.1 = 5.09, Theta_2 = S_2 + 1.8 * 0.5 * Theta_1 = 6.08, and
    the readout V(S_2) + V'(S_2) Theta_2 = 2.545 + 3.04 = 5.585."""
    variances = dict(recurrent_var=1.8, input_var=1.0, bias_var=0.1)
    np.testing.assert_allclose(gram_matrix([np.array([1.0, 2.0])], **variances), [[5.585]])
    # the fixed-length layout of the same sequence (no length column) gives the same value
    fixed = RNTKKernel(1, variable_length=False).double().initialize(**variances)
    value = fixed(torch.tensor([[1.0, 2.0]], dtype=torch.float64)).to_dense()
    np.testing.assert_allclose(value.detach().numpy(), [[5.585]])


@pytest.mark.parametrize(
    "option",
    [{"variable_length": False}, {"batch_shape": torch.Size([2])}, {"active_dims": [0]}],
    ids=["variable_length", "batch_shape", "active_dims"],
)
def test_gram_matrix_refuses_the_kernels_layout_options(option):
    """gram_matrix encodes the sequences itself; options about the kernel's input tensor gave a
    wrong value (variable_length=False read the length column as the first step) or a wrong
    shape (batch_shape gave (2, N, N))."""
    with pytest.raises(TypeError, match=f"unexpected keyword arguments \\['{next(iter(option))}"):
        gram_matrix([np.array([1.0, 2.0]), np.ones(2)], **option)


def test_gram_matrix_accepts_every_documented_option():
    seqs = [np.array([1.0, 2.0]), np.array([0.5])]
    options = dict(num_layers=2, nonlinearity="erf", initial_state="shared", bidirectional=True)
    options |= dict(readout="mean", engine="tensor", frozen_layers=1)
    gram = gram_matrix(seqs, init_var=0.3, **options)
    assert gram.shape == (2, 2) and np.isfinite(gram).all()
    np.testing.assert_array_equal(gram, gram.T)


def test_gram_matrix_of_empty_lists_and_tensors_needing_gradients():
    assert gram_matrix([]).shape == (0, 0)
    seq = torch.tensor([1.0, 2.0], requires_grad=True)
    gram = gram_matrix([seq], recurrent_var=1.8, input_var=1.0, bias_var=0.1)
    np.testing.assert_allclose(gram, [[5.585]])  # the float32 tensor is exact, computed in float64
