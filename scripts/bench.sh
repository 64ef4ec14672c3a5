#!/usr/bin/env bash
# Set up (or reuse) .venv and run the benchmarks side by side with their anchors.
EXTRAS="bench"
source "$(dirname "$0")/_venv.sh"
exec "$VENV/bin/python" -m bench "$@"
