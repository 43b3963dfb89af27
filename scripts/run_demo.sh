#!/usr/bin/env bash
# Set up the environment, compile the fused engine's common loops once, and run the end-to-end
# demo (RNTK vs RBF GP on Japanese Vowels by default). Arguments go to the demo:
# bash scripts/run_demo.sh --help
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup_env.sh
# Compile the fused engine's loop for the common configurations into Inductor's on-disk cache
# once per machine (a few minutes the first time, seconds after), so that engine="auto" uses it
# from the first call of a process on.
python -m gpytorch_rntk.warmup
exec python -m gpytorch_rntk.demo "$@"
