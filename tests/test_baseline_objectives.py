"""The baselines' objectives (single-turn RL, online STaR, the paper's offline STaR and Pair-SFT), Pair-SFT's
rows, and the stage schedule of every method."""
import numpy as np
import pytest
import torch

from learner.training.losses import Objective, advantages, score_loss, stage_schedule
from protos import ATTEMPT1, ATTEMPT2, CONTEXT, TraceBatch

C, A1, A2 = CONTEXT, ATTEMPT1, ATTEMPT2


def _batch():
    segment = torch.tensor([[C, C, A1, A1, C, A2, C], [C, A1, C, A2, A2, A2, C]])
    logp = torch.tensor([[0.0, -9.0, -0.5, -1.0, -7.0, -0.2, -5.0], [0.0, -0.3, -8.0, -0.1, -0.4, -0.9, -6.0]])
    ref = torch.tensor([[0.0, -1.0, -0.7, -0.6, -2.0, -0.5, -3.0], [0.0, -0.2, -1.0, -0.3, -0.4, -0.6, -2.0]])
    return segment, logp, ref


def test_single_turn_rewards_attempt_one_only():
    r1 = np.array([1.0, 0.0, 0.0, 0.0])
    r2 = np.array([0.0, 1.0, 1.0, 1.0])
    a1, a2 = advantages(r1, r2, np.zeros(4, dtype=int), Objective(1, 10, 0.01, 0.5, method="single_turn"))
    assert a1 == pytest.approx([1.0, -1 / 3, -1 / 3, -1 / 3])
    assert a2 == pytest.approx([0, 0, 0, 0])


def test_single_turn_loss_never_touches_attempt_two():
    segment, logp, ref = _batch()
    logp = logp.clone().requires_grad_(True)
    obj = Objective(1, alpha=10, beta1=0.5, beta2=0.5, method="single_turn")
    # even a large attempt-2 advantage must not reach the loss: attempt 2 is prompted, not trained
    loss, stats = score_loss(logp, ref, segment, torch.tensor([1.0, -1.0]), torch.tensor([7.0, 7.0]), obj, total_traces=2)
    loss.backward()
    assert (logp.grad[segment == A2] == 0).all()
    assert (logp.grad[segment == A1] != 0).all()
    assert stats["kl_t2"] == 0.0
    # attempt 1 gets the policy gradient plus beta1's KL (not Stage I's beta2 pin)
    assert float(logp.grad[0, 2]) == pytest.approx((-1.0 + 0.5 * (-0.5 + 0.7)) / 2)


def test_star_imitates_only_wrong_then_right_traces():
    r1 = np.array([0.0, 0.0, 1.0, 1.0])
    r2 = np.array([1.0, 0.0, 1.0, 0.0])
    for method in ("online_star", "star"):
        a1, a2 = advantages(r1, r2, np.zeros(4, dtype=int), Objective(1, 10, 0.01, 0.5, method=method))
        assert a1 == pytest.approx([0, 0, 0, 0])
        assert a2 == pytest.approx([1, 0, 0, 0])  # a weight on the log-likelihood: no baseline


def test_imitation_loss_is_the_negative_log_likelihood_of_the_corrections():
    segment, logp, ref = _batch()
    for method in ("online_star", "star", "pair_sft"):
        obj = Objective(1, alpha=10, beta1=0.0, beta2=0.5, method=method)
        loss, _ = score_loss(logp, ref, segment, torch.zeros(2), torch.tensor([1.0, 0.0]), obj, total_traces=2)
        assert float(loss) == pytest.approx(-(-0.2) / 1)  # row 0's attempt 2, averaged over the one pair


