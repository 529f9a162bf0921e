"""`learner.evaluate`'s pieces on the untrained tiny model: k attempts through the serving code path,
batched across problems, equal the training rollout's; majority voting."""
from __future__ import annotations

import pytest

from actors.engines import SamplingParams
from actors.rollout import RolloutWorker
from actors.serve.app import SelfCorrection
from actors.serve.checkpoint import resolve
from learner.evaluate import answer_all, majority


@pytest.fixture(scope="module")
def impl(tiny_model_dir):
    return SelfCorrection.load(resolve(tiny_model_dir), "transformers", max_attempts=3)


def test_greedy_attempts_are_the_rollouts_in_one_batch_per_attempt(impl, sort_task, monkeypatch):
    problems = sort_task.eval_problems(3)
    batches = []
    generate_batch = impl.generate_batch
    monkeypatch.setattr(impl, "generate_batch", lambda items: batches.append(len(items)) or generate_batch(items))
    choices = answer_all(impl, problems, n=1, attempts=2, temperature=0.0)
    assert batches == [3, 3]  # every problem's attempt 1 together, then every attempt 2
    info, _ = RolloutWorker(impl.engine, sort_task).rollout(problems, 1, SamplingParams(impl.served.max_tokens, 0.0))
    for (choice,), meta in zip(choices, info.meta):
        assert [a.text for a in choice.attempts] == [meta.attempt1, meta.attempt2]


def test_majority_normalises_whitespace_and_breaks_ties_by_first_answer():
    assert majority([" 3 4", "1 2", " 1  2 "]) == "1 2"
    assert majority(["5 6", "1 2"]) == "5 6"
