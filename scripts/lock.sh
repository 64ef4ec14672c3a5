#!/usr/bin/env bash
# Refresh requirements/constraints.txt: install the newest releases of every extra into a scratch
# venv, run the whole test suite against them, and write the lock only if it passes.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"${PYTHON:-python3}" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --upgrade pip
"$scratch/venv/bin/python" -m pip install --quiet -e ".[test,docs,bench,dask]"
{
  echo "# Versions the test command was last run green with (CI installs exactly these; see README)."
  echo "# Regenerate: bash scripts/lock.sh"
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^linalg[-_]lowrank'
} > "$scratch/constraints.txt"
cp "$scratch/constraints.txt" requirements/constraints.txt.new
mv requirements/constraints.txt.new requirements/constraints.txt
LINALG_LOWRANK_DEPS=pinned bash scripts/test.sh
