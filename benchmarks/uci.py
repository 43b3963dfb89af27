"""The RNTK authors' UCI protocol: rows of 90 small UCI data sets as univariate sequences, SVMs.

Each row (feature vector, already z-scored per feature) is read as a sequence of length ``d`` with
one feature per time step (``m = 1``), in three orders: ``forward`` (column order), ``reversed``
and ``bidirectional`` (the kernels' ``bidirectional=True``: the sum of the two). The whole
``N x d`` matrix of a set is first divided by its largest row L2 norm (the authors' scaling; the
baselines see the same matrix). Methods, each an ``SVC(kernel="precomputed")``:

* ``rntk-<order>`` and ``nngp-<order>``: the RNTK and the RNN-NNGP kernel (ReLU, zero initial
  state ``s_h = 0``) for each order, hyperparameters from ``GRIDS[--grid]`` in this file;
* ``rntk-selected`` / ``nngp-selected``: the order chosen on the validation split as well;
* ``rbf``: an RBF-kernel SVM, ``gamma`` a multiple of sklearn's ``"scale"`` value ``1 / (d var)``;
* ``ibnn``: the MLP NNGP kernel, BoTorch's ``InfiniteWidthBNNKernel`` (ReLU, grid over its depth,
  ``weight_var`` and ``bias_var``).

Selection (``--selection authors``, the protocol of Fernandez-Delgado et al. as used by Arora et
al. and the RNTK authors): the kernel hyperparameters and ``C`` maximise the accuracy on the
validation part of ``conxuntos.dat`` (fit on its training part); then the SVM is refit with them
on the training part of each of the 4 pairs of ``conxuntos_kfold.dat`` and the reported score is
the mean test accuracy over the 4 pairs. Caveat (see the data README): the 4 test sets overlap and
some rows are never tested, so the score is a mean over 4 random 75/25 splits, not a 4-fold
cross-validation; and the validation split overlaps the test sets, so the selection has seen test
rows (an optimistic bias common to every method). ``--selection inner`` removes the second
problem: for each pair the hyperparameters and ``C`` are chosen inside its training part only
(fit on the rows of the training part that lie in the validation file's training half, scored on
those that lie in its validation half), so no test row takes part in the choice.

Every Gram matrix is computed once per hyperparameter setting on all (kept) rows of a set and
sliced for each split: the kernels are deterministic. Grams of the reversed order come from the
same scan on the flipped rows, and the bidirectional Gram is their sum, which is exactly what the
kernels' ``bidirectional=True`` computes.

    python benchmarks/uci.py --smoke                          # two tiny sets, seconds
    python benchmarks/uci.py --datasets iris,wine --grid full
    # docs/uci.md: 87 sets in 59 min on 2 shared cores, then the 3 longest in 8 min
    nice python benchmarks/uci.py --grid full --max-rows 800 --max-features 100 \
        --time-budget 60 --out outputs/uci/uci_full.md

Sets run smallest first (by ``rows^2 x d`` after subsampling). ``--max-rows`` subsamples a larger
set uniformly at random (``--seed``) and keeps each split restricted to the kept rows.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from botorch.models.kernels import InfiniteWidthBNNKernel
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from gpytorch_rntk.functional import RecurrentVariances, recurrent_kernel

DEFAULT_DATA = os.environ.get("UCI_DATA", "/work/shared/data/uci")
ORDERS = ("forward", "reversed", "bidirectional")
RECURRENT_KINDS = ("rntk", "nngp")
METHODS = (
    *(f"{kind}-{order}" for kind in RECURRENT_KINDS for order in (*ORDERS, "selected")),
    "rbf",
    "ibnn",
)

# Hyperparameter grids. Variances are squared scales (docs/kernels.md): the authors' s_w = 1.4142,
# s_u in {0.25, 0.5}, s_b in {0.001, 0.1} are recurrent_var = 2, input_var in {0.0625, 0.25},
# bias_var in {1e-6, 0.01}. Within a grid, ties in validation accuracy go to the first setting.
GRIDS: dict[str, dict] = {
    "smoke": {
        "recurrent_var": [2.0],
        "input_var": [0.25],
        "bias_var": [0.01],
        "num_layers": [1],
        "readout": ["last"],
        "C": [1.0, 1e2],
        "rbf_gamma": [1.0],
        "ibnn_depth": [2],
        "ibnn_weight_var": [2.0],
        "ibnn_bias_var": [0.01],
    },
    "small": {
        "recurrent_var": [2.0],
        "input_var": [0.0625, 0.25],
        "bias_var": [0.01],
        "num_layers": [1, 2],
        "readout": ["last"],
        "C": [1e-2, 1.0, 1e2, 1e4, 1e6],
        "rbf_gamma": [0.1, 0.3, 1.0, 3.0, 10.0],
        "ibnn_depth": [1, 3],
        "ibnn_weight_var": [2.0],
        "ibnn_bias_var": [0.01, 0.1],
    },
    "full": {  # the authors' grid (last-step readout), and matching baseline grids
        "recurrent_var": [2.0],
        "input_var": [0.0625, 0.25],
        "bias_var": [1e-6, 0.01],
        "num_layers": [1, 2],
        "readout": ["last"],
        "C": [1e-2, 1.0, 1e2, 1e4, 1e6],
        "rbf_gamma": [2.0**k for k in range(-6, 7)],
        "ibnn_depth": [1, 2, 3, 5],
        "ibnn_weight_var": [1.0, 2.0],
        "ibnn_bias_var": [1e-3, 1e-2, 1e-1, 1.0],
    },
}


# ----------------------------------------------------------------------------- data


@dataclass
class UCIDataset:
    """One set: the scaled rows, labels and splits (row indices into ``x``)."""

    name: str
    x: np.ndarray  # (N, d) float64, divided by the largest row norm
    y: np.ndarray  # (N,) int
    validation: tuple[np.ndarray, np.ndarray]  # (train, validation) of conxuntos.dat
    folds: list[tuple[np.ndarray, np.ndarray]]  # the 4 (train, test) pairs of conxuntos_kfold.dat
    total_rows: int  # before subsampling


def dataset_names(root: Path) -> list[str]:
    """The 90 names in the conventional id order (first token of each line of datasets.txt)."""
    lines = (root / "datasets.txt").read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip()]


def dataset_meta(root: Path, name: str) -> dict[str, int]:
    """``rows``, ``features`` and ``classes`` from the metadata file ``<name>/<name>.txt``."""
    meta = {}
    for line in (root / name / f"{name}.txt").read_text().splitlines():
        key, _, value = line.partition("=")
        meta[key.strip()] = value.strip()
    return {
        "rows": int(meta["n_patrons1"]),
        "features": int(meta["n_entradas"]),
        "classes": int(meta["n_clases"]),
    }


def _read_index_lines(path: Path) -> list[np.ndarray]:
    return [np.array(line.split(), dtype=np.int64) for line in path.read_text().splitlines()]


def load_dataset(root: Path, name: str, max_rows: int | None = None, seed: int = 0) -> UCIDataset:
    """Read a set, subsample it to ``max_rows`` rows if larger, and scale it.

    Subsampling keeps a uniformly random subset of rows (seeded by ``seed`` and the name) and
    restricts every split to it, so the splits keep their roles and rough proportions.
    """
    table = np.loadtxt(root / name / f"{name}_R.dat", skiprows=1, dtype=np.float64, ndmin=2)
    x, y = table[:, 1:-1], table[:, -1].astype(np.int64)
    validation = _read_index_lines(root / name / "conxuntos.dat")
    kfold = _read_index_lines(root / name / "conxuntos_kfold.dat")
    if len(validation) != 2 or len(kfold) != 8:
        raise ValueError(f"{name}: expected 2 lines in conxuntos.dat and 8 in conxuntos_kfold.dat")
    total = len(y)
    if max_rows is not None and total > max_rows:
        rng = np.random.default_rng([seed, *name.encode()])
        keep = np.sort(rng.choice(total, size=max_rows, replace=False))
        new_index = np.full(total, -1)
        new_index[keep] = np.arange(max_rows)
        x, y = x[keep], y[keep]
        validation = [new_index[s][new_index[s] >= 0] for s in validation]
        kfold = [new_index[s][new_index[s] >= 0] for s in kfold]
    x = x / np.linalg.norm(x, axis=1).max()
    return UCIDataset(
        name=name,
        x=x,
        y=y,
        validation=(validation[0], validation[1]),
        folds=[(kfold[2 * k], kfold[2 * k + 1]) for k in range(4)],
        total_rows=total,
    )


# ----------------------------------------------------------------------------- Gram matrices


RECURRENT_KEYS = ("num_layers", "input_var", "bias_var", "recurrent_var", "readout")
IBNN_KEYS = ("ibnn_depth", "ibnn_weight_var", "ibnn_bias_var")


def _settings(grid: dict, keys: tuple[str, ...]) -> list[dict]:
    return [
        dict(zip(keys, values, strict=True))
        for values in itertools.product(*(grid[k] for k in keys))
    ]


def recurrent_grams(x: np.ndarray, grid: dict) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """For each grid setting, the RNTK and NNGP Grams of the rows read in the three orders.

    Yields ``(setting, {"rntk-forward": K, ..., "nngp-bidirectional": K})``. Two scans per
    kernel (the rows and the flipped rows); the bidirectional Gram is their sum.
    """
    values = torch.from_numpy(x).unsqueeze(-1)  # (N, d, 1): one feature per time step
    lengths = torch.full((len(x),), x.shape[1], dtype=torch.long)
    orders = {"forward": values, "reversed": values.flip(-2)}  # every row has the full length
    for setting in _settings(grid, RECURRENT_KEYS):
        variances = RecurrentVariances(
            *(
                torch.tensor(float(setting[k]), dtype=torch.float64)
                for k in ("recurrent_var", "input_var", "bias_var")
            )
        )
        options: dict = {"num_layers": setting["num_layers"]}
        if setting["readout"] != "last":
            options["readout"] = setting["readout"]
        grams = {}
        for kind in RECURRENT_KINDS:
            frozen = setting["num_layers"] if kind == "nngp" else 0  # all frozen: the NNGP
            with torch.no_grad():
                per_order = {
                    order: recurrent_kernel(
                        v, lengths, v, lengths, variances, frozen_layers=frozen, **options
                    ).numpy()
                    for order, v in orders.items()
                }
            per_order["bidirectional"] = per_order["forward"] + per_order["reversed"]
            grams.update({f"{kind}-{order}": gram for order, gram in per_order.items()})
        yield setting, grams


def rbf_grams(x: np.ndarray, grid: dict) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """RBF Grams ``exp(-gamma |x - x'|^2)``, ``gamma`` a multiple of ``1 / (d var(x))``."""
    sq_norms = np.einsum("ij,ij->i", x, x)
    sq_dists = np.maximum(sq_norms[:, None] + sq_norms[None, :] - 2 * x @ x.T, 0.0)
    scale = 1.0 / (x.shape[1] * x.var())
    for factor in grid["rbf_gamma"]:
        yield {"gamma": factor * scale}, {"rbf": np.exp(-factor * scale * sq_dists)}


def ibnn_grams(x: np.ndarray, grid: dict) -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
    """Grams of BoTorch's ``InfiniteWidthBNNKernel`` (the NNGP kernel of a ReLU MLP)."""
    rows = torch.from_numpy(x)
    for setting in _settings(grid, IBNN_KEYS):
        kernel = InfiniteWidthBNNKernel(depth=setting["ibnn_depth"]).double()
        kernel.weight_var = setting["ibnn_weight_var"]
        kernel.bias_var = setting["ibnn_bias_var"]
        with torch.no_grad():
            gram = kernel.forward(rows, rows).numpy()
        yield {k.removeprefix("ibnn_"): v for k, v in setting.items()}, {"ibnn": gram}


# ----------------------------------------------------------------------------- SVMs and selection


@dataclass
class SelectionTask:
    """Choose on (``fit``, ``validate``), then score the choice on each (train, test) pair."""

    fit: np.ndarray
    validate: np.ndarray
    pairs: list[tuple[np.ndarray, np.ndarray]]


def selection_tasks(data: UCIDataset, selection: str) -> list[SelectionTask]:
    """``authors``: one choice on conxuntos.dat for all 4 pairs; ``inner``: one per pair, made
    inside its training rows (split as conxuntos.dat splits them), so no test row is seen."""
    fit, validate = data.validation
    if selection == "authors":
        return [SelectionTask(fit, validate, data.folds)]
    return [
        SelectionTask(np.intersect1d(train, fit), np.intersect1d(train, validate), [(train, test)])
        for train, test in data.folds
    ]


@dataclass
class Choice:
    """The best (setting, C) found so far for one method and one selection task."""

    validation: float = -math.inf
    setting: dict | None = None
    C: float | None = None
    tests: list[float] = field(default_factory=list)


@dataclass
class SVMCounter:
    fits: int = 0
    capped: int = 0  # fits stopped by max_iter before libsvm converged


def svm_accuracy(
    gram: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    C: float,
    max_iter: int,
    counter: SVMCounter,
) -> float:
    """Test accuracy of ``SVC(kernel="precomputed", C=C)`` fit on the ``train`` rows."""
    classes = np.unique(y[train])
    if len(classes) < 2:  # a tiny subsampled split can hold one class: predict it
        return float(np.mean(y[test] == classes[0])) if len(classes) else math.nan
    svm = SVC(kernel="precomputed", C=C, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        svm.fit(gram[np.ix_(train, train)], y[train])
    counter.fits += 1
    counter.capped += any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return float(np.mean(svm.predict(gram[np.ix_(test, train)]) == y[test]))


def update_choice(
    choice: Choice,
    gram: np.ndarray,
    y: np.ndarray,
    task: SelectionTask,
    setting: dict,
    grid: dict,
    max_iter: int,
    counter: SVMCounter,
) -> None:
    """Score every C on the task's validation rows; on a strict improvement, test the new best."""
    scores = [
        svm_accuracy(gram, y, task.fit, task.validate, C, max_iter, counter) for C in grid["C"]
    ]
    best = int(np.argmax(scores))  # the first of equal scores
    if scores[best] > choice.validation:
        choice.validation, choice.setting, choice.C = scores[best], setting, grid["C"][best]
        choice.tests = [
            svm_accuracy(gram, y, train, test, grid["C"][best], max_iter, counter)
            for train, test in task.pairs
        ]


def evaluate_dataset(data: UCIDataset, grid: dict, selection: str, max_iter: int) -> dict:
    """Every method on one set: mean test accuracy over the 4 pairs and what was chosen."""
    tasks = selection_tasks(data, selection)
    choices = {method: [Choice() for _ in tasks] for method in METHODS if "selected" not in method}
    counter = SVMCounter()
    seconds = {"gram": 0.0, "svm": 0.0}
    for source in (recurrent_grams, rbf_grams, ibnn_grams):
        settings = source(data.x, grid)
        while True:
            start = time.perf_counter()
            setting, grams = next(settings, (None, None))
            seconds["gram"] += time.perf_counter() - start
            if grams is None:
                break
            start = time.perf_counter()
            for method, gram in grams.items():
                for choice, task in zip(choices[method], tasks, strict=True):
                    update_choice(choice, gram, data.y, task, setting, grid, max_iter, counter)
            seconds["svm"] += time.perf_counter() - start
    for kind in RECURRENT_KINDS:  # the order chosen on the validation rows as well
        choices[f"{kind}-selected"] = [
            max(  # max keeps the first of equal scores: forward, reversed, bidirectional
                (
                    Choice(c.validation, {**c.setting, "order": order}, c.C, c.tests)
                    for order in ORDERS
                    for c in [choices[f"{kind}-{order}"][t]]
                ),
                key=lambda c: c.validation,
            )
            for t in range(len(tasks))
        ]
    results = {}
    for method in METHODS:
        per_task = choices[method]
        tests = [accuracy for choice in per_task for accuracy in choice.tests]
        results[method] = {
            "accuracy": float(np.nanmean(tests)),
            "test_accuracies": tests,
            "validation": [c.validation for c in per_task],
            "chosen": [{**(c.setting or {}), "C": c.C} for c in per_task],
        }
    return {
        "methods": results,
        "svm_fits": counter.fits,
        "svm_capped": counter.capped,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


# ----------------------------------------------------------------------------- running and tables

SMOKE_DATASETS = ("iris", "fertility")
SMOKE_MAX_ROWS = 60


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="the UCI folder (env UCI_DATA)")
    parser.add_argument(
        "--datasets", default=None, help="comma-separated names (default: all 90 in datasets.txt)"
    )
    parser.add_argument("--max-rows", type=int, default=None, help="subsample larger sets")
    parser.add_argument(
        "--max-features", type=int, default=None, help="skip sets with more features (longer rows)"
    )
    parser.add_argument(
        "--grid",
        choices=("small", "full"),
        default="small",
        help="hyperparameter grid (GRIDS in this file); full: the authors' RNTK grid",
    )
    parser.add_argument(
        "--readouts",
        default=None,
        help="comma-separated readouts to add to the grid's RNTK/NNGP settings, e.g. last,mean",
    )
    parser.add_argument(
        "--selection",
        choices=("authors", "inner"),
        default="authors",
        help="authors: choose on conxuntos.dat; inner: inside each pair's training rows",
    )
    parser.add_argument(
        "--svm-max-iter",
        type=int,
        default=1_000_000,
        help="libsvm iteration cap per fit (-1: none); capped fits are counted and reported",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="minutes: start no new set after this (the subset then depends on the machine)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the row subsampling")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"tiny grid; {', '.join(SMOKE_DATASETS)} unless --datasets; rows <= "
        f"{SMOKE_MAX_ROWS} unless --max-rows",
    )
    parser.add_argument(
        "--out", default=None, help="results table, .csv or .md; the details go to <out>.json"
    )
    return parser.parse_args(argv)


def describe_subset(
    records: list[dict], args: argparse.Namespace, max_rows: int | None, not_started: list[str]
) -> str:
    names = ", ".join(r["dataset"] for r in records)
    limits = []
    if args.max_features is not None:
        limits.append(f"sets with at most {args.max_features} features")
    if args.datasets:
        limits.append("the sets named by --datasets")
    sampled = [r["dataset"] for r in records if r["rows"] < r["total_rows"]]
    if max_rows is not None:
        limits.append(f"rows subsampled to {max_rows} in {len(sampled)} of them")
    if not_started:
        limits.append(f"the cheapest that started within {args.time_budget:g} minutes")
    detail = f" ({'; '.join(limits)})" if limits else ""
    return f"{len(records)} of the 90 UCI sets{detail}: {names}"


def write_table(path: Path, records: list[dict], means: dict[str, float], header: str) -> None:
    columns = ["dataset", "rows", "total_rows", "features", "classes", *METHODS]
    rows = [
        [
            r["dataset"],
            r["rows"],
            r["total_rows"],
            r["features"],
            r["classes"],
            *(r["methods"][m]["accuracy"] for m in METHODS),
        ]
        for r in records
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".md":
        lines = [header, ""]
        lines.append("| " + " | ".join(["set", "rows", "d", "classes", *METHODS]) + " |")
        lines.append("|---|" + "---:|" * (3 + len(METHODS)))
        for row in rows:
            used = f"{row[1]}" if row[1] == row[2] else f"{row[1]} of {row[2]}"
            accuracies = [f"{100 * a:.1f}" for a in row[5:]]
            cells = [row[0], used, str(row[3]), str(row[4]), *accuracies]
            lines.append("| " + " | ".join(cells) + " |")
        mean_cells = [f"**{100 * means[m]:.2f}**" for m in METHODS]
        lines.append(
            f"| **mean over {len(records)} sets** | | | | " + " | ".join(mean_cells) + " |"
        )
        path.write_text("\n".join(lines) + "\n")
    else:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            writer.writerows([*row[:5], *(f"{a:.4f}" for a in row[5:])] for row in rows)
            writer.writerow(["mean", "", "", "", "", *(f"{means[m]:.4f}" for m in METHODS)])


def main(argv: list[str] | None = None) -> dict:
    """Run the protocol; returns per-set records, the mean per method and the subset's name."""
    args = parse_args(argv)
    torch.set_num_threads(1)
    root = Path(args.data)
    grid = dict(GRIDS["smoke" if args.smoke else args.grid])
    if args.readouts:
        grid["readout"] = args.readouts.split(",")
    known = dataset_names(root)
    if args.datasets:
        names = args.datasets.split(",")
    else:
        names = list(SMOKE_DATASETS) if args.smoke else known
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"unknown data sets: {', '.join(unknown)}")
    max_rows = args.max_rows if args.max_rows is not None or not args.smoke else SMOKE_MAX_ROWS
    meta = {name: dataset_meta(root, name) for name in names}
    too_long = [n for n in names if args.max_features and meta[n]["features"] > args.max_features]

    def cost(name: str) -> tuple[float, str]:
        rows = meta[name]["rows"] if max_rows is None else min(meta[name]["rows"], max_rows)
        return rows**2 * meta[name]["features"], name

    planned = sorted((n for n in names if n not in too_long), key=cost)
    command = "python benchmarks/uci.py " + " ".join(sys.argv[1:] if argv is None else argv)
    records: list[dict] = []
    not_started: list[str] = []
    start = time.perf_counter()
    with threadpool_limits(1):
        progress = tqdm(planned, unit="set", disable=None)
        for name in progress:
            if args.time_budget is not None and time.perf_counter() - start > 60 * args.time_budget:
                not_started.append(name)
                continue
            progress.set_postfix_str(name)
            set_start = time.perf_counter()
            data = load_dataset(root, name, max_rows, args.seed)
            result = evaluate_dataset(data, grid, args.selection, args.svm_max_iter)
            records.append(
                {
                    "dataset": name,
                    "rows": len(data.y),
                    "total_rows": data.total_rows,
                    "features": data.x.shape[1],
                    "classes": meta[name]["classes"],
                    "wall_seconds": round(time.perf_counter() - set_start, 2),
                    **result,
                }
            )
            scores = " ".join(f"{m}={100 * result['methods'][m]['accuracy']:.1f}" for m in METHODS)
            tqdm.write(f"{name} (N={len(data.y)}, d={data.x.shape[1]}): {scores}")
    wall = time.perf_counter() - start
    means = {m: float(np.mean([r["methods"][m]["accuracy"] for r in records])) for m in METHODS}
    subset = describe_subset(records, args, max_rows, not_started)
    capped = sum(r["svm_capped"] for r in records)
    fits = sum(r["svm_fits"] for r in records)
    print(f"\nMean test accuracy (%) over {subset}")
    print(f"selection: {args.selection}; grid: {'smoke' if args.smoke else args.grid}")
    for method in METHODS:
        print(f"  {method:20s} {100 * means[method]:6.2f}")
    print(f"wall time {wall / 60:.1f} min; {fits} SVM fits, {capped} stopped at --svm-max-iter")
    if too_long:
        print(f"skipped (more than {args.max_features} features): {', '.join(too_long)}")
    if not_started:
        print(f"not started (time budget): {', '.join(not_started)}")
    summary = {
        "command": command,
        "selection": args.selection,
        "grid": {k: v for k, v in grid.items()},
        "subset": subset,
        "mean": means,
        "wall_seconds": round(wall, 1),
        "svm_fits": fits,
        "svm_capped": capped,
        "skipped_features": too_long,
        "not_started": not_started,
        "datasets": records,
    }
    if args.out:
        out = Path(args.out)
        header = (
            f"Test accuracy (%), mean over the 4 train/test pairs; `{command}`; "
            f"selection {args.selection}; wall time {wall / 60:.1f} min."
        )
        write_table(out, records, means, header)
        out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
