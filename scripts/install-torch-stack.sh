#!/usr/bin/env bash
# Installs the quantization, generation and DPO-training stack into a venv (default .venv), idempotently:
# torch first, pinned, so that pip takes the local CPU build instead of resolving a multi-GB CUDA
# build; then the versions measured to resolve together (llm-compressor 0.14 caps transformers at
# 5.17; gptqmodel 7.7 needs torch 2.14.1, so 7.6.0). gptqmodel builds from source (~60 s once).
#   usage: scripts/install-torch-stack.sh [VENV_PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m
want = {"torch": "2.13.0", "transformers": "5.17.0", "accelerate": "1.15.0", "llmcompressor": "0.14.0.1",
        "compressed-tensors": "0.19.0", "gptqmodel": "7.6.0", "optimum": "2.3.0", "trl": "1.16.0", "peft": "0.21.2",
        "bitsandbytes": "0.50.2"}
raise SystemExit(any(not m.version(k).startswith(v) for k, v in want.items()))
EOF
then
    echo "== torch stack already installed"
    exit 0
fi
echo "== torch stack into $PY"
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q torch==2.13.0 transformers==5.17.0 accelerate==1.15.0 llmcompressor==0.14.0.1 \
    compressed-tensors==0.19.0 optimum==2.3.0
"$PY" -m pip install -q torch==2.13.0 gptqmodel==7.6.0
"$PY" -m pip install -q torch==2.13.0 transformers==5.17.0 trl==1.16.0 peft==0.21.2 bitsandbytes==0.50.2
