#!/usr/bin/env bash
# Set up (or reuse) .venv and run the whole test suite: lint, docs build, kernels without JIT,
# then every test and docstring example (pytest's summary line comes last).
EXTRAS="test,docs,dask"
source "$(dirname "$0")/_venv.sh"
export PYTHONHASHSEED=0
echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== docs (warnings are errors)"
"$VENV/bin/python" -m sphinx -W --keep-going -q -b html docs docs/_build/html
"$VENV/bin/python" docs/tools/check_offline.py docs/_build/html
echo "== numba kernels with NUMBA_DISABLE_JIT=1"
NUMBA_DISABLE_JIT=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_kernels.py -o addopts=""
NUMBA_DISABLE_JIT=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/test_dynamics.py tests/test_roots.py \
    tests/test_hutchinson.py -k "kernel or ziggurat" -o addopts=""
echo "== tests and doctests"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
