"""Shared fixtures: devices, dtypes and random variable-length batches."""

from __future__ import annotations

import importlib.util
import sys

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


@pytest.fixture
def triton_interpreter(monkeypatch):
    """Triton's interpreter where there is no GPU, so that the Triton kernels run on the CPU.

    ``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is decorated, so the kernel module
    is reloaded if it was first imported without it. Where Triton is not installed nothing
    changes (the Triton engine then refuses, and the tests that need it skip).
    """
    if torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        yield
        return
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    kernels = sys.modules.get("gpytorch_rntk._core.engines.triton_kernels")
    if kernels is not None and not getattr(kernels, "INTERPRETED", False):
        importlib.reload(kernels)
    yield
