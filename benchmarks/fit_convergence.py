"""How long BoTorch's default fit of ``sequence_gp`` takes, and what it converges to.

For each length ``T`` and each target (the value of the first, the middle or the last step of
``n`` random-normal sequences, ``m = 1``), it builds ``sequence_gp`` and runs
``fit_gpytorch_mll(ExactMarginalLogLikelihood(...))`` as a user would, then prints one row:
whether the fit succeeded (``ok``; ``warned`` if BoTorch emitted warnings, e.g. a retry), its
seconds and L-BFGS iterations (all attempts), the fitted hyperparameters, ``weight_1`` =
``(recurrent_var * max V') ** (T - 1)``, the weight of the first step relative to the last
(exact for ReLU, ``max V' = 1/2``; an upper bound for erf, ``4 / pi``; at most 100 by
sequence_gp's bound), the fitted prior variance ``mean K(x, x)`` of ``f`` (about
the standardised targets' 1) and the negative marginal log likelihood per observation (BoTorch's
objective, priors included; a noise-only model scores about 1.4 + 0.2 for the noise prior).

    python benchmarks/fit_convergence.py                          # T = 30 50 100 300, n = 40
    python benchmarks/fit_convergence.py --lengths 100 --targets first --variable-length
    python benchmarks/fit_convergence.py --nonlinearity erf --kernel nngp
    python benchmarks/fit_convergence.py --lengths 100 --targets first --bidirectional
    python benchmarks/fit_convergence.py --lengths 300 --engine compiled
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import torch
from botorch.fit import fit_gpytorch_mll
from gpytorch.mlls import ExactMarginalLogLikelihood

from gpytorch_rntk import encode_sequences
from gpytorch_rntk.botorch import sequence_gp

COLUMNS = (
    "T | target | status | seconds | iterations | recurrent_var | weight_1 | input_var | "
    "bias_var | outputscale | noise | prior_var | nmll/n"
)


def run_case(args, length: int, target: str) -> str:
    generator = torch.Generator().manual_seed(args.seed)
    lengths = [length] * args.n
    if args.variable_length:
        lengths = torch.randint(max(length // 2, 1), length + 1, (args.n,), generator=generator)
    sequences = [torch.randn(int(t), 1, generator=generator, dtype=torch.float64) for t in lengths]
    step = {"first": lambda s: s[0], "middle": lambda s: s[len(s) // 2], "last": lambda s: s[-1]}
    train_x = encode_sequences(sequences, max_len=length) if args.variable_length else None
    if train_x is None:
        train_x = torch.stack(sequences).flatten(-2)
    train_y = torch.stack([step[target](s) for s in sequences])
    model = sequence_gp(
        train_x,
        train_y,
        input_dim=1,
        kernel=args.kernel,
        nonlinearity=args.nonlinearity,
        variable_length=args.variable_length,
        bidirectional=args.bidirectional,
        readout=args.readout,
        engine=args.engine,
    )
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    iterations = [0]

    def count(*_):
        iterations[0] += 1

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit_gpytorch_mll(mll, optimizer_kwargs={"callback": count})
            status = "warned" if caught else "ok"
        except Exception as error:  # report, do not stop the table
            status = type(error).__name__
    seconds = time.perf_counter() - start
    scale, kernel = model.covar_module, model.covar_module.base_kernel
    model.train()
    with torch.no_grad():
        prior_var = scale(train_x, diag=True).mean().item()
        nmll = -mll(model(train_x), model.train_targets).item()
    recurrent_var = kernel.recurrent_var.item()
    values = [
        recurrent_var,
        (recurrent_var * (0.5 if args.nonlinearity == "relu" else 4 / math.pi)) ** (length - 1),
        kernel.input_var.item(),
        kernel.bias_var.item(),
        scale.outputscale.item(),
        model.likelihood.noise.item(),
        prior_var,
    ]
    cells = [str(length), target, status, f"{seconds:.1f}", str(iterations[0])]
    return " | ".join(cells + [f"{v:.3g}" for v in values] + [f"{nmll:.3f}"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[30, 50, 100, 300])
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=["first", "middle", "last"],
        default=["first", "middle", "last"],
    )
    parser.add_argument("--n", type=int, default=40, help="training sequences")
    parser.add_argument("--variable-length", action="store_true", help="lengths in [T/2, T]")
    parser.add_argument("--kernel", choices=["rntk", "nngp"], default="rntk")
    parser.add_argument("--nonlinearity", choices=["relu", "erf"], default="relu")
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--readout", choices=["last", "mean"], default="last")
    parser.add_argument(
        "--engine", default="auto", choices=["auto", "tensor", "compiled"], help="RNTK engine"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"# n = {args.n}, kernel = {args.kernel}, nonlinearity = {args.nonlinearity}, "
        f"variable_length = {args.variable_length}, bidirectional = {args.bidirectional}, "
        f"readout = {args.readout}, engine = {args.engine}, float64, {args.threads} thread(s)"
    )
    print(COLUMNS)
    for length in args.lengths:
        for target in args.targets:
            print(run_case(args, length, target), flush=True)


if __name__ == "__main__":
    main()
