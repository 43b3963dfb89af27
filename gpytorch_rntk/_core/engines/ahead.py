r"""The compiled engine's CPU loop compiled ahead of time (AOTInductor), one shared library per
specialisation, kept on disk and loaded by a new process in milliseconds.

``torch.compile`` would make a new process import Dynamo and Inductor, trace the loop and read
Inductor's cache (about 4 s) before its first chunk of steps; a package built by
:func:`torch._inductor.aoti_compile_and_package` is loaded by libtorch's own loader, with
nothing to import or trace. A package holds the loop for one configuration (readout,
nonlinearity, depth, channels, dtype, steps per call, variances differentiated) and every tile
size: the tile's rows and columns are dynamic dimensions of the export, so one package serves
matrices of any size.

Packages live in ``$GPYTORCH_RNTK_CACHE_DIR``, by default ``gpytorch_rntk`` in the user's cache
directory (``$XDG_CACHE_HOME``, else ``~/.cache``); each is named by a digest of what it is
specialised on, of torch's version and of the package's core source, so new code or a new torch
builds anew. Deleting the directory forgets them all.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import pathlib
import tempfile
import warnings

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

__all__ = ["build", "cache_dir", "load", "package_key", "package_path", "source_digest"]

# The dimensions of a tile that vary between calls, per argument of each loop: its rows ``n1``
# and columns ``n2`` (for the mean and geometric readouts, rows of sequences and columns of
# diagonals). Every other dimension is specialised.
_TILE_DIMS = {
    "state": {0: "n1", 1: "n2"},
    "xs": {1: "n1"},
    "ys": {1: "n2"},
    "sxs": {3: "n1"},
    "sys_": {4: "n2"},
    "lengths1": {0: "n1"},
    "lengths2": {0: "n2"},
    "ids1": {0: "n1"},
    "ids2": {0: "n2"},
    "dsxs": {3: "n1"},
    "dsys": {4: "n2"},
}
DYNAMIC = {
    "_cross_steps": _TILE_DIMS,
    "_shifted_steps": {**_TILE_DIMS, "weights1": {1: "n1"}, "weights2": {2: "n2"}},
}


def cache_dir() -> pathlib.Path:
    """Where the packages are kept: ``$GPYTORCH_RNTK_CACHE_DIR``, else ``gpytorch_rntk`` in
    ``$XDG_CACHE_HOME`` or ``~/.cache``."""
    given = os.environ.get("GPYTORCH_RNTK_CACHE_DIR")
    if given:
        return pathlib.Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "gpytorch_rntk"


@functools.cache
def source_digest() -> str:
    """A digest of the package's core, whose code the loop is built from."""
    core = pathlib.Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(core.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _signature(steps) -> inspect.Signature:
    return inspect.signature(steps)


def _arguments(steps, args, kwargs) -> dict:
    """Every argument of a call of ``steps`` by name, in the order of its signature."""
    return _signature(steps).bind(*args, **kwargs).arguments


def _leaves(steps, arguments: dict):
    """``(dims, leaf)`` for every leaf of ``arguments`` (:func:`_arguments`), with the leaf's
    dynamic dimensions ``{index: name}``."""
    dynamic = DYNAMIC[steps.__name__]
    for name, value in arguments.items():
        given = dynamic.get(name, {})
        for leaf in pytree.tree_leaves(value):
            yield given, leaf


def package_key(steps, args, kwargs) -> str:
    """A digest of what a package of ``steps`` is specialised on for this call: each tensor's
    dtype and dimensions (the dynamic ones by name only), every other argument's value, torch's
    version and the core's source."""
    arguments = _arguments(steps, args, kwargs)
    described = []
    for dims, leaf in _leaves(steps, arguments):
        if isinstance(leaf, Tensor):
            shape = tuple(dims.get(i, size) for i, size in enumerate(leaf.shape))
            described.append(("T", shape, str(leaf.dtype)))
        else:
            described.append(repr(leaf))
    structure = [(name, str(pytree.tree_structure(value))) for name, value in arguments.items()]
    text = repr((steps.__name__, torch.__version__, source_digest(), described, structure))
    return hashlib.sha256(text.encode()).hexdigest()


def package_path(key: str) -> pathlib.Path:
    return cache_dir() / "aot" / f"{key}.pt2"


class _Flat(torch.nn.Module):
    """``steps`` as a function of its tensors alone, in the order of :func:`_leaves` (every
    other argument is a constant of the export)."""

    def __init__(self, steps, arguments: dict):
        super().__init__()
        self.steps = steps
        self.template = [(name, *pytree.tree_flatten(value)) for name, value in arguments.items()]

    def forward(self, *tensors):
        given = iter(tensors)
        arguments = {
            name: pytree.tree_unflatten(
                [next(given) if isinstance(leaf, Tensor) else leaf for leaf in leaves], spec
            )
            for name, leaves, spec in self.template
        }
        return tuple(self.steps(**arguments))


def _tensors(steps, arguments: dict) -> list[Tensor]:
    # (the library was built for the standard strides of these shapes)
    return [leaf.contiguous() for _, leaf in _leaves(steps, arguments) if isinstance(leaf, Tensor)]


def build(steps, args, kwargs, path: pathlib.Path) -> None:
    """Export ``steps`` for this call's configuration, with its tile's dimensions dynamic, and
    compile it into the package ``path`` (written under another name, then renamed, so that
    processes building the same package at once never read half of one)."""
    arguments = _arguments(steps, args, kwargs)
    symbols = {}
    shapes = []
    for dims, leaf in _leaves(steps, arguments):
        if isinstance(leaf, Tensor):
            shapes.append(
                {
                    i: symbols.setdefault(name, torch.export.Dim(name, min=1, max=2**24))
                    for i, name in dims.items()
                }
                or None
            )
    tensors = _tensors(steps, arguments)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
    os.close(handle)
    try:
        with warnings.catch_warnings():  # (torch's own deprecations inside the export)
            warnings.simplefilter("ignore", FutureWarning)
            exported = torch.export.export(
                _Flat(steps, arguments), tuple(tensors), dynamic_shapes=(tuple(shapes),)
            )
            torch._inductor.aoti_compile_and_package(exported, package_path=partial)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load(steps, path: pathlib.Path):
    """The package ``path`` as a function with ``steps``' signature (returning its tuple)."""
    runner = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)

    def run(*args, **kwargs) -> tuple[Tensor, ...]:
        return tuple(runner.run(_tensors(steps, _arguments(steps, args, kwargs))))

    return run
