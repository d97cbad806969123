#!/usr/bin/env bash
# Create (or update) .venv with everything the project needs on a CPU machine, then check it.
# GPU nodes: see docs/gpu.md instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned: an unpinned torch (asked for by a dependency) would pull the CUDA build.
# On these machines pip finds the CPU wheel locally; elsewhere add
#   --index-url https://download.pytorch.org/whl/cpu
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[cpu,test]"
# pip brings CUDA builds of these with vLLM; they break `import transformers` model classes on CPU,
# and nothing here uses them (triton is useless without a GPU).
python -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
if python -m pip list 2>/dev/null | grep -qiE '^nvidia-|cuda'; then
  echo "setup: CUDA packages were installed; see docs/gpu.md" >&2
fi
python - <<'PY'
import torch, verl, vllm
import verl.utils.reward_score as rs
assert rs.default_compute_score.__module__ == "verl.utils.reward_score.registry", "verlkit plugin not loaded"
print(f"setup ok: torch {torch.__version__}, verl {verl.__version__}, vllm {vllm.__version__}")
PY
