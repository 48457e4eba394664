"""Advantage estimators: rewards of a batch of rollouts -> one advantage per rollout.

Every estimator has the signature `(AdvantageInputs) -> Tensor[B]` and is registered by name
in `ADVANTAGES`; callers go through `compute(name, inputs)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rlvr.registry import Registry


@dataclass(frozen=True)
class AdvantageInputs:
    rewards: Tensor  # [B] float, one scalar reward per rollout
    group_ids: Tensor  # [B] long, rollouts of one prompt share an id; any order, any group sizes
    eps: float = 1e-6  # added to the group std so a group with equal rewards gives 0, not NaN


ADVANTAGES = Registry("advantage estimator")


def compute(name: str, inputs: AdvantageInputs) -> Tensor:
    """Advantages [B] from the estimator registered as `name`."""
    return ADVANTAGES.get(name)(inputs)


def _group_sums(values: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """Sum of `values` [B] within each group: [num_groups], index [B] in 0..num_groups-1."""
    return values.new_zeros(num_groups).index_add_(0, index, values)


@ADVANTAGES.register("grpo")
def grpo(inputs: AdvantageInputs) -> Tensor:
    """Group-normalised outcome advantages, [B] -> [B].

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps), the outcome-supervision advantage of
    DeepSeekMath (arXiv 2402.03300, sec. 4.1.2). The paper does not say which std; we use the
    unbiased one (Bessel's correction), as verl and TRL do. A group of one rollout has no
    spread to compare against and gets advantage 0.
    """
    rewards = inputs.rewards  # [B]
    # Map arbitrary (non-contiguous) ids to 0..G-1 so groups can be summed with index_add_.
    _, index, counts = torch.unique(inputs.group_ids, return_inverse=True, return_counts=True)
    n = counts.to(rewards.dtype)  # [G]
    mean = _group_sums(rewards, index, len(counts)) / n  # [G]
    centred = rewards - mean[index]  # [B]
    # Two passes (mean, then squared deviations) rather than E[r^2] - E[r]^2, which cancels badly.
    # For a group of one, centred is 0 and n - 1 is clamped to 1, so std = 0 and A = 0 / eps = 0.
    var = _group_sums(centred.square(), index, len(counts)) / (n - 1).clamp(min=1)  # [G]
    return centred / (var.sqrt()[index] + inputs.eps)  # [B]
