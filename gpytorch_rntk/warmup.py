"""Compile the compiled engine's loop ahead, once per machine, for the common configurations.

On the CPU, ``engine="auto"`` computes a Gram matrix too small to repay compiling (10-60 s
per configuration and tile shape) on the tensor engine, unless that configuration's loop is
already compiled on this machine, in Inductor's on-disk cache: a fresh process then loads it in
about 4 s once and runs the compiled engine (2-3x the tensor engine in float32 at N = 1000,
T = 150). This module compiles the usual ones ahead::

    python -m gpytorch_rntk.warmup                  # the presets below (a few minutes, once)
    python -m gpytorch_rntk.warmup --channels 1 12 --nonlinearities relu erf --fits

What it compiles is keyed by everything the compiled loop is specialised on: readout,
nonlinearity, depth, channels, dtype, tile shape and the variances differentiated. Without
options it covers the kernels' defaults (ReLU, one layer, last and mean readouts) on univariate
series in float32 and float64 at the tile shapes of large matrices ``K(x, x)``, and the
marginal likelihood's gradients of :func:`~gpytorch_rntk.botorch.sequence_gp`'s defaults (erf,
float64; recurrent, input and bias variances) for 17 to 32, 33 to 64, 65 to 128 and more
training sequences, which makes a BO iteration's fit several times faster. With options it
compiles those combinations only (``--fits`` adds the gradients). Other shapes are compiled the
first time a request repays it, or whenever the engine is named (``engine="fused"``). Clearing
Inductor's cache directory (``TORCHINDUCTOR_CACHE_DIR``, by default ``torchinductor_<user>`` in
the temporary directory) forgets it all, and so does a new version of the package or of torch.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from .functional import RecurrentVariances, recurrent_kernel

# K(x, x) of this many sequences of this many steps uses the compiled loop's shapes of large
# matrices: tiles of 256 x 256 pairs (last readout), 1024 lanes of 16 x 16 pairs (mean readout,
# equal lengths; the lanes' count decides how many run side by side). Fits: each power of two
# up to 256 has its own tile (that of 32 serves 17 to 32 sequences), larger sets that of 256.
LAST_SIZES = ((1024, 16),)
MEAN_SIZES = ((256, 64),)
FIT_SIZES = (32, 64, 128, 256)


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
    """Compile (or find cached) the compiled engine's loop for every combination of the
    arguments, on the CPU: see the module docstring."""
    cases = [
        (readout, nonlinearity, dtype, m, layers, n, steps, False)
        for readout in readouts
        for nonlinearity in nonlinearities
        for dtype in dtypes
        for m in channels
        for layers in num_layers
        for n, steps in (LAST_SIZES if readout == "last" else MEAN_SIZES)
    ]
    if fits:
        cases += [
            ("last", nonlinearity, dtype, m, layers, n, 16, True)
            for nonlinearity in nonlinearities
            for dtype in dtypes
            for m in channels
            for layers in num_layers
            for n in FIT_SIZES
        ]
    generator = torch.Generator().manual_seed(0)
    for readout, nonlinearity, dtype, m, layers, n, steps, grad in cases:
        values = torch.randn(n, steps, m, generator=generator, dtype=dtype)
        lengths = torch.full((n,), steps)
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


# What ``python -m gpytorch_rntk.warmup`` compiles without options: the kernels' defaults, and
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
