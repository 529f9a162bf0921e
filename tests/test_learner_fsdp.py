"""FSDP2 with W=2 ranks takes the same step as W=1 on the same batch (gloo, CPU, real processes)."""
import multiprocessing as mp
import socket

import numpy as np
import pytest
import torch

from actors.engines.base import SamplingParams
from actors.engines.hf_engine import TransformersEngine
from actors.rollout import RolloutWorker
from learner.training.losses import Objective


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graded_batch(model_dir, task):
    worker = RolloutWorker(TransformersEngine.from_pretrained(model_dir), task)
    _, batch = worker.rollout(task.eval_problems(4), k=3, params=SamplingParams(max_new_tokens=6, temperature=1.0, seed=3))
    # rewards with variance inside each group, so every advantage term is live
    rewards = np.random.default_rng(0).integers(2, size=(len(batch), 2)).astype(np.float32)
    return batch, rewards


def _rank(rank, world, port, model_dir, graded, stage, out, micro_batch_tokens, objective):
    from learner.training.worker import LearnerWorker

    torch.set_num_threads(1)
    w = LearnerWorker(model_dir, rank, world, f"tcp://127.0.0.1:{port}", lr=1e-3, grad_clip=1.0, temperature=1.0,
                      micro_batch_tokens=micro_batch_tokens)
    batch, rewards = graded
    stats = w.train_step(Objective(stage=stage, alpha=10, beta1=0.01, beta2=0.25, **objective), rewards, batch)
    state = w.full_state_dict()
    if rank == 0:
        out.put(({k: v.numpy().copy() for k, v in state.items()}, stats))  # numpy: plain pickling, no shm
    w.close()


def _train(world, model_dir, batch, stage, micro_batch_tokens=0, **objective):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = _port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, str(model_dir), batch, stage, out, micro_batch_tokens, objective)) for r in range(world)]
    for p in procs:
        p.start()
    state, stats = out.get(timeout=240)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return {k: torch.from_numpy(v) for k, v in state.items()}, stats


@pytest.mark.parametrize("stage", [1, 2])
def test_two_ranks_match_one_rank(tiny_model_dir, sort_task, stage):
    batch = _graded_batch(tiny_model_dir, sort_task)
    one, stats1 = _train(1, tiny_model_dir, batch, stage)
    two, stats2 = _train(2, tiny_model_dir, batch, stage)
    before = TransformersEngine.from_pretrained(tiny_model_dir).model.state_dict()
    moved = max(float((one[k] - before[k]).abs().max()) for k in one)
    assert moved > 1e-4, "the step changed nothing: the comparison would be vacuous"
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4)
    assert stats2["policy_loss"] == pytest.approx(stats1["policy_loss"], rel=1e-4, abs=1e-6)
    assert stats1["logprob_abs_diff"] < 1e-4  # same weights sampled and scored: no engine/learner gap


def test_micro_batches_take_the_same_step_as_one_batch(tiny_model_dir, sort_task):
    """Rows sorted by length in chunks of ~100 padded tokens, gradients accumulated, on 2 ranks."""
    batch = _graded_batch(tiny_model_dir, sort_task)
    assert batch[0].lengths.min() * len(batch[0]) // 2 > 2 * 100, "each rank must need several micro-batches"
    whole, stats1 = _train(1, tiny_model_dir, batch, 2)
    chunked, stats2 = _train(2, tiny_model_dir, batch, 2, micro_batch_tokens=100)
    for k in whole:
        torch.testing.assert_close(chunked[k], whole[k], atol=2e-5, rtol=1e-4)
    for key in ("policy_loss", "kl_t1", "kl_t2", "logprob_abs_diff", "learner_tokens"):
        assert stats2[key] == pytest.approx(stats1[key], rel=1e-4, abs=1e-7), key


def test_a_group_with_an_ungraded_trace_is_left_out_of_the_update(tiny_model_dir, sort_task):
    """No verdict (NaN) is not a zero reward: the step equals one on the other groups alone."""
    batch, rewards = _graded_batch(tiny_model_dir, sort_task)
    ungraded = rewards.copy()
    ungraded[0, 1] = np.nan  # one attempt of one trace of group 0
    others = np.flatnonzero(batch.groups != batch.groups[0])
    with_nan, stats1 = _train(2, tiny_model_dir, (batch, ungraded), 2)
    without, stats2 = _train(2, tiny_model_dir, (batch.select(others), rewards[others]), 2)
    zero = rewards.copy()
    zero[0, 1] = 0.0 if rewards[0, 1] else 1.0  # had the missing grade been read as a verdict, the step would differ
    as_verdict, _ = _train(2, tiny_model_dir, (batch, zero), 2)
    for k in with_nan:
        torch.testing.assert_close(with_nan[k], without[k], atol=2e-5, rtol=1e-4)
    assert max(float((as_verdict[k] - with_nan[k]).abs().max()) for k in with_nan) > 1e-4
    assert stats1["learner_tokens"] == stats2["learner_tokens"]


def test_the_pair_term_adds_the_rows_gradient_alike_on_one_and_two_ranks(tiny_model_dir, sort_task):
    """score.pair_coef: the step's own Pair-SFT rows, an odd number of them, so the second rank pads
    with a weight-0 row; the update differs from SCoRe's alone and is the same on 1 and 2 ranks."""
    from learner.training.pairs import repair_pairs

    batch, rewards = _graded_batch(tiny_model_dir, sort_task)
    rows = int(repair_pairs(batch, rewards)[1][:, 1].sum())
    if rows % 2 == 0:  # make it odd: one more group-0 trace with a wrong first attempt, or one fewer
        first = np.flatnonzero(batch.groups == batch.groups[0])[0]
        rewards[first, 0] = 1.0 - rewards[first, 0]
        rows = int(repair_pairs(batch, rewards)[1][:, 1].sum())
    assert rows % 2 == 1 and rows > 1
    alone, _ = _train(1, tiny_model_dir, (batch, rewards), 2)
    one, stats1 = _train(1, tiny_model_dir, (batch, rewards), 2, pair_coef=1.0)
    two, stats2 = _train(2, tiny_model_dir, (batch, rewards), 2, micro_batch_tokens=100, pair_coef=1.0)
    assert stats1["pair_rows"] == stats2["pair_rows"] == rows
    assert stats1["pair_loss"] > 0 and stats2["pair_loss"] == pytest.approx(stats1["pair_loss"], rel=1e-4)
    assert max(float((one[k] - alone[k]).abs().max()) for k in one) > 1e-4
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4)
