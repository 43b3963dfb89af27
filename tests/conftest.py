"""Shared fixtures: devices, dtypes and random variable-length batches."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request) -> torch.dtype:
    return request.param


def pytest_configure(config):
    """Where there is no GPU, Triton's kernels run under its interpreter, which must be chosen
    before Triton is first imported (its own ``triton.jit`` library functions are decorated
    then, and torch imports Triton as soon as anything touches Dynamo): so at the start of the
    session, not per test. ``engine="auto"`` never picks the interpreter (the Triton engine is
    worth it on CUDA only); the tests that want it name the engine."""
    if not torch.cuda.is_available() and importlib.util.find_spec("triton") is not None:
        os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True, scope="session")
def _own_compiled_packages(tmp_path_factory):
    """The session keeps the compiled loop's packages in a directory of its own, so that which
    engine ``engine="auto"`` picks (the compiled engine where a package is built) depends on
    this session's builds only, not on the machine's history."""
    saved = os.environ.get("GPYTORCH_RNTK_CACHE_DIR")
    os.environ["GPYTORCH_RNTK_CACHE_DIR"] = str(tmp_path_factory.mktemp("gpytorch_rntk_cache"))
    yield
    if saved is None:
        del os.environ["GPYTORCH_RNTK_CACHE_DIR"]
    else:
        os.environ["GPYTORCH_RNTK_CACHE_DIR"] = saved
