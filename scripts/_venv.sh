# Sourced by the other scripts: create or reuse ./.venv and install the package with the given extras.
# Dependencies come from requirements/constraints.txt, the versions CI last tested; set
# LINALG_LOWRANK_DEPS=newest to take the newest releases the package metadata allows instead
# (the venv is then ./.venv-newest, so the tested one is left alone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-python3}"
VENV=.venv
PIN=(-c requirements/constraints.txt)
if [ "${LINALG_LOWRANK_DEPS:-pinned}" = newest ]; then
  VENV=.venv-newest
  PIN=(--upgrade --upgrade-strategy eager)
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat setup.cfg pyproject.toml requirements/constraints.txt | cksum | cut -d' ' -f1)-${EXTRAS:-none}"
if [ ! -f "$stamp" ]; then
  echo "Installing linalg_lowrank${EXTRAS:+[$EXTRAS]} and its dependencies into $VENV ..." >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "${PIN[@]}" -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$stamp"
  # Compile the numba kernels once now (cached on disk), so that the first audit does not wait
  # for them; a failure here only means they compile on first use.
  "$VENV/bin/python" -m linalg_lowrank._warmup ||
    echo "Kernel warm-up failed; the kernels will compile on first use." >&2
fi
