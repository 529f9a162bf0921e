"""The Stage I and Stage II objectives of SCoRe (Kumar et al. 2024, arXiv 2409.12917), as losses to minimise.

Policy gradient: REINFORCE with a leave-one-out baseline (RLOO) over the k samples of a prompt,
discount 0: the tokens of each attempt are credited with that attempt's own (shaped) reward
(score.stage2_credit=episode credits Stage II's attempt 1 with the episode's return instead, below).

    Stage I :  L = -A(r2)·log π(y2)               + β2·KL_1 + β1·KL_2
    Stage II:  L = -A(r1)·log π(y1) - A(r̂2)·log π(y2) + β1·KL_1 + β1·KL_2,   r̂2 = r2 + α(r2 − r1)

With discount 0 the bonus reaches attempt 2's tokens only, and its −α·r1 is fixed before attempt 2 is
sampled (attempt 1 is in attempt 2's prompt): in expectation it adds nothing to the gradient, so the
shaped reward acts as (1 + α)·r2, attempt 2 weighted 1 + α to attempt 1's 1; −α·r1 adds only noise,
which score.attempt2_baseline=attempt1 removes. With score.stage2_credit=episode, attempt 1's tokens
are credited with the return r1 + r̂2 = (1 − α)·r1 + (1 + α)·r2 (discount 1): there the bonus changes
what attempt 1 is trained towards (a first attempt a right second one follows), and α = 0 (r1 + r2)
differs from α = 10 in more than a weight. At α > 1 it also pays a wrong first attempt that the second
fixes more than a right one kept (11 against 2 at α = 10): the sandbagging the Δc→i / Δi→c split shows.

The paper's baselines are variants of the same loss (`Objective.method`), so every method of the
experiment suite (learner/experiment.py) trains through the same rollout, learner and evaluation:
    single_turn:  L = -A(r1)·log π(y1) + β1·KL_1            (attempt 2 is masked out entirely:
                                                          it is only ever prompted, never trained)
    online_star:  L = -[r1 = 0 ∧ r2 = 1]·log π(y2) / max(1, #pairs) + β1·KL_1 + β1·KL_2
                 (STaR on the model's own i→c pairs, re-sampled from the current policy every step:
                  supervised fine-tuning on its own successful corrections, no baseline, nothing
                  else rewarded. The imitation term is averaged over the (wrong, right) pairs of the
                  global batch, not over all its traces, so the step size does not shrink when the
                  policy corrects itself less often; the KL terms are averaged over the traces.)
The paper's two offline baselines fine-tune on data the *base* model sampled (`OFFLINE`: the loop
samples every step's traces with the base before the first update; learner/driver/loop.py), by
plain supervised fine-tuning as in the paper, with no KL term:
    star       :  L = -[r1 = 0 ∧ r2 = 1]·log π(y2) / max(1, #pairs)
                 (STaR, Zelikman et al. 2022, as the paper adapts it: the base's successful revisions)
    pair_sft   :  L = -log π(y*) / #pairs over rows [x, y1, p, y*]
                 (Pair-SFT, Welleck et al. 2023: each wrong attempt y1 of the base paired with a
                  correct response y* to the same problem from another of its samples;
                  learner/training/pairs.py builds the rows)

KL estimator. The KL in the objective is the reverse KL(π‖π_ref) of each attempt given its prompt.
The loss is the per-token "k2" penalty ½(d_t)², d_t = log π(y_t|c_t) − log π_ref(y_t|c_t) (Schulman,
"Approximating KL divergence", 2020), whose gradient is Σ_t d_t·∇log π(y_t|c_t). That is the gradient
of Σ_t KL(π(·|c_t)‖π_ref(·|c_t)) on on-policy samples *with each token's context c_t held fixed*: it
leaves out the sequence-level term by which an earlier token changes the distribution of later
contexts (Σ_t ∇log π(y_t|c_t)·Σ_{t'>t} d_t'). So it is the per-token KL penalty most RLHF trainers
use (verl's and OpenRLHF's "kl in loss"), not the exact gradient of the attempt's sequence KL; on a
two-token model (3 symbols, random logits) the second token's gradient matches and the first's does
not (one component: 0.44 exact, 0.49 from k2). The KL *value* we report uses k3 = e^{−d} + d − 1,
the unbiased, non-negative estimator of the sequence KL (k2 only approximates the value). Using k3
as the loss instead would give the gradient of the forward KL(π_ref‖π), not the objective's.

SCoRe with an auxiliary Pair-SFT term at every step (score.pair_coef = λ > 0; not in the paper): the
step's own graded batch, sampled by the current policy, also gives Pair-SFT's rows [x, y1 wrong, p,
y* right] (learner/training/pairs.py: each wrong first attempt followed by a right response to the
same problem from the batch, another sample's first attempt or a second attempt), and
    L = L_stage + λ · (-Σ log π(y*) / #rows)
with no KL and no importance ratio on the rows (y* was sampled in another context). No sample is
added: the rows relabel what the step sampled anyway, so the sampled-token budget is SCoRe's.

Terms are summed over an attempt's tokens and averaged over the traces of the global batch (the
imitation methods' term: over their pairs, see above).

Off-policy correction. With rollouts running ahead of the learner (cluster.max_policy_lag >= 1), a
batch may have been sampled by an older policy μ than the π being trained. Each sampled token's
policy-gradient term is then weighted by the truncated importance ratio w = min(π(y_t)/μ(y_t), C),
with μ(y_t) the log-prob the engine recorded while sampling and w held constant (no gradient
through it): token-level truncated importance sampling, as verl applies it to rollout/learner
mismatch (docs/advance/rollout_is.md there, after Yao et al. 2025, "Your efficient RL framework
secretly brings you off-policy RL training"), with C = score.importance_ratio_cap. The KL terms are
not reweighted: they are penalties on the current policy's own log-probs, as above.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from protos import ATTEMPT1, ATTEMPT2


METHODS = ("score", "single_turn", "online_star", "star", "pair_sft")
IMITATION = ("online_star", "star", "pair_sft")  # fine-tuning on (wrong, right) pairs, no advantage
OFFLINE = ("star", "pair_sft")  # trained on traces the base model sampled, not the current policy


@dataclass(frozen=True)
class Objective:
    stage: int  # 1 or 2 (SCoRe's stages); the other methods have one stage, numbered 1
    alpha: float
    beta1: float
    beta2: float
    method: str = "score"
    lr: float | None = None  # the learner's step size under this objective; None = leave it as it is
    is_cap: float | None = None  # truncated importance sampling's cap C; None = no off-policy correction
    normalize: bool = False  # each attempt's advantages over their batch std (score.normalize_advantages)
    attempt1_baseline: bool = False  # Stage II: -α·r1 subtracted from attempt 2's shaped reward exactly (score.attempt2_baseline)
    episode_credit: bool = False  # Stage II: attempt 1 credited with the episode's return r1 + r̂2 (score.stage2_credit)
    pair_coef: float = 0.0  # SCoRe: weight of the auxiliary Pair-SFT term on the step's own rows (score.pair_coef)

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {self.stage}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")

    @property
    def offline(self) -> bool:
        return self.method in OFFLINE


def stage_schedule(sc, off_policy: bool = False) -> list[tuple[Objective, int]]:
    """(objective, steps) in order, from a ScoreConfig. SCoRe: Stage I then Stage II (at
    stage2_lr if set). The single-stage baselines run stage1_steps + stage2_steps steps at lr, so
    every method gets the same number of steps and the same budget of sampled tokens. `off_policy`
    (rollouts may lag the learner) turns on the importance-ratio correction, capped at
    sc.importance_ratio_cap unless that is unset; never for the offline baselines, whose supervised
    loss has no policy-gradient term to correct."""
    is_cap = sc.importance_ratio_cap if off_policy and sc.method not in OFFLINE else None
    normalize = sc.normalize_advantages and sc.method not in IMITATION  # their "advantage" is a 0/1 weight
    if sc.method == "score":
        return [
            (Objective(1, sc.alpha, sc.beta1, sc.beta2, lr=sc.lr, is_cap=is_cap, normalize=normalize,
                       pair_coef=sc.pair_coef), sc.stage1_steps),
            (Objective(2, sc.alpha, sc.beta1, sc.beta2, lr=sc.stage2_lr or sc.lr, is_cap=is_cap, pair_coef=sc.pair_coef,
                       normalize=normalize if sc.stage2_normalize_advantages is None else sc.stage2_normalize_advantages,
                       attempt1_baseline=sc.attempt2_baseline == "attempt1",
                       episode_credit=sc.stage2_credit == "episode"), sc.stage2_steps),
        ]
    objective = Objective(1, sc.alpha, sc.beta1, sc.beta2, method=sc.method, lr=sc.lr, is_cap=is_cap, normalize=normalize)
    return [(objective, sc.stage1_steps + sc.stage2_steps)]


def rloo(rewards: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Leave-one-out advantage: each reward minus the mean of the *other* samples of its prompt."""
    rewards = np.asarray(rewards, dtype=np.float64)
    adv = np.zeros_like(rewards)
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) < 2:
            raise ValueError(f"prompt group {g} has {len(idx)} sample; RLOO needs at least 2")
        others = (rewards[idx].sum() - rewards[idx]) / (len(idx) - 1)
        adv[idx] = rewards[idx] - others
    return adv


