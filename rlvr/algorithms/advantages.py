"""Advantage estimators: rewards of a batch of rollouts -> advantages.

Every estimator has the signature `(AdvantageInputs) -> Tensor` and is registered by name in
`ADVANTAGES`; callers go through `compute(name, inputs)`. Outcome-level estimators (grpo,
dr_grpo, rloo) give one advantage per rollout, [B]; token-level ones (reinforce_pp,
reinforce_pp_baseline, gae) give one per token, [B,T], exactly 0 off the response mask.

Token-level convention: the outcome reward `rewards[i]` is earned at the *last* response token
of row i, `token_rewards` (e.g. -beta * KL for KL-in-reward) are added at every response token,
and the value after the last response token is 0 (the episode ends there). Each row's response
tokens form one contiguous run (anywhere in the row, possibly empty); a row with no response
tokens gets all-zero advantages and its outcome reward is never seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rlvr.registry import Registry


@dataclass(frozen=True)
class AdvantageInputs:
    rewards: Tensor  # [B] float, one scalar (outcome) reward per rollout
    group_ids: Tensor  # [B] long, rollouts of one prompt share an id; any order, any group sizes
    eps: float = 1e-6  # added to a std before dividing, so zero spread gives 0, not NaN
    response_mask: Tensor | None = None  # [B,T] bool, one contiguous run of True per row (or none)
    token_rewards: Tensor | None = None  # [B,T] float, per-token rewards on top of the outcome
    values: Tensor | None = None  # [B,T] float, critic V(s_t): state before emitting token t
    gamma: float = 1.0  # discount per token
    lam: float = 1.0  # GAE lambda
    # sum over every process of a tensor of partial sums (distributed.global_sum), for the batch
    # statistics of reinforce_pp's whitening when this process holds only its share of the batch
    reduce: Callable[[Tensor], Tensor] | None = None
    # [B] bool: the rows the update will train on, whose tokens alone set reinforce_pp's whitening
    # statistics (None: every row). A row left out (DAPO's truncated ones) still gets its advantage.
    whiten_rows: Tensor | None = None


ADVANTAGES = Registry("advantage estimator")


def compute(name: str, inputs: AdvantageInputs) -> Tensor:
    """Advantages, [B] or [B,T], from the estimator registered as `name`."""
    return ADVANTAGES.get(name)(inputs)


def _require(inputs: AdvantageInputs, field: str, estimator: str) -> Tensor:
    value = getattr(inputs, field)
    if value is None:
        raise ValueError(f"advantage estimator {estimator!r} needs AdvantageInputs.{field}")
    return value


def _outcome_only(inputs: AdvantageInputs, estimator: str) -> None:
    # A [B] estimator has nowhere to put per-token rewards; dropping them silently would turn
    # KL-in-reward off without a trace.
    if inputs.token_rewards is not None:
        raise ValueError(
            f"advantage estimator {estimator!r} is outcome-level and cannot use "
            "AdvantageInputs.token_rewards; use a token-level estimator (reinforce_pp, gae)"
        )


def _group_sums(values: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """Sum of `values` [B] within each group: [num_groups], index [B] in 0..num_groups-1."""
    return values.new_zeros(num_groups).index_add_(0, index, values)


def _group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Per-rollout group mean [B], group size [B], group index [B] in 0..G-1, and G."""
    # Map arbitrary (non-contiguous) ids to 0..G-1 so groups can be summed with index_add_.
    _, index, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    n = counts.to(rewards.dtype)  # [G]
    mean = _group_sums(rewards, index, len(counts)) / n  # [G]
    # a group whose rewards are all equal has that reward as its mean, exactly: summed in float32,
    # eight rewards of 0.7 average to 0.7 plus an ulp, which grpo's division by a std of ~1e-8 would
    # blow up into advantages of ~0.06 for a group that carries no signal
    lo = torch.full_like(mean, float("inf")).scatter_reduce(0, index, rewards, "amin")  # [G]
    hi = torch.full_like(mean, float("-inf")).scatter_reduce(0, index, rewards, "amax")  # [G]
    mean = torch.where(lo == hi, hi, mean)  # [G]
    return mean[index], n[index], index, len(counts)  # [B], [B], [B], G


