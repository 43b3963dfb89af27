"""Bayesian optimisation of token sequences on the Ehrlich functions: RNTK-BO against a one-hot GP,
a genetic algorithm and random search.

The Ehrlich functions (Stanton et al., "Closed-form test functions for biophysical sequence
design", 2024) are closed-form stand-ins for protein design: a sequence of length ``T`` over
``v`` states scores 1 when it contains ``c`` spaced motifs of length ``k`` (quantised to ``q``
levels of partial presence), and is infeasible (score -inf, counted 0 here) where it makes a
transition that the function's banded transition matrix forbids. They come from the package
``pytorch-holo`` (``holo.test_functions.closed_form.Ehrlich``, installed with ``pip install
--no-deps pytorch-holo pooch``: its metadata pins numpy<2, which its closed-form part does not
need).

Every method starts from the same ``--init`` feasible designs per seed (samples of the function's
own Markov process, as in the paper), then spends ``--rounds`` rounds of ``--batch`` evaluations.
Every method knows which transitions are allowed (random search by sampling the Markov process,
the others through the same feasibility predicate), so none spends evaluations on infeasible
designs:

* ``rntk``: ``sequence_gp`` on one-hot steps (``encode_tokens``, ``input_dim = v``; options from
  ``--rntk-options``), ``qLogExpectedImprovement``, candidates from
  ``optimize_acqf_tokens`` (substitution hill climbing from the ``--starts`` best designs and
  ``--fresh`` new samples of the Markov process, feasible mutations only, the evaluated designs
  avoided, the batch chosen greedily with the pending points);
* ``onehot``: BoTorch's ``SingleTaskGP`` with its default kernel (RBF with dimension-scaled
  priors) on the flattened ``T * v`` one-hot vector, the same acquisition and search;
* ``ga``: a genetic algorithm with the same budget: the population is every design evaluated so
  far; each child is the one-point crossover of two parents drawn by binary tournament, then
  each position mutated to a random state with probability ``1 / T``, kept if feasible and new;
* ``random``: fresh samples of the Markov process.

With ``--search evolve`` both GP methods instead rank ``--pool`` children of the genetic
algorithm by the acquisition (``optimize_acqf_discrete``, greedy with pending points) and
evaluate the best ``--batch``: the GA's proposals, screened by the surrogate.

It prints, per size and method, the best score after the initial design and after each round
(mean and standard error over seeds) and the seconds per round (fit and acquisition search).

    python benchmarks/ehrlich_bo.py                          # 10 seeds, two sizes
    python benchmarks/ehrlich_bo.py --sizes 32,32,2,4 --seeds 3 --rounds 4
    python benchmarks/ehrlich_bo.py --smoke                  # seconds

``--prior-variance`` runs no BO: per size and seed it fits the RNTK (``--rntk-options``) to
``--init`` Markov samples and prints the spread of its prior variance ``k(x, x)`` over ``--pool``
children of the genetic algorithm, and its correlation with how repetitive each child is (the
fraction of equal pairs of positions). An improvement-based acquisition prefers designs of high
prior variance; ``normalize=True`` makes it constant.

A long run can be split over processes by seed and summarised together:

    python benchmarks/ehrlich_bo.py --seeds 5 --curves a.jsonl &
    python benchmarks/ehrlich_bo.py --seeds 5 --first-seed 5 --curves b.jsonl &
    python benchmarks/ehrlich_bo.py --summarise a.jsonl b.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch
from botorch.acquisition import qLogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf_discrete
from gpytorch.mlls import ExactMarginalLogLikelihood

from gpytorch_rntk import decode_tokens, encode_tokens
from gpytorch_rntk.botorch import optimize_acqf_tokens, sequence_gp

METHODS = ("rntk", "onehot", "ga", "random")


def ehrlich(states: int, length: int, motifs: int, motif_length: int, seed: int):
    from holo.test_functions.closed_form import Ehrlich

    return Ehrlich(
        num_states=states,
        dim=length,
        num_motifs=motifs,
        motif_length=motif_length,
        quantization=motif_length,
        random_seed=seed,
    )


def score(function, designs: list[torch.Tensor]) -> torch.Tensor:
    """The Ehrlich score of each design, infeasible ones counted 0 (the feasible floor)."""
    values = function(torch.stack(designs)).double()
    return torch.where(torch.isfinite(values), values, 0.0)


def feasibility(function):
    """The function's known constraint as a predicate on one design: every transition between
    consecutive states allowed by its transition matrix (what sampling its Markov process, as
    random search does, respects by construction)."""
    allowed = function.transition_matrix > 0

    def feasible(design: torch.Tensor) -> bool:
        return bool(allowed[design[:-1], design[1:]].all())

    return feasible


def markov_samples(function, n: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Feasible designs: samples of the function's Markov process (its initial solutions)."""
    from holo.test_functions.elemental import sample_dmp

    samples = sample_dmp(
        initial_dist=function.stationary_dist.squeeze(-1),
        transition_matrix=function.transition_matrix,
        num_steps=function.dim,
        num_samples=n,
        generator=generator,
    )
    return list(samples.long())


