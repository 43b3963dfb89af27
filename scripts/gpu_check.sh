#!/usr/bin/env bash
# The CUDA checks of the fused engine, for a machine with a GPU and PyTorch, Triton, GPyTorch and
# BoTorch installed (the package runs from the checkout). Writes logs to ${OUT:-outputs}.
set -uo pipefail
out="${OUT:-outputs}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, triton, gpytorch; print(torch.__version__, triton.__version__, gpytorch.__version__, torch.cuda.get_device_name())"
# 1. tests on CUDA (the device fixture adds cuda when available)
timeout 120 python3 -m pytest -q -x -p no:cacheprovider -k "not compiles" tests/test_fused.py tests/test_kernels.py 2>&1 | tail -15 | tee "$out/tests.log"
# 2. the target case and the block-shape check
b="python3 benchmarks/gram.py --device cuda"
timeout 45 $b --sizes 10000 --steps 150 --layers 2 --nonlinearities relu --dtypes float32 --variable both 2>&1 | tee "$out/target.log"
timeout 30 $b --sizes 10000 --steps 150 --layers 2 --nonlinearities relu --dtypes float32 --variable no --triton-block 64 64 2>&1 | tee -a "$out/target.log"
timeout 30 $b --sizes 10000 --steps 150 --layers 2 --nonlinearities relu --dtypes float32 --variable no --triton-block 16 64 2>&1 | tee -a "$out/target.log"
# 3. memory of a 20000 x 20000 float32 Gram, T = 100
timeout 30 $b --memory 20000 100 2>&1 | tee "$out/memory.log"
# 4. the mean readout and forward-mode gradients on CUDA against the tensor path
timeout 120 python3 benchmarks/mean_gram.py --device cuda --sizes 100 1000 --steps 150 --repeats 1 2>&1 | tee "$out/mean_gram.log"
# 5. the grid
timeout 180 $b --sizes 1000 4000 10000 --steps 50 150 500 --layers 1 2 --nonlinearities relu erf --dtypes float32 float64 --variable no 2>&1 | tee "$out/grid.log"