@ADVANTAGES.register("grpo")
def grpo(inputs: AdvantageInputs) -> Tensor:
    """Group-normalised outcome advantages, [B] -> [B].

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps), the outcome-supervision advantage of
    DeepSeekMath (arXiv 2402.03300, sec. 4.1.2). The paper does not say which std; we use the
    unbiased one (Bessel's correction), as verl and TRL do. A group of one rollout has no
    spread to compare against and gets advantage 0.
    """
    _outcome_only(inputs, "grpo")
    rewards = inputs.rewards  # [B]
    mean, n, index, num_groups = _group_stats(rewards, inputs.group_ids)  # [B], [B], [B]
    centred = rewards - mean  # [B]
    # Two passes (mean, then squared deviations) rather than E[r^2] - E[r]^2, which cancels badly.
    # For a group of one, centred is 0 and n - 1 is clamped to 1, so std = 0 and A = 0 / eps = 0.
    var = _group_sums(centred.square(), index, num_groups)[index] / (n - 1).clamp(min=1)  # [B]
    return centred / (var.sqrt() + inputs.eps)  # [B]


@ADVANTAGES.register("dr_grpo")
def dr_grpo(inputs: AdvantageInputs) -> Tensor:
    """Group-centred outcome advantages without std division, [B] -> [B].

    A_i = r_i - mean(r_group): Dr. GRPO (arXiv 2503.20783) drops GRPO's division by
    the group std, which up-weights prompts that are nearly always or never solved. A group of
    one gets 0.
    """
    _outcome_only(inputs, "dr_grpo")
    mean, _, _, _ = _group_stats(inputs.rewards, inputs.group_ids)  # [B]
    return inputs.rewards - mean  # [B]


@ADVANTAGES.register("rloo")
def rloo(inputs: AdvantageInputs) -> Tensor:
    """REINFORCE leave-one-out advantages, [B] -> [B].

    A_i = r_i - mean of the *other* rollouts of its group = G / (G - 1) * (r_i - mean(r_group))
    (Ahmadian et al., arXiv 2402.14740): the baseline does not depend on r_i, so the
    estimate stays unbiased. A group of one has no other member and gets 0.
    """
    _outcome_only(inputs, "rloo")
    rewards = inputs.rewards  # [B]
    mean, n, _, _ = _group_stats(rewards, inputs.group_ids)  # [B], [B]
    # r - (n * mean - r) / (n - 1) = n * (r - mean) / (n - 1). For n = 1 the numerator is
    # exactly 0 and the clamp avoids 0/0.
    return n * (rewards - mean) / (n - 1).clamp(min=1)  # [B]


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """x [B,T] with 0 where mask is False; where() so garbage padding cannot leak."""
    return torch.where(mask, x, torch.zeros_like(x))


def _token_level_rewards(inputs: AdvantageInputs, outcome: Tensor, mask: Tensor) -> Tensor:
    """r_t [B,T]: outcome [B] on each row's last response token plus token_rewards, 0 off-mask."""
    # Response tokens are contiguous, so the last one is the masked token whose successor is not.
    after = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)  # [B,T] mask at t+1
    last = mask & ~after  # [B,T], one True per non-empty row
    r = torch.where(last, outcome.unsqueeze(-1), 0.0)  # [B,T]
    if inputs.token_rewards is not None:
        r = r + _masked(inputs.token_rewards, mask)
    return r


