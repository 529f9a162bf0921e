"""Rollouts ahead of the learner: the lag bound, back-pressure, and lag 0 as the plain on-policy loop.

In-process (the loop over the same plain classes the Ray actors wrap) where the question is the
schedule, on a real local Ray where it is the actors (rollouts and grading ahead of the learner,
several rollout actors, the object-store weight sync).
"""
import json

import numpy as np
import pytest

from actors.engines.base import SamplingParams
from actors.engines.hf_engine import TransformersEngine
from actors.reference import ReferencePolicy
from actors.rollout import RolloutWorker
from common.ports import free_port
from e2e import quick_overrides, run_cli
from graders.pool import GraderWorker
from graders.registry import make_task, register_task
from graders.sort_task import SortTask
from learner.driver.local_backend import LocalBackend
from learner.driver.loop import TrainLoop, reference_kwargs
from learner.training.losses import stage_schedule
from learner.training.worker import LearnerWorker
from protos import Grade, load_config, rewards

COMPARED = ("reward_t1", "reward_t2", "policy_loss", "kl_penalty", "kl_t1", "kl_t2", "grad_norm", "learner_tokens")


@register_task("sort_by_length")
class SortByLength(SortTask):
    """The sort problems, rewarded for an even-length answer: a random model earns mixed rewards, so
    every step of these short runs has a policy gradient to follow."""

    def grade(self, problem, completion):
        return Grade(reward=float(len(completion) % 2 == 0), status="pass")


def config(*settings: str):
    return load_config(None, [
        "task.name=sort_by_length", "score.stage1_steps=3", "score.stage2_steps=3", "score.prompts_per_step=4",
        "score.samples_per_prompt=2", "score.max_new_tokens=8", "task.eval_size=4", "eval.every_steps=0", "seed=3",
        *settings,
    ])


def run_loop(cfg, model_dir) -> list[dict]:
    records = []
    backend = LocalBackend(cfg, model_dir)
    loop = TrainLoop(cfg, make_task(cfg.task.name, cfg.task.params), backend, records.append, lambda _: None)
    try:
        loop.train()
    finally:
        backend.close()
    return records


def test_lag_zero_is_the_plain_on_policy_loop(tiny_model_dir):
    cfg = config("cluster.max_policy_lag=0")
    records = run_loop(cfg, tiny_model_dir)

    # the same run written out as the textbook loop: sample with the current weights, grade, train, sync
    sc, task = cfg.score, make_task(cfg.task.name)
    rng = np.random.default_rng(cfg.seed)
    reference = ReferencePolicy(str(tiny_model_dir), **reference_kwargs(cfg))  # the default: scored where sampled
    rollout = RolloutWorker(TransformersEngine.from_pretrained(tiny_model_dir), task, reference=reference)
    grader = GraderWorker(cfg.task.name)
    learner = LearnerWorker(str(tiny_model_dir), 0, 1, f"tcp://127.0.0.1:{free_port()}", lr=sc.lr,
                            grad_clip=sc.grad_clip, temperature=sc.temperature, seed=cfg.seed,
                            micro_batch_tokens=cfg.cluster.learner_micro_batch_tokens, reference=False)
    expected = []
    for version, objective in enumerate(o for o, n in stage_schedule(sc) for _ in range(n)):
        problems = task.train_problems(sc.prompts_per_step, rng)
        params = SamplingParams(sc.max_new_tokens, sc.temperature, seed=int(rng.integers(2**31)))
        info, batch = rollout.rollout(problems, sc.samples_per_prompt, params)
        assert info.policy_version == version
        info.set_grades(grader.grade_traces(problems, info))
        r = rewards(info.meta)
        expected.append({**learner.train_step(objective, r, batch), "reward_t1": r[:, 0].mean(), "reward_t2": r[:, 1].mean()})
        rollout.load_weights(version + 1, learner.full_state_dict())
    learner.close()

    assert len(records) == len(expected) == 6
    assert len({r["reward_t2"] for r in records}) > 1, "rewards never varied: the comparison would be vacuous"
    for got, want in zip(records, expected):
        assert {k: got[k] for k in COMPARED} == {k: float(want[k]) for k in COMPARED}
        assert got["policy_lag_max"] == 0 and got["is_clipped_frac"] == 0


def test_the_reference_scored_on_the_rollout_side_trains_as_on_the_learner(tiny_model_dir):
    """cluster.reference_on: where the reference forward runs changes no step beyond float rounding
    (the forward passes see differently padded batches), and lag 1 is reweighted the same way."""
    on_rollout = run_loop(config("cluster.reference_on=rollout"), tiny_model_dir)
    on_learner = run_loop(config("cluster.reference_on=learner"), tiny_model_dir)
    assert len(on_rollout) == len(on_learner) == 6
    assert any(r["kl_t1"] > 1e-6 for r in on_learner), "the policy never left the reference: vacuous"
    for a, b in zip(on_rollout, on_learner):
        for key in COMPARED + ("is_ratio_mean",):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("lag", [1, 2])
