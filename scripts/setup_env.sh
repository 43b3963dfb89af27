#!/usr/bin/env bash
# Create (if missing) and activate the project's virtual environment in <repo>/.venv, and install
# the package in editable mode with its development extras. Safe to run or source repeatedly: the
# install is skipped when pyproject.toml and this script are unchanged since the last success.
#
#   bash scripts/setup_env.sh        # set up only
#   source scripts/setup_env.sh      # set up and leave the environment active in this shell
#
# torch is pinned and installed FIRST: a bare `torch` requirement could otherwise pull a
# multi-GB CUDA build. The package itself only asks for torch>=2.1, which the pin satisfies.
# PYTHON selects the interpreter used to create the venv (default: python3).

_rntk_setup() {
    local root pins stamp_file stamp
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)" || return 1
    pins=(torch==2.13.0 gpytorch==1.15.2 botorch==0.18.1 linear-operator==0.6.1 triton==3.6.0)

    if [ ! -x "$root/.venv/bin/python" ]; then
        echo "setup_env: creating $root/.venv" >&2
        "${PYTHON:-python3}" -m venv "$root/.venv" || return 1
    fi
    # shellcheck disable=SC1091
    source "$root/.venv/bin/activate" || return 1

    stamp_file="$root/.venv/.gpytorch-rntk-setup"
    stamp="$(cat "$root/pyproject.toml" "$root/scripts/setup_env.sh" | sha256sum | cut -d' ' -f1)"
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
        return 0
    fi

    echo "setup_env: installing dependencies into $root/.venv" >&2
    export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
    python -m pip install --quiet "${pins[0]}" || return 1
    python -m pip install --quiet -e "$root[dev]" "${pins[@]}" || return 1
    # The Ehrlich functions of benchmarks/ehrlich_bo.py: pytorch-holo's metadata pins numpy<2,
    # which its closed-form part does not need, so it comes without its dependencies.
    python -m pip install --quiet --no-deps pytorch-holo==0.0.5 || return 1
    python -m pip install --quiet pooch || return 1
    echo "$stamp" >"$stamp_file"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    # Executed, not sourced: fail loudly.
    set -euo pipefail
    _rntk_setup
else
    _rntk_setup || return 1
fi