def _returns_to_go(r: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """G_t = r_t + gamma * G_{t+1} [B,T] within each row's response, 0 off-mask."""
    out = torch.zeros_like(r)  # [B,T]
    nxt = torch.zeros_like(r[:, 0])  # [B], G after the last position; 0 past the response
    for t in reversed(range(r.shape[1])):
        nxt = torch.where(mask[:, t], r[:, t] + gamma * nxt, 0.0)  # [B]
        out[:, t] = nxt
    return out


def whiten(x: Tensor, mask: Tensor, eps: float = 1e-6, reduce: Callable[[Tensor], Tensor] | None = None,
           rows: Tensor | None = None) -> Tensor:
    """x [B] or [B,T] shifted and scaled to mean 0, std 1 over the entries where mask [B] or
    [B,T] is True; 0 elsewhere. PPO implementations whiten GAE advantages over the batch: with
    a critic the advantages need not average 0, and a biased critic would otherwise push every
    sampled token up (or down) at once. `reduce` sums partial sums over processes, so that a
    process holding part of the batch uses the whole batch's mean and std. `rows` [B] bool: only
    those rows' entries set the mean and std (the rows an update trains on; every masked entry
    is still shifted and scaled)."""
    return _whiten(x, mask, eps, reduce, rows)


def _whiten(x: Tensor, mask: Tensor, eps: float, reduce: Callable[[Tensor], Tensor] | None = None,
            rows: Tensor | None = None) -> Tensor:
    """(x - mean) / (std + eps) over every masked entry of the batch (of all processes, with
    `reduce`; of `rows` only, when given), 0 off-mask. Two passes, mean then centred squares, as
    the one-pass formula loses precision when the mean is large against the spread."""
    reduce = reduce or (lambda t: t)
    stats = mask if rows is None else mask & rows.view(-1, *[1] * (mask.dim() - 1))  # [B] or [B,T]
    n, total = reduce(torch.stack([stats.sum().to(x.dtype), _masked(x, stats).sum()]))  # [], []
    mean = total / n.clamp(min=1)  # []
    centred = _masked(x - mean, mask)  # [B,T]
    # Unbiased std, as in grpo (and verl's masked_whiten); with one token, n - 1 clamps to 1
    # and the single centred value is 0, so the result is 0 rather than NaN.
    var = reduce(_masked(centred, stats).square().sum()) / (n - 1).clamp(min=1)  # []
    return centred / (var.sqrt() + eps)


def _reinforce_pp(inputs: AdvantageInputs, outcome: Tensor, estimator: str) -> Tensor:
    mask = _require(inputs, "response_mask", estimator)  # [B,T]
    r = _token_level_rewards(inputs, outcome, mask)  # [B,T]
    return _whiten(_returns_to_go(r, mask, inputs.gamma), mask, inputs.eps, inputs.reduce, inputs.whiten_rows)  # [B,T]


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(inputs: AdvantageInputs) -> Tensor:
    """REINFORCE++ advantages (arXiv 2501.03262), [B] rewards -> [B,T].

    G_t = sum_{k >= t in the response} gamma^(k - t) r_k, with r_k = token_rewards_k plus the
    outcome reward on the last response token; then whitened over all response tokens of the
    batch: A_t = (G_t - mean) / (std + eps). No critic and no per-prompt baseline: the global
    normalisation is the only baseline. The paper does not say which std; we use the unbiased
    one, the same choice as grpo and verl's masked_whiten (with thousands of tokens the two
    differ negligibly). Needs response_mask.
    """
    return _reinforce_pp(inputs, inputs.rewards, "reinforce_pp")


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline(inputs: AdvantageInputs) -> Tensor:
    """REINFORCE++-baseline (arXiv 2501.03262), [B] rewards -> [B,T]: as reinforce_pp, but the
    outcome reward first has its group mean subtracted (a group of one contributes 0), which
    removes the per-prompt difficulty before the global whitening. Token rewards are not
    centred. Needs response_mask."""
    mean, _, _, _ = _group_stats(inputs.rewards, inputs.group_ids)  # [B]
    return _reinforce_pp(inputs, inputs.rewards - mean, "reinforce_pp_baseline")


@ADVANTAGES.register("gae")
def gae(inputs: AdvantageInputs) -> Tensor:
    """Generalised Advantage Estimation (arXiv 1506.02438, eq. 16), [B] rewards -> [B,T].

        delta_t = r_t + gamma * V_{t+1} - V_t,    A_t = delta_t + gamma * lam * A_{t+1},

    with r_t = token_rewards_t plus the outcome reward on the last response token, and
    V_{t+1} = 0 and A_{t+1} = 0 after the last response token (terminal state). Not whitened
    here. Needs response_mask and values; the value targets are
    `returns_from_advantages(A, values, mask)`.
    """
    mask = _require(inputs, "response_mask", "gae")  # [B,T]
    values = _masked(_require(inputs, "values", "gae"), mask)  # [B,T]
    r = _token_level_rewards(inputs, inputs.rewards, mask)  # [B,T]
    gamma, gl = inputs.gamma, inputs.gamma * inputs.lam
    out = torch.zeros_like(r)  # [B,T]
    next_value = torch.zeros_like(r[:, 0])  # [B], V_{t+1}; 0 past the response
    next_adv = torch.zeros_like(r[:, 0])  # [B], A_{t+1}
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - values[:, t]  # [B]
        # Off-mask both carries reset to 0, so the last response token sees a terminal state.
        next_adv = torch.where(mask[:, t], delta + gl * next_adv, 0.0)  # [B]
        next_value = values[:, t]  # already 0 off-mask
        out[:, t] = next_adv
    return out


def returns_from_advantages(advantages: Tensor, values: Tensor, response_mask: Tensor) -> Tensor:
    """Value-loss targets [B,T] = A + V on the mask, 0 elsewhere.

    With GAE advantages this is the lambda-return R_t^lambda = A_t^{GAE(gamma, lam)} + V_t
    (arXiv 1506.02438; lam = 1 gives the discounted Monte-Carlo return, lam = 0 the
    one-step TD target r_t + gamma * V_{t+1}).
    """
    return _masked(advantages + values, response_mask)  # [B,T]
