"""The docstring examples run (STYLE 6)."""

from __future__ import annotations

import doctest

import pytest

import gpytorch_rntk.functional
import gpytorch_rntk.gram
import gpytorch_rntk.kernels
import gpytorch_rntk.layout
import gpytorch_rntk.mlls
import gpytorch_rntk.models


@pytest.mark.parametrize(
    "module",
    [
        gpytorch_rntk.kernels,
        gpytorch_rntk.layout,
        gpytorch_rntk.functional,
        gpytorch_rntk.gram,
        gpytorch_rntk.models,
        gpytorch_rntk.mlls,
    ],
)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if module is not gpytorch_rntk.functional:
        assert result.attempted > 0
