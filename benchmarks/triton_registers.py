"""Registers, spilled bytes and the scan loop's instructions per pair-step of the Triton cross
kernel, compiled for an H100 (sm_90a) on any machine, GPU or not: Triton's compiler and the
``ptxas`` and ``cuobjdump`` it ships.

A thread holds its tile's share of every layer's state (and, in forward mode, of each
direction's derivatives) in registers; past 255 registers ``ptxas`` spills to local memory,
which costs several times the arithmetic. ``_triton.TILES`` is chosen with this script.

The instruction columns count the SASS of the time loop's body (every layer of one step, both
sides of any branch) divided by the pairs a thread holds: a static measure of the work per
pair-step, no timing. ``fp64`` counts DFMA/DMUL/DADD (half rate on an H100), ``mufu`` the
special-function unit's (a quarter of the FP32 rate, or less), ``calls`` call sites (the slow
paths of float64 division and square root).

    python benchmarks/triton_registers.py                    # TILES, 1-3 layers, P = 0, 3, 4
    python benchmarks/triton_registers.py --dtypes float64 --directions 3 --tile 16 32 4
    python benchmarks/triton_registers.py --layers 2 --directions 0 --dtypes float32 --mix

``--mix`` splits the loop's instructions per pair-step by kind (``KINDS``): floating-point
arithmetic, the special-function unit, compares and selects (with predicate moves), loads and
stores, integer and address arithmetic, register moves, the rest (control flow).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from gpytorch_rntk._core.engines import triton_kernels as _triton

# The per-pair-step columns after registers and spills, then (--mix) the kinds below.
COLUMNS = ("all", "fp64", "mufu", "calls")


def resources(dtype, num_layers, directions, tile, nonlinearity="relu", readout="last") -> tuple:
    """``(registers, spill-store bytes, spill-load bytes, instructions, fp64, mufu, calls)``
    per thread of the kernel of ``readout`` (``_cross_kernel`` for the last, ``_grid_kernel``
    for the mean and geometric: the last four per pair-step, or per pair-cell of the time grid,
    see the module's text) for ``num_layers`` layers, ``directions`` forward-mode directions
    (along sw2, su2, sb2, init_var in that order) and ``tile = (rows, columns, warps)``."""
    rows, cols, warps = tile
    constants = dict(
        M=1,
        L=num_layers,
        FROZEN=0,
        RELU=nonlinearity == "relu",
        INIT_MODE=2 if directions == 4 else 0,  # init_var is a direction only if it is learned
        SYMMETRIC=True,
        KINDS=tuple(range(directions)),
        BM=rows,
        BN=cols,
    )
    kernel = _triton._cross_kernel
    if readout != "last":  # (the geometric readout's forward mode with the decay's plane too)
        kernel = _triton._grid_kernel
        constants["WEIGHTS"] = 0 if readout == "mean" else 1 + (directions > 0)
    types = dict.fromkeys(("LX", "LY", "IX", "IY", "DIAG"), "*i32")
    types |= dict.fromkeys(("O1", "O2"), "*i64") | dict.fromkeys(constants, "constexpr")
    types |= dict.fromkeys(("n1", "n2", "clock", "per_group"), "i32")
    pointer = {torch.float32: "*fp32", torch.float64: "*fp64"}[dtype]
    names = kernel.arg_names
    source = ASTSource(
        fn=kernel,
        signature={name: types.get(name, pointer) for name in names},
        constexprs={(names.index(k),): v for k, v in constants.items()},
    )
    kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    with tempfile.TemporaryDirectory() as folder:
        ptx = Path(folder) / "kernel.ptx"
        ptx.write_text(kernel.asm["ptx"])
        report = subprocess.run(
            [knobs.nvidia.ptxas.path, "-arch=sm_90a", "-v", str(ptx), "-o", str(ptx) + ".o"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        sass = subprocess.run(
            [str(Path(knobs.nvidia.ptxas.path).with_name("cuobjdump")), "-sass", str(ptx) + ".o"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    registers = int(re.search(r"Used (\d+) registers", report).group(1))
    stores, loads = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report).groups()
    counts = loop_instructions(sass)
    pairs = rows * cols / (32 * warps)  # a thread's share of the tile
    per_pair = (round(counts[k] / pairs, 1) for k in (*COLUMNS, *KINDS, "other"))
    return registers, int(stores), int(loads), *per_pair


# Where a pair-step's instructions go (--mix): each SASS opcode's kind.
KINDS = {
    "arithmetic": ("FADD", "FMUL", "FFMA", "FMNMX", "DADD", "DMUL", "DFMA", "DMNMX", "FRND"),
    "special": ("MUFU",),
    "compare and select": ("FSETP", "DSETP", "ISETP", "FSEL", "SEL", "PLOP3", "P2R", "R2P"),
    "load and store": ("LDG", "STG", "LDL", "STL", "LDS", "STS", "LDC", "ULDC"),
    "integer and address": ("IADD3", "IMAD", "LEA", "SHF", "LOP3", "IABS", "I2F", "F2I", "IMNMX"),
    "move": ("MOV", "IMAD.MOV", "CS2R", "S2R", "UMOV"),
}


def kind(opcode: str) -> str:
    """The kind (:data:`KINDS`) of a SASS opcode, ``other`` (control flow, conversions) else."""
    for name, prefixes in reversed(KINDS.items()):  # (IMAD.MOV is a move, IMAD arithmetic)
        if any(opcode == p or opcode.startswith(p + ".") for p in prefixes):
            return name
    return "other"


def loop_instructions(sass: str) -> collections.Counter:
    """Instructions of the longest innermost loop in ``cuobjdump -sass`` text (from a backward
    branch's target to the branch), by kind: ``all``, ``fp64``, ``mufu``, ``calls`` and each of
    :data:`KINDS` (or ``other``)."""
    code = [
        (int(address, 16), text.strip())
        for address, text in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)
    ]
    loops = []
    for address, text in code:
        target = re.search(r"\bBRA\s+(?:\S+\s+)?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < address:
            loops.append((int(target.group(1), 16), address))
    # (the mean readout's kernel loops over diagonals around its loop over cells: the inner)
    innermost = [a for a in loops if not any(a[0] <= b[0] and b[1] < a[1] for b in loops)]
    first, last = max(innermost, key=lambda span: span[1] - span[0])
    counts = collections.Counter()
    for address, text in code:
        if first <= address <= last:
            opcode = re.sub(r"^@!?U?P\w+\s+", "", text).split()[0]
            counts["all"] += 1
            counts["fp64"] += opcode.split(".")[0] in ("DFMA", "DMUL", "DADD")
            counts["mufu"] += opcode.startswith("MUFU")
            counts["calls"] += opcode.startswith("CALL")
            counts[kind(opcode)] += 1
    return counts


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--directions", type=int, nargs="+", default=[0, 3, 4])
    parser.add_argument("--nonlinearities", nargs="+", default=["relu", "erf"])
    parser.add_argument("--tile", type=int, nargs=3, metavar=("ROWS", "COLS", "WARPS"))
    parser.add_argument("--readout", choices=["last", "mean", "geometric"], default="last")
    parser.add_argument(
        "--mix", action="store_true", help="also the instructions per pair-step by kind"
    )
    args = parser.parse_args(argv)
    header = "registers | spill stores | spill loads | instructions | fp64 | mufu | calls"
    if args.mix:
        header += " | " + " | ".join([*KINDS, "other"])
    print(f"| dtype | L | P | phi | tile | {header} |")
    print("|---|---|---|---|---|" + "---|" * len(header.split("|")))
    for name in args.dtypes:
        dtype = getattr(torch, name)
        for layers in args.layers:
            for directions in args.directions:
                tile = tuple(
                    args.tile or _triton.tiles(dtype, directions > 0, args.readout, layers)
                )
                for phi in args.nonlinearities:
                    found = resources(dtype, layers, directions, tile, phi, args.readout)
                    cells = " | ".join(map(str, found if args.mix else found[: 3 + len(COLUMNS)]))
                    print(f"| {name} | {layers} | {directions} | {phi} | {tile} | {cells} |")


if __name__ == "__main__":
    main()
