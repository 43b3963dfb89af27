"""Random variable-length batches for the tests, loading the benchmark scripts, and running a
script in several processes."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from gpytorch_rntk import encode_sequences


def random_sequences(
    lengths: list[int], m: int, seed: int = 0, dtype: torch.dtype = torch.float64
) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t, m, generator=gen, dtype=dtype) for t in lengths]


def random_batch(
    lengths: list[int], m: int, seed: int = 0, max_len: int | None = None, **kw
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Sequences and their encoding."""
    seqs = random_sequences(lengths, m, seed, **kw)
    return seqs, encode_sequences(seqs, max_len=max_len)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(
    path: Path, name: str, register: Callable[[str, ModuleType], None] | None = None
) -> ModuleType:
    """Import the script at ``path`` as module ``name``, registered in ``sys.modules`` first
    (dataclasses look their module up there) by ``register`` (default: set it for the rest of
    the session; e.g. ``partial(monkeypatch.setitem, sys.modules)`` for one test)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    (register or sys.modules.__setitem__)(name, module)
    spec.loader.exec_module(module)
    return module


def run_ranks(
    script: Path, *args: str, nproc: int = 2, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``script`` in ``nproc`` processes under ``torchrun`` (one machine, a free port) as a
    user would, with one thread each; returns the finished process (stdout and stderr as
    text). The script initialises its own process group."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(script),
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
