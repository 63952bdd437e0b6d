#!/usr/bin/env bash
# GPU benchmark suite (benchmarks/gpu_suite.py): scoring cost, agent loop with the KV cache on/off, TTFT.
#
#   bash benchmarks/gpu_suite.sh --prepare        # once, where pip and the embedded draft are: fills
#                                                 # benchmarks/.cache/gpu_suite/ (git-ignored, ~4.2 MB)
#   bash benchmarks/gpu_suite.sh [OUTDIR]         # on the CUDA machine, with that folder carried
#   bash benchmarks/gpu_suite.sh --dry-run [OUTDIR]   # the same code on the CPU, tiny sizes (~10 s)
#
# Writes OUTDIR/gpu_suite_<device>.json and .md (OUTDIR defaults to benchmarks/results).
# PYTHON picks the interpreter (default python3). The core imports cachetools, which the GPU
# machine lacks: its pure-Python wheel (and platformdirs') is imported straight from the .whl file.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARRY="$ROOT/benchmarks/.cache/gpu_suite"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ "${1:-}" == "--prepare" ]]; then
    cd "$ROOT" && PYTHONPATH="$ROOT" exec "$PY" -m benchmarks.gpu_suite --prepare "$CARRY"
fi

MODE=()
if [[ "${1:-}" == "--dry-run" ]]; then
    MODE=(--dry-run)
    shift
fi
OUTDIR=${1:-"$ROOT/benchmarks/results"}
mkdir -p "$OUTDIR" && OUTDIR=$(cd "$OUTDIR" && pwd)  # the run goes from the repository root

PYPATH="$ROOT"
shopt -s nullglob
for wheel in "$CARRY"/wheels/*.whl; do
    PYPATH="$PYPATH:$wheel"
done
export PYTHONPATH="$PYPATH${PYTHONPATH:+:$PYTHONPATH}"

if ! "$PY" -c "import cachetools" 2>/dev/null; then
    echo "gpu_suite: cachetools is missing: run 'bash benchmarks/gpu_suite.sh --prepare' where pip works" \
         "and carry benchmarks/.cache/gpu_suite" >&2
    exit 2
fi

cd "$ROOT"
exec "$PY" -m benchmarks.gpu_suite "${MODE[@]}" --out-dir "$OUTDIR" --tokenizer "$CARRY/tokenizer"
