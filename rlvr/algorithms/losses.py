"""Policy-gradient objectives: per-token losses [B,T], before aggregation.

Every loss has the signature
    `(LossInputs, *, clip_low, clip_high, kl_coef, kl_estimator) -> LossOutput`
and is registered by name in `LOSSES`; callers go through `policy_loss(name, inputs, ...)`.
Reducing the per-token loss to a scalar is `aggregation.aggregate`'s job, not the loss's.
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


@dataclass
class LossOutput:
    per_token: Tensor  # [B,T] loss to minimise per token, 0 where response_mask is False
    ratio: Tensor  # [B,T] pi / pi_old, detached, 1 where response_mask is False
    clipped: Tensor  # [B,T] bool, True where clipping zeroes the token's policy gradient
    kl: Tensor | None  # [B,T] detached per-token KL(pi || ref) (0 off-mask), when ref is given


LOSSES = Registry("policy loss")


def policy_loss(
    name: str,
    inputs: LossInputs,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    kl_coef: float = 0.0,
    kl_estimator: str = "k3",
) -> LossOutput:
    """Per-token loss from the objective registered as `name`; see `LossOutput` for shapes."""
    fn = LOSSES.get(name)
    return fn(
        inputs,
        clip_low=clip_low,
        clip_high=clip_high,
        kl_coef=kl_coef,
        kl_estimator=kl_estimator,
    )


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    """x [B,T] with 0 where mask is False; where() rather than x * mask so inf/NaN padding
    cannot leak into values or gradients."""
    return torch.where(mask, x, torch.zeros_like(x))


@LOSSES.register("ppo_clip")
def ppo_clip(
    inputs: LossInputs, *, clip_low: float, clip_high: float, kl_coef: float, kl_estimator: str
) -> LossOutput:
    """Clipped surrogate of PPO (arXiv 1707.06347 eq. 7) as GRPO uses it (arXiv 2402.03300
    eq. 3), with separate lower/upper clip ranges as in DAPO's Clip-Higher (arXiv 2503.14476
    sec. 3.1):

        loss_t = -min(ratio_t * A_t, clip(ratio_t, 1 - clip_low, 1 + clip_high) * A_t)
                 + kl_coef * KL_t,            ratio_t = exp(logprobs_t - old_logprobs_t).

    Departs from GRPO in that the KL term is only added when kl_coef > 0 (DAPO drops it).
    """
    mask = inputs.response_mask  # [B,T] bool
    logprobs = _masked(inputs.logprobs, mask)  # [B,T]
    # Masking the difference before exp keeps padding at ratio 1, so garbage logprobs
    # there cannot overflow to inf and turn the gradient into NaN.
    ratio = torch.exp(logprobs - _masked(inputs.old_logprobs, mask))  # [B,T]
    adv = inputs.advantages
    adv = adv.unsqueeze(-1) if adv.dim() == 1 else adv  # [B,1] or [B,T]
    unclipped = ratio * adv  # [B,T]
    clipped_obj = torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv  # [B,T]
    per_token = -torch.minimum(unclipped, clipped_obj)  # [B,T]
    # The min picks the constant clipped term exactly when the ratio has moved past the
    # bound in the direction the advantage rewards; there the token's gradient is 0.
    clipped = ((adv > 0) & (ratio > 1 + clip_high)) | ((adv < 0) & (ratio < 1 - clip_low))

    kl_tok = None
    if inputs.ref_logprobs is not None:
        kl_tok = kl(kl_estimator, logprobs, _masked(inputs.ref_logprobs, mask))  # [B,T]
    if kl_coef > 0:
        if kl_tok is None:
            raise ValueError("kl_coef > 0 needs LossInputs.ref_logprobs; got None")
        per_token = per_token + kl_coef * kl_tok
    return LossOutput(
        per_token=_masked(per_token, mask),
        ratio=ratio.detach(),
        clipped=clipped & mask,
        kl=None if kl_tok is None else kl_tok.detach(),
    )
