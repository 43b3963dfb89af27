"""Bayesian optimisation over sequences: RNTK-BO against RBF-BO and random search.

Two problems whose inputs are sequences:

* ``controller``: choose ``T`` control values ``u_t`` in ``[-1, 1]`` for a lightly damped
  oscillator started away from rest; the reward is minus the quadratic cost of the simulated
  trajectory (fixed length, continuous design: ``optimize_acqf``). The box-constrained optimum is
  computed by projected gradient descent and printed for reference.
* ``ucr``: a pool of real series (aeon's shipped GunPoint and ArrowHead, z-normalised, downsampled
  to 30 steps and cropped to random windows of 8-30 steps), scored by a hidden function of their
  shape: the mean squared distance of their last steps to a hidden template, aligned at the end
  (variable length, discrete pool: ``optimize_acqf_discrete`` in chunks).

Methods: ``rntk`` (SingleTaskGP with ScaleKernel(RNTKKernel), no input transform; options joined
with ``-``: a nonlinearity ``erf``/``tanh``/``gelu``, ``norm`` for ``normalize=True``), ``rbf``
(BoTorch's default SingleTaskGP kernel on the zero-padded vectors, length column included, with
``Normalize`` to the design bounds) and ``random``. Both GP methods use analytic LogEI and share the
random initial design of each seed. The tables give the best value found after each number of
evaluations, mean and standard error over seeds.

    python benchmarks/bo.py                      # 4 seeds, 8 random + 12 BO evaluations (~10 min)
    python benchmarks/bo.py --methods rntk,rntk-erf-norm,rbf,random --problems controller
    python benchmarks/bo.py --smoke              # one seed, two BO steps, under a minute
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from botorch.acquisition import LogExpectedImprovement
from botorch.exceptions import InputDataWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import Normalize
from botorch.optim import optimize_acqf, optimize_acqf_discrete
from gpytorch.mlls import ExactMarginalLogLikelihood

from gpytorch_rntk import encode_sequences
from gpytorch_rntk.botorch import sequence_bounds, sequence_gp

DTYPE = torch.float64
METHODS = ("rntk", "rbf", "random")
# Options of an RNTK method, joined to it with "-": a nonlinearity, "norm" for normalize=True.
RNTK_OPTIONS = ("erf", "tanh", "gelu", "norm")


@dataclass
class Settings:
    init: int  # random initial evaluations
    iters: int  # BO evaluations after them
    raw_samples: int
    num_restarts: int
    pool_crops: int  # crops per UCR series
    max_batch_size: int


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------


class Oscillator:
    """A damped oscillator ``x'' = -w^2 x - 2 z w x' + u``, semi-implicit Euler, from ``x = 1``."""

    def __init__(self, steps: int = 10, dt: float = 0.6, omega: float = 1.0, zeta: float = 0.05):
        self.steps, self.dt, self.omega, self.zeta = steps, dt, omega, zeta
        self.bounds = sequence_bounds(steps, 1, -1.0, 1.0, variable_length=False, dtype=DTYPE)

    def reward(self, u: torch.Tensor) -> torch.Tensor:
        """``(..., T)`` controls -> ``(...)`` rewards: minus the mean of x^2 + 0.1 v^2 + 0.1 u^2."""
        x = torch.ones(u.shape[:-1], dtype=u.dtype)
        v = torch.zeros_like(x)
        cost = torch.zeros_like(x)
        for t in range(self.steps):
            v = v + self.dt * (-(self.omega**2) * x - 2 * self.zeta * self.omega * v + u[..., t])
            x = x + self.dt * v
            cost = cost + x**2 + 0.1 * v**2 + 0.1 * u[..., t] ** 2
        return -cost / self.steps

    def optimum(self) -> float:
        """The box-constrained optimum, by projected gradient ascent (a concave problem)."""
        u = torch.zeros(self.steps, dtype=DTYPE, requires_grad=True)
        opt = torch.optim.Adam([u], lr=0.05)
        for _ in range(3000):
            opt.zero_grad()
            (-self.reward(u)).backward()
            opt.step()
            with torch.no_grad():
                u.clamp_(-1, 1)
        return self.reward(u.detach()).item()


