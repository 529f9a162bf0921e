"""The SCoRe losses against values worked out by hand, term by term, in plain Python."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from common.scoring import token_logprobs
from learner.training.losses import Objective, advantages, importance_weights, rloo, score_loss
from protos import ATTEMPT1, ATTEMPT2, CONTEXT

C, A1, A2 = CONTEXT, ATTEMPT1, ATTEMPT2


def test_rloo_baseline_excludes_the_samples_own_reward():
    adv = rloo(np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), np.array([0, 0, 0, 0, 1, 1]))
    # group 0: each reward minus the mean of the other three
    assert adv[:4] == pytest.approx([1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3])
    # a group whose samples all agree carries no signal
    assert adv[4:] == pytest.approx([0.0, 0.0])


def test_rloo_refuses_a_group_of_one():
    with pytest.raises(ValueError, match="at least 2"):
        rloo(np.array([1.0, 0.0]), np.array([0, 1]))


def test_stage_one_credits_only_attempt_two_and_stage_two_shapes_it():
    r1 = np.array([1.0, 0.0, 0.0, 0.0])
    r2 = np.array([1.0, 1.0, 0.0, 0.0])
    g = np.zeros(4, dtype=int)
    a1, a2 = advantages(r1, r2, g, Objective(stage=1, alpha=10, beta1=0.01, beta2=0.1))
    assert a1 == pytest.approx([0, 0, 0, 0])
    assert a2 == pytest.approx([1 - 1 / 3, 1 - 1 / 3, -2 / 3, -2 / 3])

    a1, a2 = advantages(r1, r2, g, Objective(stage=2, alpha=10, beta1=0.01, beta2=0.1))
    shaped = [1 + 10 * 0, 1 + 10 * 1, 0, 0]  # r2 + alpha (r2 - r1): the i->c sample earns the bonus
    loo = [s - (sum(shaped) - s) / 3 for s in shaped]
    assert a2 == pytest.approx(loo)
    assert a1 == pytest.approx([1 - 0, 0 - 1 / 3, -1 / 3, -1 / 3])


def test_the_attempt1_baseline_removes_only_noise_from_stage2():
    """score.attempt2_baseline=attempt1: Stage II's attempt-2 advantage loses the part fixed by attempt 1
    (-α·r1), leaving (1 + α)·RLOO(r2); what it drops from plain RLOO is zero on average over attempt
    2's samples from each attempt 1 (the same expected gradient), and nonzero trace by trace."""
    r1 = np.array([1.0, 0.0, 0.0, 1.0])
    r2 = np.array([1.0, 1.0, 0.0, 0.0])
    g = np.zeros(4, dtype=int)
    plain1, plain2 = advantages(r1, r2, g, Objective(2, alpha=10, beta1=0.01, beta2=0.1))
    exact1, exact2 = advantages(r1, r2, g, Objective(2, alpha=10, beta1=0.01, beta2=0.1, attempt1_baseline=True))
    assert exact1 == pytest.approx(plain1)
    assert exact2 == pytest.approx(11 * np.array([1 - 1 / 3, 1 - 1 / 3, -2 / 3, -2 / 3]))
    dropped = plain2 - exact2
    # -α·RLOO(r1): a function of attempt 1 alone, so zero on average over the attempts 2 that follow it
    assert dropped == pytest.approx(-10 * (r1 - (r1.sum() - r1) / 3)) and np.abs(dropped).max() > 5
    # Stage I has no shaping, so nothing to remove; the schedule sets it on Stage II only
    assert advantages(r1, r2, g, Objective(1, 10, 0.01, 0.1, attempt1_baseline=True))[1] == pytest.approx(
        advantages(r1, r2, g, Objective(1, 10, 0.01, 0.1))[1])
    from learner.training.losses import stage_schedule
    from protos import load_config
    schedule = stage_schedule(load_config(None, ["score.attempt2_baseline=attempt1"], check_paths=False).score)
    assert [o.attempt1_baseline for o, _ in schedule] == [False, True]


