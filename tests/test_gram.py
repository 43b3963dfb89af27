"""gram_matrix: one call for kernel methods outside GPyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import random_sequences
from reference import reference_gram

from gpytorch_rntk import gram_matrix


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