class _Flattened(torch.nn.Module):
    """An acquisition function of the flattened one-hot vector, called on the token layout
    (length column first: every design has the same length, so it is dropped)."""

    def __init__(self, acqf):
        super().__init__()
        self.acqf, self.model = acqf, acqf.model

    def set_X_pending(self, x):
        self.acqf.set_X_pending(None if x is None else x[..., 1:])

    @property
    def X_pending(self):
        return self.acqf.X_pending

    def forward(self, x):
        return self.acqf(x[..., 1:])


def propose_gp(method, designs, values, function, args, generator) -> list[torch.Tensor]:
    states, length = function.num_states, function.dim
    x = encode_tokens(designs, states, max_len=length)
    y = values.unsqueeze(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "rntk":
            model = sequence_gp(x, y, input_dim=states, **args.rntk_kwargs)
        else:
            model = SingleTaskGP(x[:, 1:], y)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        acqf = qLogExpectedImprovement(model, best_f=model.train_targets.max())
        if method != "rntk":
            acqf = _Flattened(acqf)
        if args.search == "evolve":  # the GA's proposals, ranked by the acquisition
            pool = propose_ga(designs, values, function, args.pool, generator)
            choices = encode_tokens(pool, states, max_len=length)
            found, _ = optimize_acqf_discrete(acqf, q=args.batch, choices=choices, unique=True)
            return decode_tokens(found, states)
        best = values.argsort(descending=True)[: args.starts].tolist()
        starts = [designs[i] for i in best] + markov_samples(function, args.fresh, generator)
        found, _ = optimize_acqf_tokens(
            acqf,
            states,
            starts,
            length,
            q=args.batch,
            avoid=designs,
            feasible=feasibility(function),
            num_neighbours=args.neighbours,
            max_steps=args.max_steps,
            generator=generator,
        )
    return found


def prior_variance(size, seed: int, args) -> None:
    """See the module docstring (``--prior-variance``)."""
    function = ehrlich(*size, seed=seed)
    generator = torch.Generator().manual_seed(1000 + seed)
    designs = markov_samples(function, args.init, generator)
    values = score(function, designs)
    pool = propose_ga(designs, values, function, args.pool, generator)
    x = encode_tokens(designs, size[0], max_len=size[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = sequence_gp(x, values.unsqueeze(-1), input_dim=size[0], **args.rntk_kwargs)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    with torch.no_grad():
        k = model.covar_module(encode_tokens(pool, size[0], max_len=size[1]), diag=True)
    repeats = torch.stack([(c.unsqueeze(0) == c.unsqueeze(1)).double().mean() for c in pool])
    spread = (k.max() / k.min()).item()
    correlation = "none (constant)"
    if spread > 1 + 1e-9:
        correlation = f"{torch.corrcoef(torch.stack([k, repeats]))[0, 1]:.2f}"
    print(
        f"v, T, c, k = {size}, seed {seed}: k(x, x) over {len(pool)} children min "
        f"{k.min():.3g}, mean {k.mean():.3g}, max {k.max():.3g} (max / min {spread:.3g}); "
        f"correlation with repetitiveness {correlation}",
        flush=True,
    )


def propose_ga(designs, values, function, batch, generator) -> list[torch.Tensor]:
    seen = {tuple(d.tolist()) for d in designs}
    feasible = feasibility(function)
    children = []
    for _ in range(100_000):
        if len(children) == batch:
            return children
        parents = []
        for _ in range(2):  # binary tournament
            a, b = torch.randint(len(designs), (2,), generator=generator).tolist()
            parents.append(designs[a] if values[a] >= values[b] else designs[b])
        cut = int(torch.randint(1, function.dim, (), generator=generator))
        child = torch.cat([parents[0][:cut], parents[1][cut:]])
        mutate = torch.rand(function.dim, generator=generator) < 1 / function.dim
        random_states = torch.randint(function.num_states, (function.dim,), generator=generator)
        child = torch.where(mutate, random_states, child)
        if tuple(child.tolist()) not in seen and feasible(child):
            seen.add(tuple(child.tolist()))
            children.append(child)
    raise RuntimeError("the genetic algorithm found no new feasible child in 100000 tries")


def run(method, size, seed, args) -> tuple[list[float], float]:
    """Best score after the initial design and after each round; seconds per round."""
    function = ehrlich(*size, seed=seed)
    generator = torch.Generator().manual_seed(1000 + seed)
    designs = markov_samples(function, args.init, generator)
    values = score(function, designs)
    best = [values.max().item()]
    start = time.perf_counter()
    for _ in range(args.rounds):
        if method == "random":
            new = markov_samples(function, args.batch, generator)
        elif method == "ga":
            new = propose_ga(designs, values, function, args.batch, generator)
        else:
            new = propose_gp(method, designs, values, function, args, generator)
        designs = designs + list(new)
        values = torch.cat([values, score(function, new)])
        best.append(values.max().item())
    return best, (time.perf_counter() - start) / args.rounds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=["32,32,2,4", "32,64,4,4"],
        help="v,T,c,k: states, length, motifs, motif length (quantisation k)",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds from this one on")
    parser.add_argument(
        "--curves", help="append each seed's best scores and seconds to this file (JSON lines)"
    )
    parser.add_argument(
        "--summarise",
        nargs="+",
        metavar="FILE",
        help="print the tables of --curves files; run nothing",
    )
    parser.add_argument("--init", type=int, default=16, help="initial designs")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4, help="evaluations per round")
    parser.add_argument("--starts", type=int, default=4, help="hill climbs per candidate")
    parser.add_argument(
        "--search",
        choices=("climb", "evolve"),
        default="climb",
        help="the GP methods' candidates: hill climbing on the acquisition (optimize_acqf_tokens)"
        " or the best of --pool genetic-algorithm children by the acquisition",
    )
    parser.add_argument(
        "--pool", type=int, default=256, help="children ranked with --search evolve"
    )
    parser.add_argument(
        "--fresh", type=int, default=4, help="Markov samples added to the climbs' starts"
    )
    parser.add_argument("--neighbours", type=int, default=64, help="mutations per climb step")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument(
        "--rntk-options",
        default="readout=mean,normalize=True",
        help="sequence_gp keyword arguments (default: those docs/bayesian_optimisation.md "
        "advises for token strings), e.g. readout=last,bidirectional=True,num_layers=2",
    )
    parser.add_argument(
        "--prior-variance",
        action="store_true",
        help="print the RNTK's prior variance over GA children against their repetitiveness",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="one seed, one round, small size")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sizes, args.seeds, args.init, args.rounds = ["8,8,1,2"], 1, 6, 1
        args.batch, args.neighbours, args.max_steps, args.pool = 2, 16, 3, 16
    if args.summarise:
        summarise(args.summarise)
        return
    torch.set_num_threads(args.threads)
    args.rntk_kwargs = {}
    for item in filter(None, args.rntk_options.split(",")):
        name, value = item.split("=")
        args.rntk_kwargs[name] = {"True": True, "False": False}.get(value, value)
        if value.isdigit():
            args.rntk_kwargs[name] = int(value)
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    print(
        f"# {args.seeds} seeds, {args.init} initial designs + {args.rounds} rounds of "
        f"{args.batch}; RNTK options {args.rntk_kwargs}; GP search {args.search}; float64, "
        f"{args.threads} thread(s)"
    )
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    if args.prior_variance:
        for text in args.sizes:
            for seed in seeds:
                prior_variance(tuple(int(v) for v in text.split(",")), seed, args)
        return
    for text in args.sizes:
        size = tuple(int(v) for v in text.split(","))
        print_header(size, args.init, args.batch, args.rounds)
        for method in methods:
            runs = []
            for seed in seeds:
                runs.append(run(method, size, seed, args))
                if args.curves:
                    record = dict(size=list(size), method=method, seed=seed, init=args.init)
                    record.update(batch=args.batch, best=runs[-1][0], s_per_round=runs[-1][1])
                    if method in ("rntk", "onehot"):
                        record.update(search=args.search, rntk_options=args.rntk_options)
                    with open(args.curves, "a") as file:
                        file.write(json.dumps(record) + "\n")
            print_row(method, runs)


def print_header(size, init: int, batch: int, rounds: int) -> None:
    print(f"\n## v = {size[0]}, T = {size[1]}, c = {size[2]}, k = {size[3]}")
    evaluations = [init + r * batch for r in range(rounds + 1)]
    print("method | s/round | " + " | ".join(f"best@{e}" for e in evaluations))


def print_row(label: str, runs: list[tuple[list[float], float]]) -> None:
    """Mean +- standard error over seeds of the best score after each round; mean s/round."""
    best = torch.tensor([r[0] for r in runs])
    mean = best.mean(0)
    se = best.std(0) / math.sqrt(len(runs)) if len(runs) > 1 else torch.zeros_like(mean)
    seconds = sum(r[1] for r in runs) / len(runs)
    cells = [f"{m:.3f} +- {s:.3f}" for m, s in zip(mean.tolist(), se.tolist(), strict=True)]
    print(f"{label} | {seconds:.1f} | " + " | ".join(cells), flush=True)


def summarise(paths: list[str]) -> None:
    """The tables of ``--curves`` files: one row per size, method, search and options."""
    groups: dict = {}
    for path in paths:
        with open(path) as file:
            for line in filter(str.strip, file):
                r = json.loads(line)
                key = (tuple(r["size"]), r["init"], r["batch"], len(r["best"]) - 1)
                label = r["method"]
                if "search" in r:
                    options = f"; {r['rntk_options']}" if label == "rntk" else ""
                    label += f" [{r['search']}{options}]"
                seeds = groups.setdefault(key, {}).setdefault(label, {})
                if r["seed"] in seeds:
                    raise SystemExit(f"{path}: seed {r['seed']} of {label} at {key[0]} twice")
                seeds[r["seed"]] = (r["best"], r["s_per_round"])
    for (size, init, batch, rounds), rows in groups.items():
        print_header(size, init, batch, rounds)
        for label, seeds in rows.items():
            print_row(f"{label}, {len(seeds)} seeds", [seeds[s] for s in sorted(seeds)])


if __name__ == "__main__":
    main()