def test_episode_credit_gives_attempt1_the_return_and_makes_the_bonus_act_on_it():
    """score.stage2_credit=episode: Stage II's attempt 1 is credited with r1 + r̂2 = (1 - α)·r1 + (1 + α)·r2,
    attempt 2 as before. Under per-attempt credit α = 0 and α = 10 rank attempt 1's samples alike; under
    episode credit α = 10 puts a wrong first attempt that is then fixed above a right one kept."""
    r1 = np.array([1.0, 0.0, 0.0, 1.0])  # c->c, i->c, i->i, c->i
    r2 = np.array([1.0, 1.0, 0.0, 0.0])
    g = np.zeros(4, dtype=int)
    by_alpha = {}
    for alpha in (0.0, 10.0):
        own1, own2 = advantages(r1, r2, g, Objective(2, alpha, 0.01, 0.1))
        ep1, ep2 = advantages(r1, r2, g, Objective(2, alpha, 0.01, 0.1, episode_credit=True))
        returns = (1 - alpha) * r1 + (1 + alpha) * r2
        assert ep1 == pytest.approx(returns - (returns.sum() - returns) / 3)
        assert ep2 == pytest.approx(own2) and own1 == pytest.approx(r1 - (r1.sum() - r1) / 3)
        by_alpha[alpha] = ep1
    assert by_alpha[0.0][0] > by_alpha[0.0][1]  # α = 0: c->c above i->c (return 2 against 1)
    assert by_alpha[10.0][1] > by_alpha[10.0][0]  # α = 10: i->c (11) above c->c (2)
    assert by_alpha[10.0][3] < by_alpha[10.0][2] < 0  # c->i (-9) below i->i (0)
    from learner.training.losses import stage_schedule
    from protos import load_config
    schedule = stage_schedule(load_config(None, ["score.stage2_credit=episode"], check_paths=False).score)
    assert [o.episode_credit for o, _ in schedule] == [False, True]
    with pytest.raises(ValueError, match="stage2_credit"):
        load_config(None, ["score.stage2_credit=trajectory"], check_paths=False)


def test_normalized_advantages_weigh_both_attempts_alike():
    """score.normalize_advantages: each attempt's advantages over their batch std, so Stage II's shaped
    attempt 2 (rewards spanning 1 + 2 alpha) no longer outweighs attempt 1 ten to one; signs and order
    kept, and an attempt with no advantage (Stage I's attempt 1) stays at zero."""
    r1 = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    r2 = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    g = np.repeat([0, 1], 4)
    for stage in (1, 2):
        plain = advantages(r1, r2, g, Objective(stage, alpha=10, beta1=0.01, beta2=0.1))
        scaled = advantages(r1, r2, g, Objective(stage, alpha=10, beta1=0.01, beta2=0.1, normalize=True))
        for p, s in zip(plain, scaled):
            if np.any(p):
                assert s == pytest.approx(p / p.std()) and s.std() == pytest.approx(1.0)
            else:
                assert not np.any(s)
    plain1, plain2 = advantages(r1, r2, g, Objective(2, alpha=10, beta1=0.01, beta2=0.1))
    assert plain2.std() > 10 * plain1.std()  # what it corrects: the shaped term's scale
    # Stage II may normalise differently from Stage I; unset, it follows Stage I
    from learner.training.losses import stage_schedule
    from protos import load_config
    for stage2, expected in ((None, [True, True]), (False, [True, False])):
        sets = ["score.normalize_advantages=true"] + ([f"score.stage2_normalize_advantages={stage2}"] if stage2 is not None else [])
        schedule = stage_schedule(load_config(None, sets, check_paths=False).score)
        assert [o.normalize for o, _ in schedule] == expected


def _hand_batch():
    # Two traces. Row 0: ctx ctx y1 y1 ctx y2 pad ; row 1: ctx y1 ctx y2 y2 y2 pad(x1)
    segment = torch.tensor([[C, C, A1, A1, C, A2, C], [C, A1, C, A2, A2, A2, C]])
    logp = torch.tensor([[0.0, -9.0, -0.5, -1.0, -7.0, -0.2, -5.0], [0.0, -0.3, -8.0, -0.1, -0.4, -0.9, -6.0]])
    ref = torch.tensor([[0.0, -1.0, -0.7, -0.6, -2.0, -0.5, -3.0], [0.0, -0.2, -1.0, -0.3, -0.4, -0.6, -2.0]])
    return segment, logp, ref


def _k2(a, b):
    return 0.5 * (a - b) ** 2