def test_the_offline_baselines_are_plain_fine_tuning():
    """The paper's STaR and Pair-SFT: supervised, so no KL term whatever beta1 says, and no importance
    ratio even when rollouts may lag (their data is the base model's, by design)."""
    segment, logp, ref = _batch()
    for method in ("star", "pair_sft"):
        obj = Objective(1, alpha=10, beta1=0.5, beta2=0.5, method=method)
        loss, stats = score_loss(logp, ref, segment, torch.zeros(2), torch.tensor([1.0, 0.0]), obj, total_traces=2)
        assert float(loss) == pytest.approx(0.2) and stats["kl_penalty"] == 0.0 and stats["kl_t2"] > 0  # still reported
    online = Objective(1, alpha=10, beta1=0.5, beta2=0.5, method="online_star")
    assert float(score_loss(logp, ref, segment, torch.zeros(2), torch.tensor([1.0, 0.0]), online, total_traces=2)[0]) > 0.2
    from protos import load_config

    sc = load_config(None, ["score.importance_ratio_cap=2"]).score
    for method, cap in (("star", None), ("pair_sft", None), ("online_star", 2.0), ("score", 2.0)):
        assert {o.is_cap for o, _ in stage_schedule(sc.model_copy(update={"method": method}), off_policy=True)} == {cap}


def test_pair_sft_rows_pair_each_wrong_first_attempt_with_a_right_response_in_turn():
    from learner.training.pairs import repair_pairs

    instruction = [90, 91]
    # problem 0: trace 0 wrong then wrong, trace 1 right first, trace 2 wrong then right
    # problem 1: nobody right (no row); problem 2: right first time (no wrong attempt to repair)
    batch = TraceBatch.from_parts(
        groups=[0, 0, 0, 1, 1, 2],
        prompts=[[1, 2], [1, 2], [1, 2], [3], [3], [4, 4, 4]],
        attempts1=[[10, 11], [12], [13, 14, 15], [16], [17], [18]],
        instruction=instruction,
        attempts2=[[20], [21, 22], [23, 24], [25], [26], [27]],
        logprobs1=[[-0.1, -0.2], [-0.3], [-0.4, -0.5, -0.6], [-0.7], [-0.8], [-0.9]],
        logprobs2=[[-1.0], [-1.1, -1.2], [-1.3, -1.4], [-1.5], [-1.6], [-1.7]],
        pad_id=0,
    )
    batch.ref_logprobs = batch.sample_logprobs * 2
    rewards = np.array([[0, 0], [1, 0], [0, 1], [0, 0], [0, 0], [1, 1]], dtype=np.float32)
    rows, r = repair_pairs(batch, rewards)
    # trace 0's wrong y1 with the first right response (trace 1's y1), trace 2's with the next (its own y2)
    expected = [[1, 2, 10, 11, 90, 91, 12], [1, 2, 13, 14, 15, 90, 91, 23, 24]]
    assert [list(rows.tokens[i, : rows.lengths[i]]) for i in range(2)] == expected
    assert list(rows.segment[0, :7]) == [C, C, A1, A1, C, C, A2] and list(rows.segment[1, 7:9]) == [A2, A2]
    assert list(rows.groups) == [0, 0] and r.tolist() == [[0, 1], [0, 1]]
    assert rows.sample_logprobs[0, 6] == pytest.approx(-0.3) and rows.sample_logprobs[1, 8] == pytest.approx(-1.4)
    assert rows.ref_logprobs is None  # the reference's log-probs of y* in its new context: the learner scores them
    # nothing to pair: the batch unchanged, every reward 0, so the imitation loss trains on none of it
    same, zero = repair_pairs(batch, np.array([[0, 0]] * 6, dtype=np.float32))
    assert same is batch and not zero.any()


