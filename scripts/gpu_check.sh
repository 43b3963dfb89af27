#!/usr/bin/env bash
# The CUDA checks of the fused engine, for a machine with a GPU and PyTorch, Triton, GPyTorch and
# BoTorch installed (the package runs from the checkout). Writes logs to ${OUT:-outputs}; each
# step has its own time limit so that the whole run takes under 10 minutes.
set -uo pipefail
out="${OUT:-outputs}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, triton, gpytorch; print(torch.__version__, triton.__version__, gpytorch.__version__, torch.cuda.get_device_name())"
# 1. the Triton kernel (values and forward mode) and the golden values on CUDA
timeout 150 python3 -m pytest -q -x -p no:cacheprovider -k "cuda and (triton or forward_mode or golden)" \
    tests/test_fused.py tests/test_kernels.py 2>&1 | tail -15 | tee "$out/tests.log"
# 2. an exact GP's marginal-likelihood gradient against its forward (issue 5: at most 3x)
m="python3 benchmarks/mll_gradient.py --device cuda"
timeout 120 $m --n 2000 --t 100 --engines fused tensor 2>&1 | tee "$out/mll.log"
timeout 60 $m --n 5000 --t 100 --engines fused 2>&1 | tee -a "$out/mll.log"
timeout 60 $m --n 10000 --t 150 --layers 2 --dtype float32 --engines fused 2>&1 | tee -a "$out/mll.log"
for tile in "16 32 8" "16 32 4" "32 32 8"; do  # forward-mode tiles against TILES' 16 16 8
    timeout 45 $m --n 2000 --t 100 --engines fused --triton-tile $tile 2>&1 | tail -1 | tee -a "$out/mll.log"
done
# 3. the target case, both dtypes, and float64 at the former tile (32 x 64, 4 warps)
b="python3 benchmarks/gram.py --device cuda --sizes 10000 --steps 150 --layers 2 --nonlinearities relu"
timeout 60 $b --dtypes float32 float64 --variable both 2>&1 | tee "$out/target.log"
timeout 40 $b --dtypes float64 --variable no --triton-tile 32 64 4 2>&1 | tail -1 | tee -a "$out/target.log"
# 4. memory of a 20000 x 20000 float32 Gram, T = 100
timeout 30 python3 benchmarks/gram.py --device cuda --memory 20000 100 2>&1 | tee "$out/memory.log"
