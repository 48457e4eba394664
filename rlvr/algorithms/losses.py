"""Policy-gradient objectives: per-token losses [B,T], before aggregation.

Every loss has the signature
    `(LossInputs, *, clip_low, clip_high, kl_coef, kl_estimator, clip_ratio_c, entropy_coef)
     -> LossOutput`
and is registered by name in `LOSSES`; callers go through `policy_loss(name, inputs, ...)`.
Reducing the per-token loss to a scalar is `aggregation.aggregate`'s job, not the loss's.
The critic's loss, `value_loss`, is a plain function: it is not a policy objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlvr.algorithms.kl import kl
from rlvr.registry import Registry


@dataclass(frozen=True)
class LossInputs:
    logprobs: Tensor  # [B,T] float, under the policy being trained (requires grad)
    old_logprobs: Tensor  # [B,T] float, under the policy that sampled the rollouts
    advantages: Tensor  # [B] (one per rollout) or [B,T] (one per token) float
    response_mask: Tensor  # [B,T] bool, True on tokens that count in the loss
    ref_logprobs: Tensor | None = None  # [B,T] float, under the frozen reference policy
    entropy: Tensor | None = None  # [B,T] float, per-token policy entropy, with gradient


@dataclass
class LossOutput:
    per_token: Tensor  # [B,T] loss to minimise per token, 0 where response_mask is False
    ratio: Tensor  # [B,T] pi / pi_old, detached, 1 where response_mask is False
    clipped: Tensor  # [B,T] bool, True where clipping zeroes the token's policy gradient
    kl: Tensor | None  # [B,T] detached per-token KL(pi || ref) (0 off-mask), when ref is given


LOSSES = Registry("policy loss")

# Losses whose advantage term is A times a function of the ratio, so that with A = 0 on every
# token of a row the row's loss is 0 and its gradient exactly 0 whatever the logprobs. A loss
# registered elsewhere is not assumed to have this property.
_VANISH_AT_ZERO_ADVANTAGE = frozenset({"ppo_clip", "gspo"})


def policy_loss(
    name: str,
    inputs: LossInputs,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
    clip_ratio_c: float = 0.0,
    entropy_coef: float = 0.0,
) -> LossOutput:
    """Per-token loss from the objective registered as `name`; see `LossOutput` for shapes.

    clip_ratio_c > 1 turns on dual clipping (0 = off); entropy_coef > 0 subtracts
    entropy_coef * LossInputs.entropy from every token's loss (an entropy bonus).
    """
    fn = LOSSES.get(name)
    return fn(
        inputs,
        clip_low=clip_low,
        clip_high=clip_high,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
        clip_ratio_c=clip_ratio_c,
        entropy_coef=entropy_coef,
    )


def rows_with_gradient(
    name: str, advantages: Tensor, response_mask: Tensor, *, kl_coef: float, entropy_coef: float
) -> Tensor:
    """[B] bool: False for a row whose loss and gradient under `policy_loss(name, ...)` are exactly
    zero for any logprobs, so its forward and backward can be skipped without changing the
    update (it still counts in the aggregation's normaliser). That holds when every response
    token of the row has advantage exactly 0 (a uniform group under GRPO, Dr. GRPO or RLOO with
    0/1 rewards), the loss is one whose advantage term vanishes with A, and there is no KL or
    entropy term (kl_coef = entropy_coef = 0), which do not vanish. Otherwise every row is True.

    advantages [B] or [B,T], response_mask [B,T] bool.
    """
    keep = torch.ones(len(response_mask), dtype=torch.bool, device=response_mask.device)
    if name not in _VANISH_AT_ZERO_ADVANTAGE or kl_coef != 0 or entropy_coef != 0:
        return keep
    adv = advantages.to(response_mask.device)
    if adv.dim() == 1:
        return adv != 0
    return ((adv != 0) & response_mask).any(-1)


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """x [B,T] with 0 where mask is False; where() rather than x * mask so inf/NaN padding
    cannot leak into values or gradients."""
    return torch.where(mask, x, torch.zeros_like(x))


def _clip_objective(
    ratio: Tensor, adv: Tensor, clip_low: float, clip_high: float, clip_ratio_c: float
) -> tuple[Tensor, Tensor]:
    """-min(ratio A, clip(ratio) A), dual-clipped when clip_ratio_c > 0: (loss, clipped) [B,T].

    ratio [B,T], adv [B,1] or [B,T]. Dual clip (Ye et al., arXiv 1912.09729): for A < 0
    the PPO loss grows without bound as the ratio grows; it is capped at -c * A, i.e. the
    objective is max(min(rA, clip(r)A), cA). The cap is constant, so its tokens count as
    clipped.
    """
    if clip_ratio_c != 0 and clip_ratio_c <= 1:
        raise ValueError(f"clip_ratio_c must be > 1 (0 disables dual clip); got {clip_ratio_c}")
    per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv)
    # The min picks the constant clipped term exactly when the ratio has moved past the
    # bound in the direction the advantage rewards; there the token's gradient is 0.
    clipped = ((adv > 0) & (ratio > 1 + clip_high)) | ((adv < 0) & (ratio < 1 - clip_low))
    if clip_ratio_c > 0:
        cap = -clip_ratio_c * adv  # [B,1] or [B,T], > 0 where A < 0
        capped = (adv < 0) & (per_token > cap)  # [B,T]
        # where() rather than minimum(): at a tie minimum() would split the gradient.
        per_token = torch.where(capped, cap.expand_as(per_token), per_token)
        clipped = clipped | capped
    return per_token, clipped


def _regularise(
    per_token: Tensor,
    inputs: LossInputs,
    logprobs: Tensor,
    kl_coef: float,
    kl_estimator: str,
    entropy_coef: float,
) -> tuple[Tensor, Tensor | None]:
    """Adds kl_coef * KL and -entropy_coef * entropy to per_token [B,T]; returns it and the KL
    [B,T] (None without ref_logprobs). logprobs must already be masked."""
    mask = inputs.response_mask
    kl_tok = None
    if inputs.ref_logprobs is not None:
        kl_tok = kl(kl_estimator, logprobs, _masked(inputs.ref_logprobs, mask))  # [B,T]
    if kl_coef > 0:
        if kl_tok is None:
            raise ValueError("kl_coef > 0 needs LossInputs.ref_logprobs; got None")
        per_token = per_token + kl_coef * kl_tok
    if entropy_coef > 0:
        if inputs.entropy is None:
            raise ValueError("entropy_coef > 0 needs LossInputs.entropy; got None")
        per_token = per_token - entropy_coef * _masked(inputs.entropy, mask)
    return per_token, kl_tok


@LOSSES.register("ppo_clip")
def ppo_clip(
    inputs: LossInputs,
    *,
    clip_low: float,
    clip_high: float,
    kl_coef: float,
    kl_estimator: str,
    clip_ratio_c: float,
    entropy_coef: float,
) -> LossOutput:
    """Clipped surrogate of PPO (arXiv 1707.06347 eq. 7) as GRPO uses it (arXiv 2402.03300
    eq. 3), with separate lower/upper clip ranges as in DAPO's Clip-Higher (arXiv 2503.14476
    sec. 3.1):

        loss_t = -min(ratio_t * A_t, clip(ratio_t, 1 - clip_low, 1 + clip_high) * A_t)
                 + kl_coef * KL_t - entropy_coef * H_t,
        ratio_t = exp(logprobs_t - old_logprobs_t),

    optionally dual-clipped (clip_ratio_c > 1, arXiv 1912.09729): where A_t < 0 the loss is
    capped at -clip_ratio_c * A_t. Departs from GRPO in that the KL term is only added when
    kl_coef > 0 (DAPO drops it).
    """
    mask = inputs.response_mask  # [B,T] bool
    logprobs = _masked(inputs.logprobs, mask)  # [B,T]
    # Masking the difference before exp keeps padding at ratio 1, so garbage logprobs
    # there cannot overflow to inf and turn the gradient into NaN.
    ratio = torch.exp(logprobs - _masked(inputs.old_logprobs, mask))  # [B,T]
    adv = inputs.advantages
    adv = adv.unsqueeze(-1) if adv.dim() == 1 else adv  # [B,1] or [B,T]
    per_token, clipped = _clip_objective(ratio, adv, clip_low, clip_high, clip_ratio_c)  # [B,T]
    per_token, kl_tok = _regularise(
        per_token, inputs, logprobs, kl_coef, kl_estimator, entropy_coef
    )  # [B,T]
    return LossOutput(
        per_token=_masked(per_token, mask),
        ratio=ratio.detach(),
        clipped=clipped & mask,
        kl=None if kl_tok is None else kl_tok.detach(),
    )


@LOSSES.register("gspo")
def gspo(
    inputs: LossInputs,
    *,
    clip_low: float,
    clip_high: float,
    kl_coef: float,
    kl_estimator: str,
    clip_ratio_c: float,
    entropy_coef: float,
) -> LossOutput:
    """Group Sequence Policy Optimization (arXiv 2507.18071): one
    length-normalised importance ratio per sequence instead of one per token,

        s_i = exp(mean over row i's response tokens of (logprobs - old_logprobs)),

    clipped once for the whole sequence. We use the paper's GSPO-token form (sec. 4.3),
    s_i,t = sg(s_i) * exp(logprobs_t - sg(logprobs_t)): its value is s_i and its gradient
    w.r.t. logprobs_t is s_i, so

        loss_t = -min(s_i,t * A_i, clip(s_i,t, 1 - clip_low, 1 + clip_high) * A_i)
                 + kl_coef * KL_t - entropy_coef * H_t

    averaged per sequence (seq_mean_token_mean aggregation) has exactly GSPO's gradient
    -s_i A_i / |y_i| * sum_t grad logprobs_t on unclipped sequences. Advantages must be
    per-sequence, [B]. Because s_i is a geometric mean, it stays much closer to 1 than token
    ratios: the paper's clip ranges are tiny (clip_low = 3e-4, clip_high = 4e-4), not 0.2.
    Dual clip (clip_ratio_c > 1) caps at -clip_ratio_c * A_i as in ppo_clip.
    """
    mask = inputs.response_mask  # [B,T] bool
    adv = inputs.advantages
    if adv.dim() != 1:
        raise ValueError(
            f"gspo needs sequence-level LossInputs.advantages of shape [B]; got {tuple(adv.shape)}"
        )
    logprobs = _masked(inputs.logprobs, mask)  # [B,T]
    log_ratio = logprobs - _masked(inputs.old_logprobs, mask)  # [B,T], 0 off-mask
    # An empty response has mean log-ratio 0 (s = 1); the clamp avoids 0/0.
    log_s = log_ratio.sum(-1) / mask.sum(-1).clamp(min=1)  # [B]
    seq_ratio = torch.exp(log_s.detach())  # [B], sg(s_i)
    ratio = seq_ratio.unsqueeze(-1) * torch.exp(logprobs - logprobs.detach())  # [B,T], = s_i
    per_token, clipped = _clip_objective(
        ratio, adv.unsqueeze(-1), clip_low, clip_high, clip_ratio_c
    )  # [B,T]
    per_token, kl_tok = _regularise(
        per_token, inputs, logprobs, kl_coef, kl_estimator, entropy_coef
    )  # [B,T]
    return LossOutput(
        per_token=_masked(per_token, mask),
        ratio=torch.where(mask, seq_ratio.unsqueeze(-1), 1.0),  # [B,T]
        clipped=clipped & mask,
        kl=None if kl_tok is None else kl_tok.detach(),
    )


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, response_mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """Critic loss per token [B,T] and where its clipped branch is active [B,T] bool.

        loss_t = 0.5 * max((V_t - R_t)^2, (V_old_t + clip(V_t - V_old_t, -c, c) - R_t)^2)

    for c = clip_range > 0 (the value clipping of OpenAI's PPO baselines, examined by
    Engstrom et al., arXiv 2005.12729), else 0.5 * (V_t - R_t)^2. Both outputs are 0 / False
    off-mask. The second marks tokens where the clipped branch is strictly larger (its gradient
    is 0 there), for a clip-fraction metric.
    """
    mask = response_mask  # [B,T] bool
    v, old, ret = _masked(values, mask), _masked(old_values, mask), _masked(returns, mask)  # [B,T]
    loss = 0.5 * (v - ret).square()  # [B,T]
    clipped = torch.zeros_like(mask)  # [B,T] bool
    if clip_range > 0:
        v_clipped = old + torch.clamp(v - old, -clip_range, clip_range)  # [B,T]
        loss_clipped = 0.5 * (v_clipped - ret).square()  # [B,T]
        clipped = (loss_clipped > loss) & mask
        loss = torch.where(clipped, loss_clipped, loss)
    return _masked(loss, mask), clipped
