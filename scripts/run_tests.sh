#!/usr/bin/env bash
# Set up the environment, lint, run the test suite and build the documentation. Extra arguments
# go to pytest, e.g.
#   bash scripts/run_tests.sh -m slow          # only the slow checks
#   bash scripts/run_tests.sh -m "" -x         # everything, stop at the first failure
# Exits with pytest's exit code (5 = no tests collected is a failure, not a pass); a failed docs
# build (warnings are errors) or lint failure fails the run too, after the tests have run.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
source scripts/setup_env.sh || exit 1

ruff check .
lint_status=$?

python -m pytest "$@"
test_status=$?

# -E: re-read every page, so docstring changes and earlier warnings are never skipped as cached.
python -m sphinx -W --keep-going -E -q -b html docs docs/_build/html
docs_status=$?

if [ "$test_status" -ne 0 ]; then
    exit "$test_status"
fi
if [ "$docs_status" -ne 0 ]; then
    echo "run_tests: tests passed but the docs build (sphinx-build -W) failed" >&2
    exit 1
fi
if [ "$lint_status" -ne 0 ]; then
    echo "run_tests: tests passed but 'ruff check .' failed" >&2
    exit 1
fi
exit 0