def test_schedules_give_every_method_the_same_number_of_steps():
    from protos import load_config

    sc = load_config(None, ["score.stage1_steps=30", "score.stage2_steps=50", "score.lr=3e-4", "score.stage2_lr=1e-4"]).score
    score = stage_schedule(sc)
    assert [(o.stage, o.method, n, o.lr) for o, n in score] == [(1, "score", 30, 3e-4), (2, "score", 50, 1e-4)]
    for method in ("single_turn", "online_star", "star", "pair_sft"):
        ((obj, n),) = stage_schedule(sc.model_copy(update={"method": method}))
        assert (obj.method, n, obj.lr) == (method, 80, 3e-4)
    # without stage2_lr, Stage II keeps score.lr
    assert [o.lr for o, _ in stage_schedule(sc.model_copy(update={"stage2_lr": None}))] == [3e-4, 3e-4]
    with pytest.raises(ValueError, match="method"):
        Objective(1, 10, 0.01, 0.5, method="nope")


def test_online_star_step_size_does_not_shrink_with_the_correction_rate():
    """The imitation term is averaged over the batch's (wrong, right) pairs, not over its traces: the
    same one pair gives the same gradient in a batch of 2 traces as in a batch of 200; the KL terms
    stay averaged over the traces."""
    from learner.training.losses import pair_count

    segment, logp, ref = _batch()
    obj = Objective(1, alpha=10, beta1=0.0, beta2=0.5, method="online_star")
    adv2 = np.array([1.0, 0.0] + [0.0] * 198)
    assert pair_count(adv2, obj) == 1 and pair_count(np.zeros(4), obj) == 1  # at least 1
    assert pair_count(np.array([1.0, 1.0, 0.0]), obj) == 2
    grads = []
    for traces in (2, 200):
        x = logp.clone().requires_grad_(True)
        loss, _ = score_loss(x, ref, segment, torch.zeros(2), torch.from_numpy(adv2[:2]).float(), obj,
                             total_traces=traces, total_pairs=pair_count(adv2[:traces], obj))
        loss.backward()
        grads.append(x.grad)
        assert float(loss) == pytest.approx(0.2)  # -log π(y2) of the one pair, not divided by the traces
    assert torch.equal(grads[0], grads[1])
    # the KL penalty is still a per-trace average
    kl = Objective(1, alpha=10, beta1=0.5, beta2=0.5, method="online_star")
    with_pairs, _ = score_loss(logp, ref, segment, torch.zeros(2), torch.zeros(2), kl, total_traces=2, total_pairs=7)
    without, _ = score_loss(logp, ref, segment, torch.zeros(2), torch.zeros(2), kl, total_traces=2, total_pairs=1)
    assert float(with_pairs) == pytest.approx(float(without)) and float(without) > 0


def test_scores_pair_term_is_pair_sfts_loss_weighted_and_only_in_score():
    """score.pair_coef: λ·(-Σ log π(y*) / #rows) over y*'s tokens, the same value as Pair-SFT's own loss
    on the rows (which has no KL), λ times; a weight-0 row (a rank's padding) adds nothing; the
    schedule gives it to both SCoRe stages, and the config refuses it for any other method."""
    from learner.training.losses import pair_loss
    from protos import RunConfig

    segment, logp, ref = _batch()
    pair_sft = Objective(1, alpha=10, beta1=0.01, beta2=0.5, method="pair_sft")
    sft, _ = score_loss(logp, ref, segment, torch.zeros(2), torch.ones(2), pair_sft, total_traces=2, total_pairs=2)
    assert float(pair_loss(logp, segment, torch.full((2,), 0.5), 2)) == pytest.approx(0.5 * float(sft))
    assert float(sft) == pytest.approx((0.2 + 0.1 + 0.4 + 0.9) / 2)
    padded = pair_loss(logp, segment, torch.tensor([1.0, 0.0]), 2)
    assert float(padded) == pytest.approx(0.2 / 2)
    sc = RunConfig.model_validate({"score": {"pair_coef": 0.5}}).score
    assert [objective.pair_coef for objective, _ in stage_schedule(sc)] == [0.5, 0.5]
    assert RunConfig().score.pair_coef == 0.0  # off unless asked for: the paper's SCoRe
    with pytest.raises(ValueError, match="pair_coef"):
        RunConfig.model_validate({"score": {"method": "pair_sft", "pair_coef": 0.5}})