def test_rollouts_run_lag_steps_ahead_and_every_batch_is_trained(tiny_model_dir, lag):
    records = run_loop(config(f"cluster.max_policy_lag={lag}"), tiny_model_dir)
    assert [r["sampled_policy_version"] for r in records] == [max(0, s - 1 - lag) for s in range(1, 7)]
    assert [r["policy_lag_max"] for r in records] == [min(s - 1, lag) for s in range(1, 7)]
    assert all(r["traces_trained"] == 4 * 2 and r["batches_trained"] == 1 for r in records)
    assert records[-1]["batches_requested_total"] == 6 and records[-1]["batches_stale_total"] == 0
    # the off-policy steps are reweighted: their ratios move away from 1
    assert all(r["is_ratio_max"] > 1 for r in records[lag:])


@pytest.mark.parametrize("method", ["star", "pair_sft"])
def test_the_offline_baselines_train_on_the_base_models_samples(tiny_model_dir, method):
    # the paper's STaR and Pair-SFT: every step's rollouts sampled by v0 before the first update, whatever the lag
    cfg = config(f"score.method={method}", "cluster.max_policy_lag=0", "cluster.buffer_capacity=1")
    records = run_loop(cfg, tiny_model_dir)
    assert [r["sampled_policy_version"] for r in records] == [0] * 6
    assert [(r["policy_version"], r["policy_lag_max"]) for r in records] == [(s, s - 1) for s in range(1, 7)]
    assert all(r["kl_penalty"] == 0 and r["is_clipped_frac"] == 0 for r in records)  # supervised: no KL, no ratio
    assert any(r["policy_loss"] > 0 for r in records)  # there were pairs to imitate
    assert records[-1]["batches_requested_total"] == 6
    # its data set is not checkpointed: a resume after step 0 would sample it from the trained policy
    loop = TrainLoop(cfg, make_task(cfg.task.name, cfg.task.params), None, lambda _: None, lambda _: None)
    with pytest.raises(ValueError, match="cannot resume or recover after step 0"):
        loop.load_state_dict({"version": 3})


def test_a_full_buffer_holds_rollouts_back_and_loses_nothing(tiny_model_dir):
    # room for one step's batch only: lag 2 is allowed, but no rollout can be requested ahead
    records = run_loop(config("cluster.max_policy_lag=2", "cluster.buffer_capacity=1"), tiny_model_dir)
    assert [r["policy_lag_max"] for r in records] == [0] * 6
    # a step's record is written once the next step's rollout was requested: after its own batch left the buffer
    assert [r["batches_requested_total"] for r in records] == [2, 3, 4, 5, 6, 6]
    assert all(r["traces_trained"] == 8 for r in records)


class OneStaleBatch(LocalBackend):
    """Reports the third rollout as sampled by a policy far older than the lag allows, as a batch
    from an engine that missed weight syncs would be."""

    collected = 0

    def collect(self, shard):
        info, batch = super().collect(shard)
        self.collected += 1
        if self.collected == 3:
            info.policy_version -= 10
        return info, batch


def test_a_stale_batch_is_dropped_counted_and_its_problems_sampled_again(tiny_model_dir):
    cfg = config("cluster.max_policy_lag=1")
    records = []
    backend = OneStaleBatch(cfg, tiny_model_dir)
    try:
        TrainLoop(cfg, make_task(cfg.task.name), backend, records.append, lambda _: None).train()
    finally:
        backend.close()
    assert [r["batches_stale_total"] for r in records] == [0, 0, 1, 1, 1, 1]
    assert all(r["traces_trained"] == 8 and r["batches_trained"] == 1 for r in records)  # nothing trained short
    assert records[2]["sampled_policy_version"] == 2  # step 3's batch was sampled again, by the current policy
    assert records[-1]["batches_requested_total"] == 6 + 1


@register_task("sort_by_length_unjudged")
class SortByLengthUnjudged(SortByLength):
    """SortByLength whose grader gives no verdict on some answers (length a multiple of 3) to the
    problems with an odd number of items: a grader that fails on some inputs, never on a whole step."""

    def grade(self, problem, completion):
        if len(completion) % 3 == 0 and len(problem.id.split("-")) % 2 == 0:
            return Grade(reward=0.0, status="error", detail="the grader failed")
        return super().grade(problem, completion)


