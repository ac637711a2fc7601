#!/usr/bin/env bash
# The Python venv of the end-to-end tests' receivers (tests/receivers/receiver.py: PyJWT
# and the Standard Webhooks reference library), at ENROLL_PYTHON_VENV, default
# ~/.cache/enroll-e2e/venv. Creates it when missing, installs the pinned, hashed
# tests/receivers/requirements.txt, and skips pip when the venv already holds exactly
# those requirements (a stamp file with their sha256). Prints the venv's python; use it as
# ENROLL_PYTHON:
#   export ENROLL_PYTHON="$(scripts/python-venv.sh)"
# Progress goes to stderr, the path alone to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=tests/receivers/requirements.txt
venv="${ENROLL_PYTHON_VENV:-$HOME/.cache/enroll-e2e/venv}"
python="$venv/bin/python"
stamp="$venv/.enroll-requirements.sha256"
# The interpreter is part of what is cached: a venv made by another Python is remade.
wanted="$(sha256sum "$requirements" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"

if [ -x "$python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  echo "python venv $venv is current (cached)" >&2
else
  echo "python venv $venv: installing $requirements" >&2
  rm -f "$stamp"
  version() { "$1" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null; }
  if ! [ -x "$python" ] || [ "$(version "$python")" != "$(version python3)" ]; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
  fi
  "$python" -m pip install --quiet --disable-pip-version-check --no-input \
    --require-hashes --only-binary=:all: -r "$requirements" >&2
  "$python" -c 'import jwt, cryptography, standardwebhooks' >&2
  echo "$wanted" >"$stamp"
fi
echo "$python"
