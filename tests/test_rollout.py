"""Two-attempt rollouts with the transformers engine on a random tiny model."""
import threading
import time

import numpy as np
import pytest
import torch

from actors.engines.base import SamplingParams
from actors.engines.hf_engine import TransformersEngine
from actors.rollout import RolloutWorker
from common.scoring import token_logprobs
from protos import ATTEMPT1, ATTEMPT2


@pytest.fixture(scope="module")
def worker(tiny_model_dir, sort_task):
    return RolloutWorker(TransformersEngine.from_pretrained(tiny_model_dir), sort_task)


def test_batch_layout_is_prompt_attempt1_instruction_attempt2(worker, sort_task):
    problems = sort_task.eval_problems(3)
    info, batch = worker.rollout(problems, k=2, params=SamplingParams(max_new_tokens=6, temperature=1.0, seed=0))
    assert len(batch) == 6 and [m.group for m in info.meta] == [0, 0, 1, 1, 2, 2] == batch.groups.tolist()
    assert info.policy_version == 0
    assert info.rollout_tokens == int((batch.segment > 0).sum())
    instr = worker.turns.instruction_ids
    for i, m in enumerate(info.meta):
        row = batch.tokens[i, : batch.lengths[i]].tolist()
        seg = batch.segment[i, : batch.lengths[i]]
        x1 = worker.turns.first(problems[m.group])
        y1 = [t for t, s in zip(row, seg) if s == ATTEMPT1]
        y2 = [t for t, s in zip(row, seg) if s == ATTEMPT2]
        assert row == x1 + y1 + instr + y2  # the second prompt is rendered by Turns.second, token for token
        assert worker.turns.text(y1) == m.attempt1 and worker.turns.text(y2) == m.attempt2
        assert 1 <= len(y1) <= 6 and 1 <= len(y2) <= 6
        lp = batch.sample_logprobs[i, : batch.lengths[i]]
        assert (lp[seg == 0] == 0).all() and (lp[seg > 0] < 0).all()


def test_sampling_logprobs_equal_the_learners_recomputed_logprobs(worker, sort_task):
    _, batch = worker.rollout(sort_task.eval_problems(4), k=2, params=SamplingParams(max_new_tokens=8, temperature=0.7, seed=1))
    with torch.no_grad():
        lp = token_logprobs(worker.engine.model, torch.from_numpy(batch.tokens), torch.from_numpy(batch.lengths), 0.7)
    mask = batch.segment > 0
    assert np.abs(lp.numpy()[mask] - batch.sample_logprobs[mask]).max() < 1e-4


def test_greedy_is_deterministic_and_batch_carries_one_version(worker, sort_task):
    params = SamplingParams(max_new_tokens=6, temperature=0.0)
    _, a = worker.rollout(sort_task.eval_problems(5), 1, params)
    _, b = worker.rollout(sort_task.eval_problems(5), 1, params)
    assert (a.tokens == b.tokens).all()
    worker.load_weights(7, {k: v * 1.01 for k, v in worker.engine.model.state_dict().items()})
    info, _ = worker.rollout(sort_task.eval_problems(2), 1, params)
    assert info.policy_version == 7


class UpdatedBetweenAttempts(TransformersEngine):
    """A real engine whose weights are replaced right after attempt 1, as a racing weight sync would."""

    def generate(self, prompts, params):
        out = super().generate(prompts, params)
        self.version += 1
        return out


def test_a_weight_update_during_a_rollout_is_refused(tiny_model_dir, sort_task):
    engine = UpdatedBetweenAttempts.from_pretrained(tiny_model_dir)
    racing = RolloutWorker(engine, sort_task)
    with pytest.raises(RuntimeError, match="policy changed from v0 to v2 during a rollout"):
        racing.rollout(sort_task.eval_problems(2), 1, SamplingParams(max_new_tokens=4, temperature=0.0))


