"""The docstring examples of every public module run, and every public module has some."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import gpytorch_rntk

# Public modules without examples, and why: the demo and the warm-up are scripts (their tests
# run them), the deprecated alias has nothing new to show.
WITHOUT_EXAMPLES = {
    "gpytorch_rntk.demo": "a script",
    "gpytorch_rntk.fused": "deprecated alias",
    "gpytorch_rntk.warmup": "a script that compiles for minutes (its test runs it eagerly)",
}
MODULES = sorted(
    f"gpytorch_rntk.{m.name}"
    for m in pkgutil.iter_modules(gpytorch_rntk.__path__)
    if not m.name.startswith("_")
)


def test_modules_are_found():
    assert {"gpytorch_rntk.kernels", "gpytorch_rntk.botorch", "gpytorch_rntk.functional"} <= set(
        MODULES
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name == "gpytorch_rntk.botorch":
        pytest.importorskip("botorch")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    if name not in WITHOUT_EXAMPLES:
        assert result.attempted > 0, f"{name} has no docstring examples"
