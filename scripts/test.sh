#!/usr/bin/env bash
# Runs the whole test suite. On a fresh machine it first makes .venv and installs everything.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q -r requirements-test.txt -e .
ruff check s2t_jax tests bench configs *.py
python -m pytest tests "$@"
