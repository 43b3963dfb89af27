"""The kernels' computational core: options, dual activations, time-grid helpers and engines.

Private: the public functions are in :mod:`gpytorch_rntk.functional`. Layers, each importing only
from those below it: ``engines`` (the tensor, compiled and Triton engines behind one interface,
and the one dispatcher), then ``config``, ``duals``, ``lanes`` and ``autodiff`` (plain math).
"""