def test_traces_without_a_verdict_leave_their_prompt_groups_out_and_are_counted(tiny_model_dir):
    records = run_loop(config("task.name=sort_by_length_unjudged", "cluster.max_policy_lag=0"), tiny_model_dir)
    assert sum(r["traces_left_out"] for r in records) > 0, "no grade was withheld: the test would be vacuous"
    for r in records:
        assert r["traces_trained"] + r["traces_left_out"] == 4 * 2
        assert r["traces_left_out"] % 2 == 0  # whole prompt groups (2 samples each) are left out
        assert r["train_ungraded"] <= r["traces_left_out"]
    assert records[-1]["traces_left_out_total"] == sum(r["traces_left_out"] for r in records)
    assert all(0 <= r["reward_t1"] <= 1 for r in records)  # over graded traces: no NaN


@pytest.mark.slow
def test_ray_run_with_two_rollout_actors_at_lag_two(tmp_path):
    proc = run_cli(quick_overrides(tmp_path) + [
        "--set", "score.stage1_steps=3", "--set", "score.stage2_steps=3", "--set", "cluster.max_policy_lag=2",
        "--set", "cluster.rollout_actors=2", "--set", "cluster.grader_actors=2", "--set", "cluster.rollout_cpus=0.5",
        "--set", "cluster.grader_cpus=0.5", "--set", "cluster.torch_threads=1",
    ])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = [d for d in (tmp_path / "runs").iterdir() if (d / "summary.json").exists()]
    train = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in train if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    for r in train:
        assert 0 <= r["policy_lag_max"] <= 2 and r["policy_version"] - 1 - r["sampled_policy_version"] <= 2
        assert r["batches_trained"] == 2 and r["traces_trained"] == 4 * 2  # both actors' halves, every step
    assert max(r["policy_lag_max"] for r in train) >= 1, "the rollouts never ran ahead"
    last = train[-1]
    assert last["batches_requested_total"] == sum(r["batches_trained"] for r in train) + last["batches_stale_total"]


@pytest.mark.slow
def test_a_broadcast_does_not_wait_for_the_rollout_in_progress(tiny_model_dir):
    """The collective backend on a real rollout actor: the weights arrive on its own thread mid-rollout,
    the rollout in progress keeps its version, and the next one samples with the new weights."""
    import time

    import ray
    import torch

    from actors.rollout import RolloutActor
    from actors.weight_sync import WeightBroadcastGroup

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        actor = RolloutActor.options(num_cpus=1).remote("transformers", str(tiny_model_dir), "sort", {}, 1, 60)
        ray.get(actor.__ray_ready__.remote())  # built: the group's join below has its own, shorter deadline
        port = free_port()
        joined = actor.join_weight_group.options(concurrency_group="weights").remote("127.0.0.1", port, 1, 2, "gloo", 60)
        sender = WeightBroadcastGroup("127.0.0.1", port, 0, 2, "gloo", 60)
        ray.get(joined)
        problems = make_task("sort").eval_problems(32)
        # a random model rarely stops: 128 sequences of up to 2 x 160 tokens, seconds on one core
        info_ref, _ = actor.rollout.options(num_returns=2).remote(problems, 4, SamplingParams(160, 1.0, seed=0))
        time.sleep(1.0)  # well into the rollout
        assert not ray.wait([info_ref], timeout=0)[0], "the rollout ended too soon to test anything"
        weights = {k: torch.randn_like(v) for k, v in TransformersEngine.from_pretrained(tiny_model_dir).model.state_dict().items()}
        started = time.monotonic()
        received = actor.receive_weights.options(concurrency_group="weights").remote()
        sender.send(1, weights)
        assert ray.get(received) == 1
        broadcast_s = time.monotonic() - started
        assert not ray.wait([info_ref], timeout=0)[0], f"the broadcast ({broadcast_s:.1f}s) waited for the rollout"
        assert ray.get(info_ref).policy_version == 0  # the rollout in progress kept its weights
        after, _ = actor.rollout.options(num_returns=2).remote(problems[:2], 1, SamplingParams(4, 0.0))
        assert ray.get(after).policy_version == 1
        sender.close()
    finally:
        ray.shutdown()


def test_the_time_left_counts_the_steps_and_evaluations_still_to_come():
    from learner.driver.loop import duration

    loop = TrainLoop(config("score.stage1_steps=6", "score.stage2_steps=4", "eval.every_steps=4"),
                     make_task("sort_by_length"), None, print, print)
    loop.step_seconds, loop.eval_seconds = [9.0, 2.0, 3.0, 4.0], 10.0  # steps of 3.5 s (the median; the first, slow one barely counts); an evaluation takes 10 s
    assert loop.remaining_s(2) == 8 * 3.5 + 3 * 10.0  # evaluations after steps 4 and 8, and the final one
    assert loop.remaining_s(9) == 1 * 3.5 + 1 * 10.0
    assert [duration(s) for s in (54, 59.6, 192, 3725)] == ["54s", "1m00s", "3m12s", "62m05s"]