@pytest.mark.parametrize("stage", [1, 2])
def test_score_loss_matches_hand_computation(stage):
    segment, logp, ref = _hand_batch()
    obj = Objective(stage=stage, alpha=10, beta1=0.01, beta2=0.25)
    adv1 = torch.tensor([0.0, 0.0]) if stage == 1 else torch.tensor([0.5, -0.5])
    adv2 = torch.tensor([1.5, -2.0])
    loss, stats = score_loss(logp, ref, segment, adv1, adv2, obj, total_traces=2)

    # Row 0: attempt-1 tokens at 2,3; attempt-2 token at 5. Row 1: attempt-1 at 1; attempt-2 at 3,4,5.
    lp1 = [-0.5 + -1.0, -0.3]
    lp2 = [-0.2, -0.1 + -0.4 + -0.9]
    kl1 = [_k2(-0.5, -0.7) + _k2(-1.0, -0.6), _k2(-0.3, -0.2)]
    kl2 = [_k2(-0.2, -0.5), _k2(-0.1, -0.3) + _k2(-0.4, -0.4) + _k2(-0.9, -0.6)]
    w1 = 0.25 if stage == 1 else 0.01  # beta2 pins attempt 1 in Stage I only
    expected = sum(
        -(float(adv1[i]) * lp1[i] + float(adv2[i]) * lp2[i]) + w1 * kl1[i] + 0.01 * kl2[i] for i in range(2)
    ) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)

    k3 = lambda p, r: math.exp(r - p) - (r - p) - 1  # noqa: E731
    assert stats["kl_t1"] == pytest.approx((k3(-0.5, -0.7) + k3(-1.0, -0.6) + k3(-0.3, -0.2)) / 2, rel=1e-5)


def test_context_and_padding_tokens_never_reach_the_loss():
    segment, logp, ref = _hand_batch()
    obj = Objective(stage=2, alpha=10, beta1=0.01, beta2=0.25)
    adv = torch.tensor([1.0, -1.0])
    base, _ = score_loss(logp, ref, segment, adv, adv, obj, total_traces=2)
    noisy = logp.clone()
    noisy[segment == C] = torch.randn(int((segment == C).sum())) * 50
    changed, _ = score_loss(noisy, ref, segment, adv, adv, obj, total_traces=2)
    assert float(changed) == pytest.approx(float(base), rel=1e-6)


def test_gradient_raises_the_likelihood_of_advantaged_attempts():
    segment, logp, ref = _hand_batch()
    logp = logp.clone().requires_grad_(True)
    obj = Objective(stage=1, alpha=10, beta1=0.0, beta2=0.0)  # no KL: the sign is the policy gradient's alone
    loss, _ = score_loss(logp, ref, segment, torch.zeros(2), torch.tensor([1.0, -1.0]), obj, total_traces=2)
    loss.backward()
    # Gradient descent moves logp by -grad: up for the positive-advantage attempt 2, down for the negative one.
    assert (logp.grad[0][segment[0] == A2] < 0).all()
    assert (logp.grad[1][segment[1] == A2] > 0).all()
    # Stage I puts no policy gradient on attempt 1.
    assert (logp.grad[segment == A1] == 0).all()


def test_kl_in_stage_one_pins_attempt_one_with_beta2():
    segment, logp, ref = _hand_batch()
    logp = logp.clone().requires_grad_(True)
    obj = Objective(stage=1, alpha=10, beta1=0.01, beta2=0.25)
    loss, _ = score_loss(logp, ref, segment, torch.zeros(2), torch.zeros(2), obj, total_traces=2)
    loss.backward()
    # d/dlogp of beta * 0.5 (logp - ref)^2 / n = beta (logp - ref) / n
    assert float(logp.grad[0, 2]) == pytest.approx(0.25 * (-0.5 + 0.7) / 2)
    assert float(logp.grad[0, 5]) == pytest.approx(0.01 * (-0.2 + 0.5) / 2)


def test_importance_weights_on_policy_data_are_one_and_change_nothing():
    segment, logp, ref = _hand_batch()
    obj = Objective(stage=2, alpha=10, beta1=0.01, beta2=0.25)
    adv1, adv2 = torch.tensor([0.5, -0.5]), torch.tensor([1.5, -2.0])
    assert (importance_weights(logp, logp.clone(), cap=2.0) == 1).all()
    grads = []
    for objective in (obj, replace(obj, is_cap=2.0)):
        x = logp.clone().requires_grad_(True)
        loss, _ = score_loss(x, ref, segment, adv1, adv2, objective, total_traces=2, sample_logp=logp.clone())
        loss.backward()
        grads.append((float(loss), x.grad))
    assert grads[0][0] == grads[1][0] and torch.equal(grads[0][1], grads[1][1])


