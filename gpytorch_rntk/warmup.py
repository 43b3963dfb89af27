"""Build the compiled engine's CPU loop ahead, once per machine, for the common configurations.

On the CPU the compiled engine runs a loop compiled ahead of time by AOTInductor, one package
per configuration, kept on disk (``$GPYTORCH_RNTK_CACHE_DIR``, by default
``~/.cache/gpytorch_rntk``) and loaded by a new process in milliseconds. Building one takes
15-100 s, so ``engine="auto"`` computes a Gram matrix too small to repay it on the tensor engine,
unless its package is already built: then it uses the compiled engine from small sizes on. This
module builds the usual ones ahead::

    python -m gpytorch_rntk.warmup                  # the presets below (a few minutes, once)
    python -m gpytorch_rntk.warmup --channels 1 12 --nonlinearities relu erf --fits

A package is specialised on the readout, nonlinearity, depth, channels, dtype and the variances
differentiated, not on the number of sequences or steps: one serves every size. Without options
this builds the kernels' defaults (ReLU, one layer, last and mean readouts) on univariate series
in float32 and float64, and the marginal likelihood's gradients of
:func:`~gpytorch_rntk.botorch.sequence_gp`'s defaults (erf, float64, last readout; recurrent,
input and bias variances), which makes a BO iteration's fit several times faster. With options
it builds those combinations only (``--fits`` adds the gradients). Other configurations are
built the first time a request repays it, or whenever the engine is named
(``engine="compiled"``). Deleting the cache directory forgets them all; a new version of the
package or of torch builds anew.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from .functional import RecurrentVariances, recurrent_kernel

# The Gram matrices K(x, x) that build a configuration's package: their size does not matter (a
# package serves every number of sequences and steps).
SEQUENCES = 40
STEPS = 12


def warm_up(
    *,
    readouts=("last", "mean"),
    nonlinearities=("relu",),
    dtypes=(torch.float32, torch.float64),
    channels=(1,),
    num_layers=(1,),
    fits: bool = False,
    verbose: bool = True,
) -> None:
    """Build (or find built) the compiled engine's CPU loop for every combination of the
    arguments: see the module docstring."""
    cases = [
        (readout, nonlinearity, dtype, m, layers, grad)
        for readout in readouts
        for nonlinearity in nonlinearities
        for dtype in dtypes
        for m in channels
        for layers in num_layers
        for grad in ((False, True) if fits else (False,))
    ]
    generator = torch.Generator().manual_seed(0)
    n = SEQUENCES
    for readout, nonlinearity, dtype, m, layers, grad in cases:
        values = torch.randn(n, STEPS, m, generator=generator, dtype=dtype)
        lengths = torch.full((n,), STEPS)
        variances = RecurrentVariances(
            *(torch.tensor(v, dtype=dtype, requires_grad=grad) for v in (1.0, 1.0, 0.1))
        )
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (the CompilationWarning this is about)
            gram = recurrent_kernel(
                values,
                lengths,
                values,
                lengths,
                variances,
                nonlinearity=nonlinearity,
                num_layers=layers,
                readout=readout,
                engine="compiled",
            )
            if grad:
                gram.sum().backward()
        if verbose:
            what = "gradients" if grad else "values"
            name = str(dtype).removeprefix("torch.")
            print(
                f"{readout:>4} {nonlinearity} L={layers} m={m} {name} N={n} {what}: "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )


# What ``python -m gpytorch_rntk.warmup`` builds without options: the kernels' defaults, and
# the marginal likelihood's gradients of ``sequence_gp``'s (erf, float64) for BO.
PRESETS = (
    dict(),
    dict(readouts=("last",), nonlinearities=("erf",), dtypes=(torch.float64,), fits=True),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readouts", nargs="+")
    parser.add_argument("--nonlinearities", nargs="+")
    parser.add_argument("--dtypes", nargs="+")
    parser.add_argument("--channels", nargs="+", type=int)
    parser.add_argument("--layers", nargs="+", type=int)
    parser.add_argument("--fits", action="store_true", help="also the variances' gradients")
    args = parser.parse_args(argv)
    given = dict(
        readouts=args.readouts,
        nonlinearities=args.nonlinearities,
        dtypes=args.dtypes and [getattr(torch, name) for name in args.dtypes],
        channels=args.channels,
        num_layers=args.layers,
        fits=args.fits or None,
    )
    given = {name: value for name, value in given.items() if value is not None}
    for preset in [given] if given else PRESETS:
        warm_up(**preset)


if __name__ == "__main__":
    main()
