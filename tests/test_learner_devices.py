"""The learner's devices and precisions: bfloat16 mixed precision follows the float32 step and keeps
float32 master weights (on CPU, and on a GPU where there is one); FSDP2 over NCCL takes the CPU's
step; two GPU ranks take one rank's step. The GPU tests are skipped without GPUs (run them on a GPU
machine: `python -m pytest tests/test_learner_devices.py`). Real processes, random batches
(learner/training/synthetic.py): no rollout engine is needed, so they run where no vLLM or Ray is."""
from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from common.ports import free_port
from learner.training.losses import Objective
from learner.training.synthetic import SHAPES, random_batch, write_model

GPUS = torch.cuda.device_count()
needs_gpu = pytest.mark.skipif(not GPUS, reason="needs a CUDA GPU")


def _rank(rank, world, port, model_dir, backend, dtype, graded, out):
    from learner.training.worker import LearnerWorker

    w = LearnerWorker(model_dir, rank, world, f"tcp://127.0.0.1:{port}", lr=1e-3, grad_clip=1.0, temperature=1.0,
                      backend=backend, micro_batch_tokens=512, reference=False, dtype=dtype)
    batch, rewards = graded
    stats = w.train_step(Objective(stage=2, alpha=10, beta1=0.01, beta2=0.25), rewards, batch)
    state = w.full_state_dict()
    if rank == 0:
        out.put(({k: v.float().numpy().copy() for k, v in state.items()}, {k: str(v.dtype) for k, v in state.items()}, stats))
    w.close()


def _train(model_dir, backend, dtype="float32", world=1):
    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    graded = random_batch(np.random.default_rng(0), SHAPES["tiny"]["vocab_size"], prompts=4, k=4, prompt_tokens=48,
                          attempt_tokens=32)
    procs = [ctx.Process(target=_rank, args=(r, world, port, str(model_dir), backend, dtype, graded, out))
             for r in range(world)]
    for p in procs:
        p.start()
    state, dtypes, stats = out.get(timeout=300)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return {k: torch.from_numpy(v) for k, v in state.items()}, dtypes, stats


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model("tiny", tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def before(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()


def update_cosine(after_a: dict, after_b: dict, before: dict) -> float:
    """Cosine of the two steps' whole-model updates (Adam's first step is about lr x sign(g), so a
    gradient element near zero may flip between devices: the updates are compared as directions)."""
    a = torch.cat([(after_a[k] - before[k]).double().flatten() for k in after_a])
    b = torch.cat([(after_b[k] - before[k]).double().flatten() for k in after_a])
    return float(a @ b / (a.norm() * b.norm()))


@needs_gpu
def test_a_cuda_rank_takes_the_cpu_step(model_dir, before):
    cpu, _, cpu_stats = _train(model_dir, "gloo")
    gpu, dtypes, gpu_stats = _train(model_dir, "nccl")
    assert set(dtypes.values()) == {"torch.float32"}
    for key in ("policy_loss", "kl_t1", "kl_t2", "grad_norm", "logprob_abs_diff", "learner_tokens"):
        assert gpu_stats[key] == pytest.approx(cpu_stats[key], rel=1e-3, abs=1e-5), key
    assert update_cosine(gpu, cpu, before) > 0.99


@pytest.mark.parametrize("backend", ["gloo", pytest.param("nccl", marks=needs_gpu)])
def test_bfloat16_mixed_precision_follows_the_float32_step_with_float32_master_weights(model_dir, before, backend):
    full, _, full_stats = _train(model_dir, backend, "float32")
    mixed, dtypes, mixed_stats = _train(model_dir, backend, "bfloat16")
    assert set(dtypes.values()) == {"torch.float32"}  # the sharded master weights stay float32
    assert mixed_stats["policy_loss"] == pytest.approx(full_stats["policy_loss"], rel=0.05)
    assert mixed_stats["grad_norm"] == pytest.approx(full_stats["grad_norm"], rel=0.05)
    assert 0.8 < update_cosine(mixed, full, before) < 1.0 - 1e-6  # the same step, computed in another precision


@pytest.mark.skipif(GPUS < 2, reason="two NCCL ranks need two GPUs")  # NCCL refuses two ranks on one GPU
def test_two_gpu_ranks_match_one(model_dir, before):
    one, _, stats1 = _train(model_dir, "nccl")
    two, _, stats2 = _train(model_dir, "nccl", world=2)
    assert stats2["policy_loss"] == pytest.approx(stats1["policy_loss"], rel=1e-3, abs=1e-5)
    assert update_cosine(two, one, before) > 0.99