def test_off_policy_tokens_are_weighted_by_the_truncated_ratio():
    segment, logp, ref = _hand_batch()
    # the sampler (an older policy) gave these log-probs to the same tokens
    sample = logp.clone()
    sample[0, 2], sample[0, 3], sample[0, 5] = -0.9, -0.2, -1.5  # ratios e^0.4, e^-0.8, e^1.3 (> 2: truncated)
    sample[1, 1], sample[1, 3], sample[1, 4], sample[1, 5] = -0.3, -0.6, -0.1, -0.9  # e^0, e^0.5, e^-0.3, e^0
    obj = Objective(stage=2, alpha=10, beta1=0.01, beta2=0.25, is_cap=2.0)
    adv1, adv2 = torch.tensor([0.5, -0.5]), torch.tensor([1.5, -2.0])
    x = logp.clone().requires_grad_(True)
    loss, _ = score_loss(x, ref, segment, adv1, adv2, obj, total_traces=2, sample_logp=sample)
    loss.backward()

    w = lambda lp, mu: min(math.exp(lp - mu), 2.0)  # noqa: E731
    pg1 = [w(-0.5, -0.9) * -0.5 + w(-1.0, -0.2) * -1.0, w(-0.3, -0.3) * -0.3]
    pg2 = [w(-0.2, -1.5) * -0.2, w(-0.1, -0.6) * -0.1 + w(-0.4, -0.1) * -0.4 + w(-0.9, -0.9) * -0.9]
    kl1 = [_k2(-0.5, -0.7) + _k2(-1.0, -0.6), _k2(-0.3, -0.2)]  # the KL terms are not reweighted
    kl2 = [_k2(-0.2, -0.5), _k2(-0.1, -0.3) + _k2(-0.4, -0.4) + _k2(-0.9, -0.6)]
    expected = sum(-(float(adv1[i]) * pg1[i] + float(adv2[i]) * pg2[i]) + 0.01 * (kl1[i] + kl2[i]) for i in range(2)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # the weight is a constant: a token's gradient is -A * w / n (+ its KL term), w = min(ratio, cap)
    assert float(x.grad[0, 5]) == pytest.approx((-1.5 * 2.0 + 0.01 * (-0.2 + 0.5)) / 2, rel=1e-6)
    assert float(x.grad[1, 3]) == pytest.approx((2.0 * math.exp(0.5) + 0.01 * (-0.1 + 0.3)) / 2, rel=1e-6)


def test_token_logprobs_match_a_manual_softmax_and_ignore_padding(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    short, long = [5, 9, 14, 3], [7, 8, 9, 10, 11, 12]
    tokens = torch.tensor([short + [1, 1], long])
    lengths = torch.tensor([4, 6])
    with torch.no_grad():
        got = token_logprobs(model, tokens, lengths, temperature=2.0)
        alone = torch.log_softmax(model(torch.tensor([short])).logits[0].float() / 2.0, -1)
    assert got[0, 0] == 0
    for t in range(1, 4):
        assert float(got[0, t]) == pytest.approx(float(alone[t - 1, short[t]]), abs=1e-5)


def test_scoring_only_some_positions_gives_their_log_probs_and_gradients(tiny_model_dir):
    """token_logprobs(scored=...) runs the output head on the scored positions only: the same values
    and the same gradients there as scoring every position, zeros elsewhere."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokens = torch.tensor([[5, 9, 14, 3, 1, 1], [7, 8, 9, 10, 11, 12]])
    lengths = torch.tensor([4, 6])
    scored = torch.tensor([[0, 0, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    every = token_logprobs(model, tokens, lengths, temperature=0.7)
    (every * scored).sum().backward()
    want_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    some = token_logprobs(model, tokens, lengths, temperature=0.7, scored=scored)
    some.sum().backward()
    torch.testing.assert_close(some[scored], every[scored], atol=1e-6, rtol=1e-5)
    positions = torch.arange(tokens.shape[1])[None, :]
    unscored = ~scored & (positions > 0) & (positions < lengths[:, None])
    assert (some[~scored] == 0).all() and (every[unscored] != 0).all()
    for got, want in zip((p.grad for p in model.parameters()), want_grads):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
