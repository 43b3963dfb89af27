"""What input validation costs a kernel call, in one process.

A BoTorch-like call ``RNTKKernel(candidates (b, 1, D), train (N, D))`` on the tensor path,
without gradients, against :func:`~gpytorch_rntk.functional.check_sequences` on the same
sequences (the check every call runs once). Best of ``--repeats`` rounds of ``--calls`` calls.

    python benchmarks/validation_overhead.py
    python benchmarks/validation_overhead.py --device cuda --n 1000 --b 64 --t 100
"""

from __future__ import annotations

import argparse

import torch
from gram import best_of  # beside this script

from gpytorch_rntk import RNTKKernel, encode_sequences
from gpytorch_rntk.functional import check_sequences
from gpytorch_rntk.layout import split_layout


def run_case(n: int, b: int, steps: int, args) -> str:
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(1, steps // 4), steps + 1, (n,), generator=gen)
    seqs = [torch.randn(int(t), 1, generator=gen, dtype=torch.float64) for t in lengths]
    train = encode_sequences(seqs, max_len=steps).to(device)
    candidates = (train[:b] + 0.01).unsqueeze(1)  # (b, 1, D), as BoTorch's optimisers pass
    kernel = RNTKKernel(1, engine="tensor").to(device=device, dtype=torch.float64)
    values1, lengths1 = split_layout(candidates, 1)
    values2, lengths2 = split_layout(train, 1)
    variances = kernel._variances()

    def call():
        with torch.no_grad():
            return kernel(candidates, train).to_dense()

    def check():
        check_sequences(values1, lengths1, values2, lengths2, variances)

    per_call = {}
    for name, fn in (("call", call), ("check", check)):
        fn()  # warm up
        rounds, _ = best_of(lambda fn=fn: [fn() for _ in range(args.calls)], device, args.repeats)
        per_call[name] = rounds / args.calls
    call_ms, check_ms = per_call["call"] * 1e3, per_call["check"] * 1e3
    return f"| {n} | {b} | {steps} | {call_ms:.3f} | {check_ms:.3f} | {check_ms / call_ms:.4f} |"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--b", type=int, default=16)
    parser.add_argument("--t", type=int, default=20)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| N | candidates | T | call_ms | check_ms | check/call |")
    print("|---|---|---|---|---|---|")
    for n in args.n:
        print(run_case(n, min(args.b, n), args.t, args), flush=True)


if __name__ == "__main__":
    main()