def advantages(r1: np.ndarray, r2: np.ndarray, groups: np.ndarray, obj: Objective) -> tuple[np.ndarray, np.ndarray]:
    """Per-trace advantages for attempt 1 and attempt 2 under the stage's rewards (each divided by
    its standard deviation over the batch when obj.normalize)."""
    if obj.method in IMITATION:  # a weight, not an advantage: 1 on (wrong, right) traces, 0 elsewhere
        return np.zeros_like(r1, dtype=np.float64), ((r1 < 0.5) & (r2 > 0.5)).astype(np.float64)
    zeros = np.zeros_like(r1, dtype=np.float64)
    if obj.method == "single_turn":
        adv1, adv2 = rloo(r1, groups), zeros
    elif obj.stage == 1:
        adv1, adv2 = zeros, rloo(r2, groups)
    else:
        shaped = r2 + obj.alpha * (r2 - r1)
        # Attempt 1 is credited with its own reward (discount 0) or with the episode's return, its own
        # and the shaped second reward that follows it (discount 1, score.stage2_credit=episode).
        adv1 = rloo(r1 + shaped if obj.episode_credit else r1, groups)
        # r̂2 = (1 + α)·r2 − α·r1, and −α·r1 is fixed before attempt 2 is sampled: subtracted exactly, it
        # leaves (1 + α)·RLOO(r2). Plain RLOO of r̂2 adds −α·RLOO(r1), zero in expectation on attempt 2's
        # tokens but as large as the signal: the same expected gradient with that noise gone.
        adv2 = (1 + obj.alpha) * rloo(r2, groups) if obj.attempt1_baseline else rloo(shaped, groups)
    if obj.normalize:
        adv1, adv2 = _unit_std(adv1), _unit_std(adv2)
    return adv1, adv2


