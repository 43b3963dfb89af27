"""The wall time of one BO iteration on sequences: fit the GP, then optimise the acquisition.

``n`` training sequences of ``T`` steps (``m`` channels, values uniform in ``[-1, 1]``, fixed
length) with a smooth objective of the whole sequence; one iteration is what a BO loop does per
evaluation: build ``sequence_gp`` (warm-started from the previous iteration's hyperparameters, as
in a running loop, unless ``--cold``), ``fit_gpytorch_mll``, then ``optimize_acqf`` of analytic
LogEI with ``--restarts`` restarts from ``--raw-samples`` raw samples (at most ``--maxiter``
L-BFGS-B iterations, BoTorch's default 200). ``--settings`` compares acquisition settings
``restarts,raw_samples,maxiter`` on the same fitted model, each timed and with the LogEI value
it reached (higher is better). It prints the seconds of each part per repeat and, for
reference, the same iteration with BoTorch's default GP (RBF on the ``T * m`` vector) in the
same process.

    python benchmarks/bo_iteration.py                         # n = 100, T = 50, m = 1
    python benchmarks/bo_iteration.py --kernel-options nonlinearity=erf normalize=True
    python benchmarks/bo_iteration.py --settings 4,128,200 16,512,25
    python benchmarks/bo_iteration.py --smoke
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from botorch.acquisition import LogExpectedImprovement
from botorch.exceptions import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood

from gpytorch_rntk.botorch import sequence_bounds, sequence_gp


def objective(x: torch.Tensor, steps: int, channels: int) -> torch.Tensor:
    """A smooth function of a whole sequence: a decaying sum of a nonlinear response per step."""
    u = x.reshape(*x.shape[:-1], steps, channels)
    weights = 0.9 ** torch.arange(steps - 1, -1, -1, dtype=x.dtype)
    return (weights.unsqueeze(-1) * torch.sin(3 * u) * (1 - u.square())).sum((-1, -2)).unsqueeze(-1)


def parse_options(items: list[str]) -> dict:
    """``name=value`` pairs; values are Python literals where they parse as such."""
    import ast

    options = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            options[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[name] = value
    return options


def fit(model) -> float:
    """Fit ``model`` by BoTorch's default; the seconds it took."""
    start = time.perf_counter()
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return time.perf_counter() - start


def acquire(model, bounds, restarts: int, raw_samples: int, maxiter: int) -> tuple[float, float]:
    """Optimise LogEI on ``model`` (seeded, so that settings start from the same raw samples);
    the seconds it took and the LogEI value reached."""
    acqf = LogExpectedImprovement(model, best_f=model.train_targets.max())
    torch.manual_seed(0)
    start = time.perf_counter()
    _, value = optimize_acqf(
        acqf,
        bounds,
        q=1,
        num_restarts=restarts,
        raw_samples=raw_samples,
        options={"maxiter": maxiter},
    )
    return time.perf_counter() - start, float(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100, help="training sequences")
    parser.add_argument("--t", type=int, default=50, help="steps per sequence")
    parser.add_argument("--m", type=int, default=1, help="channels per step")
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--raw-samples", type=int, default=128)
    parser.add_argument("--maxiter", type=int, default=200, help="L-BFGS-B iterations at most")
    parser.add_argument(
        "--settings",
        nargs="*",
        default=None,
        help="restarts,raw_samples,maxiter triples compared on the same fit (replace the three "
        "options above)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="no warm start between repeats")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument(
        "--kernel-options", nargs="*", default=[], help="name=value for sequence_gp"
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.n, args.t, args.restarts, args.raw_samples, args.repeats = 12, 6, 1, 8, 1
    settings = [(args.restarts, args.raw_samples, args.maxiter)]
    if args.settings:
        settings = [tuple(int(v) for v in text.split(",")) for text in args.settings]
        if any(len(s) != 3 for s in settings):
            parser.error("--settings takes restarts,raw_samples,maxiter triples")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=InputDataWarning)
    options = parse_options(args.kernel_options)
    gen = torch.Generator().manual_seed(0)
    bounds = sequence_bounds(args.t, args.m, -1.0, 1.0, variable_length=False, dtype=torch.float64)
    x = 2 * torch.rand(args.n + args.repeats, args.t * args.m, generator=gen, dtype=torch.float64)
    x = x - 1
    y = objective(x, args.t, args.m)
    print(
        f"n = {args.n} (+1 per repeat), T = {args.t}, m = {args.m}, float64, "
        f"{torch.get_num_threads()} threads, LogEI (restarts, raw samples, L-BFGS-B iterations "
        f"at most): {settings}; sequence_gp options {options or 'default'}"
    )
    print("| model | repeat | n | settings | fit (s) | acquisition (s) | iteration (s) | LogEI |")
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name in ("rntk", "rbf"):
        previous = None
        for r in range(args.repeats):
            n = args.n + r
            if name == "rntk":
                model = sequence_gp(
                    x[:n], y[:n], input_dim=args.m, variable_length=False, **options
                )
            else:
                model = SingleTaskGP(x[:n], y[:n])
            if previous is not None and not args.cold:
                model.covar_module.load_state_dict(previous.covar_module.state_dict())
                model.likelihood.load_state_dict(previous.likelihood.state_dict())
            fit_s = fit(model)
            previous = model
            for setting in settings:
                acq_s, value = acquire(model, bounds, *setting)
                print(
                    f"| {name} | {r} | {n} | {','.join(map(str, setting))} | {fit_s:.2f} | "
                    f"{acq_s:.2f} | {fit_s + acq_s:.2f} | {value:.4f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
