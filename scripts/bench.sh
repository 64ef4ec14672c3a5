#!/usr/bin/env bash
# Set up (or reuse) .venv and run the benchmarks side by side with their anchors.
EXTRAS="bench"
source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m bench "$@"
