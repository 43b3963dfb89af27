"""The options of a recurrent kernel, validated once into a frozen :class:`RecurrentConfig`.

Every engine reads the options from the config: the nonlinearity as a :class:`~.duals.Dual`
object, the readout and initial state as :class:`Readout` and :class:`InitialState` members
whose integer values are the codes the compiled and Triton kernels branch on. Engines compare
members, never strings, so an option they do not implement is refused by name
(``Engine.unsupported``) instead of being read as another.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .duals import Dual
from .quadrature import as_dual

__all__ = [
    "DECAY",
    "GEOMETRIC",
    "INITIAL_STATES",
    "LAST",
    "MEAN",
    "READOUTS",
    "RECURSION_VARIANCES",
    "InitialState",
    "Readout",
    "RecurrentConfig",
    "RecurrentVariances",
    "as_int",
    "check_positive_int",
    "make_config",
]


class RecurrentVariances(NamedTuple):
    r"""The variances of the network (:doc:`/kernels`), each broadcastable against a pair state,
    and the geometric readout's decay.

    ``recurrent_var`` is :math:`\sigma_w^2`, ``input_var`` :math:`\sigma_u^2`, ``bias_var``
    :math:`\sigma_b^2` and ``init_var`` :math:`\sigma_h^2` (0 for ``initial_state="zero"``);
    ``readout_decay`` is :math:`\lambda \in (0, 1]` of ``readout="geometric"``, which weights
    step :math:`t` of a sequence of length :math:`T` by :math:`\lambda^{T - t}` (1 for the
    other readouts, which have no decay). The recursion reads the first four
    (:data:`RECURSION_VARIANCES`).
    """

    recurrent_var: Tensor
    input_var: Tensor
    bias_var: Tensor
    init_var: Tensor | float = 0.0
    readout_decay: Tensor | float = 1.0

    def like(self, values: Tensor) -> RecurrentVariances:
        """Each variance as a tensor of ``values``' dtype and device (autograd kept; Python
        numbers converted directly, not rounded through float32)."""
        return RecurrentVariances(
            *(torch.as_tensor(v, dtype=values.dtype, device=values.device) for v in self)
        )


# The variances the recursion reads (the forward-mode directions of the compiled engines are
# numbered by them); the readout decay only weights the readout.
RECURSION_VARIANCES = 4
DECAY = 4  # the index of ``readout_decay``


class InitialState(enum.IntEnum):
    """The hidden state before the first step: none, one per input (correlated only between
    identical inputs), or one shared by all inputs."""

    ZERO = 0
    PER_INPUT = 1
    SHARED = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Readout:
    """How the network's output reads the last layer's states: ``code`` is what the engines'
    kernels branch on. :data:`READOUTS` holds the ones the package defines."""

    name: str
    code: int

    def __str__(self) -> str:
        return self.name


LAST, MEAN, GEOMETRIC = Readout("last", 0), Readout("mean", 1), Readout("geometric", 2)
READOUTS: dict[str, Readout] = {r.name: r for r in (LAST, MEAN, GEOMETRIC)}
INITIAL_STATES: dict[str, InitialState] = {s.label: s for s in InitialState}


@dataclass(frozen=True)
class RecurrentConfig:
    """The validated options of one kernel computation (see
    :func:`gpytorch_rntk.functional.recurrent_kernel` for their meaning)."""

    dual: Dual
    num_layers: int = 1
    frozen_layers: int = 0
    initial_state: InitialState = InitialState.ZERO
    readout: Readout = LAST
    bidirectional: bool = False

    @property
    def nonlinearity(self) -> str:
        return self.dual.name


def check_positive_int(value, name: str) -> int:
    """``value`` as an ``int``, or a ``ValueError`` naming ``name`` if it is not a positive
    integer (floats such as ``2.0`` and booleans included)."""
    integer = as_int(value)
    if integer is None or integer < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return integer


def as_int(value) -> int | None:
    """``value`` as an ``int`` if it is an integer (Python, NumPy or a 0-d integer tensor; not
    a boolean or a float such as ``2.0``), else ``None``."""
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, Tensor) and value.dtype == torch.bool
    ):
        return None
    try:
        return operator.index(value)
    except TypeError:  # floats, strings, tensors of more than one element
        return None


def _lookup(table: dict, value, name: str):
    try:
        return table[value]
    except (KeyError, TypeError):  # TypeError: unhashable values
        raise ValueError(f"Unknown {name} {value!r}; choose one of {list(table)}.") from None


def make_config(
    nonlinearity: str | Callable | Dual = "relu",
    num_layers: int = 1,
    frozen_layers: int = 0,
    initial_state: str = "zero",
    readout: str = "last",
    bidirectional: bool = False,
) -> RecurrentConfig:
    """The :class:`RecurrentConfig` of these options, or a ``ValueError``/``TypeError`` naming
    the first one that is not understood."""
    dual = as_dual(nonlinearity)  # a name, a Dual, or an elementwise function (quadrature)
    state = _lookup(INITIAL_STATES, initial_state, "initial_state")
    num_layers = check_positive_int(num_layers, "num_layers")
    frozen = as_int(frozen_layers)
    if frozen is None or not 0 <= frozen <= num_layers:
        raise ValueError(
            f"frozen_layers must be an integer in [0, num_layers={num_layers}], got "
            f"{frozen_layers!r}."
        )
    read = _lookup(READOUTS, readout, "readout")
    if not isinstance(bidirectional, (bool, np.bool_)):
        raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}.")
    return RecurrentConfig(dual, num_layers, frozen, state, read, bool(bidirectional))
