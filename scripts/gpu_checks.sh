#!/usr/bin/env bash
# The checks that need a GPU, in one run (a few minutes on one GPU): the weight-sync tests over
# NCCL and CUDA tensors, FSDP2 on CUDA (float32 against the CPU, bfloat16 mixed precision against
# float32, two ranks where there are two GPUs), then the learner's tokens/s and MFU on a
# Qwen2.5-0.5B-shaped model, bfloat16 and float32. Needs torch with CUDA, transformers, pytest,
# numpy, pyyaml and pydantic; not Ray or vLLM.
#
#   bash scripts/gpu_checks.sh [PEAK_TFLOPS]     # the GPU's dense bf16 peak; default 989 (H100/H200 SXM)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
peak=${1:-989}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import sys, torch, transformers; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.device_count()} GPU(s)")'

echo "== tests"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_nccl_sync.py tests/test_learner_devices.py
tests=$?

echo "== learner throughput"
python3 benchmarks/bench_learner.py --shape 0.5b --device cuda --dtype bfloat16 --peak-tflops "$peak"
python3 benchmarks/bench_learner.py --shape 0.5b --device cuda --dtype float32 --steps 3
exit $tests
