#!/usr/bin/env bash
# Set up (or reuse) .venv and run the main job: python -m linalg_lowrank audit [PATH] [options]
source "$(dirname "$0")/_venv.sh"
exec "$VENV/bin/python" -m linalg_lowrank audit "$@"