def _unit_std(adv: np.ndarray) -> np.ndarray:
    """adv / its std over the batch (RLOO advantages have mean 0 per prompt already); all-zero stays zero."""
    std = adv.std()
    return adv / std if std > 1e-8 else adv


def pair_count(adv2: np.ndarray, obj: Objective) -> int:
    """The imitation methods' normaliser: the number of (wrong, right) pairs in the global batch, at
    least 1 (a batch without pairs has a zero imitation term anyway). 1 for the others (unused)."""
    return max(1, int((np.asarray(adv2) > 0).sum())) if obj.method in IMITATION else 1


def pair_loss(logp: torch.Tensor, segment: torch.Tensor, weight: torch.Tensor, total_rows: int) -> torch.Tensor:
    """SCoRe's auxiliary Pair-SFT term for these rows [x, y1, p, y*]: -Σ weight·log π(y*) / total_rows,
    `weight` per row (λ, or 0 for a row that only keeps the ranks' passes in step), `total_rows` of the
    whole batch."""
    return -(weight * (logp * (segment == ATTEMPT2).float()).sum(-1)).sum() / total_rows


def importance_weights(logp: torch.Tensor, sample_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """min(π/μ, cap) per token, from the learner's and the sampler's log-probs; constant (detached)."""
    return torch.exp(logp.detach() - sample_logp).clamp(max=cap)


def score_loss(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    segment: torch.Tensor,
    adv1: torch.Tensor,
    adv2: torch.Tensor,
    obj: Objective,
    total_traces: int,
    sample_logp: torch.Tensor | None = None,
    total_pairs: int = 1,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The stage's loss for these rows, normalised by `total_traces` of the whole (sharded) batch;
    the imitation methods' term by `total_pairs` instead (`pair_count` of the whole batch's adv2).
    `sample_logp` (the engine's log-probs of the sampled tokens) is needed when obj.is_cap is set."""
    in1 = (segment == ATTEMPT1).float()
    in2 = (segment == ATTEMPT2).float()
    if obj.method == "single_turn":
        in2 = torch.zeros_like(in2)  # attempt 2 is not trained: no policy term and no KL on it
    diff = logp - ref_logp.detach()
    k2 = 0.5 * diff.pow(2)
    sum1 = lambda x: (x * in1).sum(-1)  # noqa: E731
    sum2 = lambda x: (x * in2).sum(-1)  # noqa: E731

    weighted = logp if obj.is_cap is None else importance_weights(logp, sample_logp, obj.is_cap) * logp
    policy = -(adv1 * sum1(weighted) + adv2 * sum2(weighted))
    kl_weight1 = obj.beta2 if (obj.stage == 1 and obj.method == "score") else obj.beta1
    kl_weight2 = obj.beta1
    if obj.offline:  # the paper's offline baselines are plain supervised fine-tuning
        kl_weight1 = kl_weight2 = 0.0
    penalty = kl_weight1 * sum1(k2) + kl_weight2 * sum2(k2)
    policy_norm = total_pairs if obj.method in IMITATION else total_traces
    loss = policy.sum() / policy_norm + penalty.sum() / total_traces

    with torch.no_grad():
        d = diff.detach()
        k3 = torch.expm1(-d) + d
        stats = {
            "policy_loss": float(policy.sum()) / policy_norm,
            "kl_penalty": float(penalty.sum()) / total_traces,
            "kl_t1": float(sum1(k3).sum()) / total_traces,
            "kl_t2": float(sum2(k3).sum()) / total_traces,
        }
    return loss, stats