def test_weights_staged_during_a_rollout_are_taken_by_the_next_one(tiny_model_dir, sort_task):
    """What a rollout actor's weights thread does while its rollout thread samples."""
    engine = TransformersEngine.from_pretrained(tiny_model_dir)
    worker = RolloutWorker(engine, sort_task, weights_timeout_s=30)
    new_weights = {k: v * 1.01 for k, v in engine.model.state_dict().items()}
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    original = engine.generate

    def generate_then_receive(prompts, p):  # weights arrive while attempt 1 is being sampled
        out = original(prompts, p)
        if worker._staged is None and engine.version == 0:
            threading.Thread(target=worker.load_weights, args=(1, new_weights)).start()
            time.sleep(0.2)
        return out

    engine.generate = generate_then_receive
    info, _ = worker.rollout(sort_task.eval_problems(2), 1, params)
    assert info.policy_version == 0  # the rollout in progress kept its weights
    info, _ = worker.rollout(sort_task.eval_problems(2), 1, params)
    assert info.policy_version == 1 and engine.version == 1


def test_a_rollout_waits_for_the_oldest_version_it_accepts(tiny_model_dir, sort_task):
    worker = RolloutWorker(TransformersEngine.from_pretrained(tiny_model_dir), sort_task, weights_timeout_s=30)
    state = worker.engine.model.state_dict()
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    threading.Timer(0.5, worker.load_weights, args=(3, state)).start()
    started = time.monotonic()
    info, _ = worker.rollout(sort_task.eval_problems(2), 1, params, min_version=3)
    assert info.policy_version == 3 and time.monotonic() - started >= 0.4
    worker.load_weights(2, state)  # older than what the engine holds: ignored
    assert worker.rollout(sort_task.eval_problems(2), 1, params)[0].policy_version == 3

    impatient = RolloutWorker(TransformersEngine.from_pretrained(tiny_model_dir), sort_task, weights_timeout_s=0.2)
    with pytest.raises(TimeoutError, match="needs policy v1 or newer, but the engine holds v0"):
        impatient.rollout(sort_task.eval_problems(2), 1, params, min_version=1)


def test_the_reference_scores_training_batches_with_the_base_model_not_the_current_policy(tiny_model_dir, sort_task):
    """cluster.reference_on=rollout: a training batch leaves the actor with the log-probs of the base
    model (in several length-sorted micro-batches here), also after the engine took new weights; an
    evaluation's batch is not scored."""
    from actors.reference import ReferencePolicy

    reference = ReferencePolicy(str(tiny_model_dir), temperature=0.7, micro_batch_tokens=60)
    scorer = RolloutWorker(TransformersEngine.from_pretrained(tiny_model_dir), sort_task, reference=reference)
    base = TransformersEngine.from_pretrained(tiny_model_dir).model
    scorer.load_weights(1, {k: v + 0.05 * torch.randn_like(v) for k, v in base.state_dict().items()})
    params = SamplingParams(max_new_tokens=8, temperature=0.7, seed=2)
    info, batch = scorer.rollout(sort_task.eval_problems(4), k=2, params=params, min_version=1)
    assert info.policy_version == 1 and info.reference_s > 0
    lengths = torch.from_numpy(batch.lengths)
    assert len(np.unique(batch.lengths)) > 1 and int(batch.lengths.max()) * len(batch) > 2 * 60, "one micro-batch only"
    with torch.no_grad():
        want = token_logprobs(base, torch.from_numpy(batch.tokens), lengths, 0.7).numpy()
        policy = token_logprobs(scorer.engine.model, torch.from_numpy(batch.tokens), lengths, 0.7).numpy()
    inside = batch.segment > 0  # the attempts' tokens: all the loss reads
    np.testing.assert_allclose(batch.ref_logprobs[inside], want[inside], atol=1e-5)
    assert (batch.ref_logprobs[~inside] == 0).all()
    assert np.abs(policy[inside] - want[inside]).max() > 1e-3, "the new weights changed nothing: vacuous"
    _, evaluated = scorer.rollout(sort_task.eval_problems(2), 1, SamplingParams(6, 0.0), for_training=False)
    assert evaluated.ref_logprobs is None