def ucr_pool(crops: int, seed: int = 0) -> list[np.ndarray]:
    """Windows of 8-30 steps of GunPoint and ArrowHead series, z-normalised, 30 steps each."""
    from aeon.datasets import load_arrow_head, load_gunpoint

    rng = np.random.default_rng(seed)
    series = []
    for loader in (load_gunpoint, load_arrow_head):
        for split in ("train", "test"):
            x, _ = loader(split=split)
            x = np.asarray(x[:, 0, :], dtype=np.float64)
            idx = np.linspace(0, x.shape[1] - 1, 30).round().astype(int)
            x = x[:, idx]
            series.extend((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True))
    pool = []
    for s in series:
        for _ in range(crops):
            length = int(rng.integers(8, 31))
            start = int(rng.integers(0, 31 - length))
            pool.append(s[start : start + length])
    return pool


def end_template_score(pool: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Minus the mean squared distance of each sequence's last steps to ``template``.

    ``pool`` is ``(N, 1 + 30)`` in the variable-length layout; missing steps (a sequence shorter
    than the template) count as zeros.
    """
    k = template.shape[0]
    lengths = pool[:, 0].long()
    pos = lengths.unsqueeze(-1) - k + torch.arange(k)  # 0-based positions of the last k steps
    vals = pool[:, 1:].gather(1, pos.clamp(min=0)) * (pos >= 0)
    return -(vals - template).square().mean(-1)


# --------------------------------------------------------------------------------------------
# Models and one BO run
# --------------------------------------------------------------------------------------------


def fit(model: SingleTaskGP, previous: SingleTaskGP | None) -> SingleTaskGP:
    if previous is not None:  # warm start: hyperparameters of the last fit, fresh data transforms
        model.covar_module.load_state_dict(previous.covar_module.state_dict())
        model.likelihood.load_state_dict(previous.likelihood.state_dict())
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


def make_model(method: str, x: torch.Tensor, y: torch.Tensor, bounds: torch.Tensor, fixed: bool):
    if method.startswith("rntk"):  # "rntk" (ReLU), "rntk-erf", "rntk-erf-norm", ...
        options = method.split("-")[1:]
        nonlinearity = next((o for o in options if o != "norm"), "relu")
        return sequence_gp(
            x,
            y,
            input_dim=1,
            variable_length=not fixed,
            nonlinearity=nonlinearity,
            normalize="norm" in options,
        )
    span = (bounds[1] - bounds[0]).clamp_min(1e-6)  # padded columns may never vary
    return SingleTaskGP(
        x,
        y,
        input_transform=Normalize(x.shape[-1], bounds=torch.stack([bounds[0], span]).cumsum(0)),
    )


def run_controller(method: str, seed: int, s: Settings, problem: Oscillator) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = problem.bounds
    x = lo + (hi - lo) * torch.rand(
        s.init + (s.iters if method == "random" else 0), len(lo), generator=gen, dtype=DTYPE
    )
    y = problem.reward(x).unsqueeze(-1)
    model = None
    for _ in range(0 if method == "random" else s.iters):
        model = fit(make_model(method, x, y, problem.bounds, fixed=True), model)
        acqf = LogExpectedImprovement(model, best_f=y.max())
        torch.manual_seed(seed * 1000 + len(y))
        cand, _ = optimize_acqf(
            acqf, problem.bounds, q=1, num_restarts=s.num_restarts, raw_samples=s.raw_samples
        )
        x = torch.cat([x, cand])
        y = torch.cat([y, problem.reward(cand).unsqueeze(-1)])
    return y.squeeze(-1).cummax(0).values.tolist()


def ucr_scores(pool: torch.Tensor, seed: int) -> torch.Tensor:
    """The hidden objective of one seed: the end-aligned distance to a perturbed template, the last
    10 steps of a random pool member."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    long_enough = (pool[:, 0] >= 10).nonzero().squeeze(-1)
    src = pool[long_enough[torch.randint(len(long_enough), (1,), generator=gen)]].squeeze(0)
    t = int(src[0])
    template = src[1 + t - 10 : 1 + t] + 0.3 * torch.randn(10, generator=gen, dtype=DTYPE)
    return end_template_score(pool, template)


def run_pool(method: str, seed: int, s: Settings, pool: torch.Tensor) -> list[float]:
    gen = torch.Generator().manual_seed(seed)
    scores = ucr_scores(pool, seed)
    order = torch.randperm(len(pool), generator=gen)
    n_first = s.init + (s.iters if method == "random" else 0)
    chosen = order[:n_first].tolist()
    remaining = torch.ones(len(pool), dtype=torch.bool)
    remaining[chosen] = False
    bounds = torch.stack([pool.min(0).values, pool.max(0).values])
    model = None
    for _ in range(0 if method == "random" else s.iters):
        x, y = pool[chosen], scores[chosen].unsqueeze(-1)
        model = fit(make_model(method, x, y, bounds, fixed=False), model)
        acqf = LogExpectedImprovement(model, best_f=y.max())
        candidates = pool[remaining]  # drop evaluated rows by index, not with X_avoid
        cand, _ = optimize_acqf_discrete(
            acqf, q=1, choices=candidates, max_batch_size=s.max_batch_size
        )
        index = remaining.nonzero().squeeze(-1)[(candidates == cand).all(-1).nonzero()[0, 0]]
        chosen.append(int(index))
        remaining[index] = False
    return scores[chosen].cummax(0).values.tolist()


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def table(title: str, results: dict[str, np.ndarray], init: int, every: int, ref: str = "") -> str:
    n = next(iter(results.values())).shape[1]
    rows = sorted({*range(init, n + 1, every), init, n})
    lines = [f"### {title}", "", ref, "" if ref else None]
    lines = [line for line in lines if line is not None]
    lines.append("| evaluations | " + " | ".join(results) + " |")
    lines.append("|---:|" + "---:|" * len(results))
    for r in rows:
        cells = [
            f"{v[:, r - 1].mean():.4f} ± {v[:, r - 1].std(ddof=1) / np.sqrt(len(v)):.4f}"
            if len(v) > 1
            else f"{v[0, r - 1]:.4f}"
            for v in results.values()
        ]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def benchmark(
    name: str,
    run: Callable[[str, int], list[float]],
    methods: list[str],
    seeds: int,
    s: Settings,
    ref: str = "",
) -> str:
    results, seconds = {}, {}
    for method in methods:
        start = time.perf_counter()
        results[method] = np.array([run(method, seed) for seed in range(seeds)])
        seconds[method] = time.perf_counter() - start
        print(f"  {name} {method}: {seconds[method]:.0f} s", flush=True)
    every = max(1, s.iters // 4)
    timing = ", ".join(f"{m} {t:.0f} s" for m, t in seconds.items())
    return table(
        f"{name} (best value found; mean ± standard error over {seeds} seeds)",
        results,
        s.init,
        every,
        f"{ref}Wall time: {timing}.",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--iters", type=int, default=12, help="BO evaluations after the design")
    parser.add_argument("--init", type=int, default=None, help="initial random evaluations")
    parser.add_argument("--problems", default="controller,ucr")
    parser.add_argument(
        "--methods",
        default="rntk,rbf,random",
        help=f"comma-separated, from {', '.join(METHODS)} (RNTK options: see above)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--smoke", action="store_true", default=bool(os.environ.get("SMOKE_TEST")))
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = [
        m
        for m in methods
        if m.split("-")[0] not in METHODS
        or (m.split("-")[0] != "rntk" and "-" in m)
        or not set(m.split("-")[1:]) <= set(RNTK_OPTIONS)
    ]
    if unknown:
        parser.error(
            f"unknown methods {unknown}; choose from {METHODS}, the RNTK with options "
            f"joined by '-' from {RNTK_OPTIONS} (e.g. rntk-erf-norm)"
        )
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=InputDataWarning)
    if args.smoke:
        args.seeds, args.iters = 1, 2
        s = Settings(4, 2, 16, 1, 1, 256)
    else:
        s = Settings(8, args.iters, 96, 3, 5, 256)
    if args.init is not None:
        s.init = args.init
    out = []
    problems = args.problems.split(",")
    if "controller" in problems:
        osc = Oscillator()
        ref = f"Optimum (projected gradient): {osc.optimum():.4f}; all-zero controls: "
        ref += f"{osc.reward(torch.zeros(osc.steps, dtype=DTYPE)).item():.4f}. "
        out.append(
            benchmark(
                f"controller, T = {osc.steps}, u in [-1, 1]",
                lambda m, seed: run_controller(m, seed, s, osc),
                methods,
                args.seeds,
                s,
                ref,
            )
        )
    if "ucr" in problems:
        pool = encode_sequences(ucr_pool(s.pool_crops), max_len=30)
        if args.smoke:
            pool = pool[:500]
        best = np.mean([ucr_scores(pool, seed).max().item() for seed in range(args.seeds)])
        ref = f"Pool: {len(pool)} GunPoint/ArrowHead windows of 8-30 steps; pool maximum "
        ref += f"(mean over seeds): {best:.4f}. "
        out.append(
            benchmark(
                "UCR pool, hidden end-aligned template",
                lambda m, seed: run_pool(m, seed, s, pool),
                methods,
                args.seeds,
                s,
                ref,
            )
        )
    print()
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
