"""Loss aggregation: per-token losses [B,T] -> one scalar, with a *global* normaliser.

A mode is two functions: `total(per_token, response_mask)`, this micro-batch's summed
contribution, and `normalizer(response_mask, horizon)`, its share of the denominator (horizon:
the generation budget max_new_tokens, used only by constant_norm). The caller sums the
shares over every micro-batch (and rank) of the rollout batch and passes the sum to `aggregate`,
so summing `aggregate` over micro-batches gives exactly the full-batch loss: the loss does not
change with micro-batching, gradient accumulation or world size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from rlvr.registry import Registry


@dataclass(frozen=True)
class Aggregation:
    total: Callable[[Tensor, Tensor], Tensor]  # (per_token [B,T], response_mask [B,T]) -> scalar
    normalizer: Callable[[Tensor, int | None], Tensor]  # (response_mask [B,T], horizon) -> []


AGGREGATIONS = Registry("loss aggregation")


def normalizer(mode: str, response_mask: Tensor, horizon: int | None = None) -> Tensor:
    """This micro-batch's share [] of the global normaliser of `mode` (sum it over all).
    horizon is the max_new_tokens of generation; only constant_norm needs it."""
    return AGGREGATIONS.get(mode).normalizer(response_mask, horizon)


def aggregate(mode: str, per_token: Tensor, response_mask: Tensor, norm: Tensor | float) -> Tensor:
    """Scalar loss []: this micro-batch's contribution [B,T] -> [] divided by the global `norm`.

    norm is clamped at 1 so a batch with no response tokens at all gives 0, not 0/0.
    """
    total = AGGREGATIONS.get(mode).total(per_token, response_mask)
    return total / torch.as_tensor(norm, dtype=total.dtype, device=total.device).clamp(min=1)


def _masked_sum(per_token: Tensor, mask: Tensor) -> Tensor:
    """Row sums [B] of per_token [B,T] over mask; where() so padding values never leak."""
    return torch.where(mask, per_token, torch.zeros_like(per_token)).sum(-1)


def _token_sum_total(per_token: Tensor, mask: Tensor) -> Tensor:
    return _masked_sum(per_token, mask).sum()  # [B,T] -> []


def _token_mean_norm(mask: Tensor, horizon: int | None) -> Tensor:
    return mask.sum().to(torch.float32)  # [] number of response tokens


def _seq_mean_token_mean_total(per_token: Tensor, mask: Tensor) -> Tensor:
    # A sequence with no response tokens sums to 0; clamping its length at 1 avoids 0/0.
    return (_masked_sum(per_token, mask) / mask.sum(-1).clamp(min=1)).sum()  # [B,T] -> []


def _num_sequences(mask: Tensor, horizon: int | None) -> Tensor:
    return torch.tensor(float(mask.shape[0]), device=mask.device)  # [] number of sequences


def _constant_norm(mask: Tensor, horizon: int | None) -> Tensor:
    if horizon is None:
        raise ValueError("aggregation 'constant_norm' needs horizon (max_new_tokens); got None")
    return torch.tensor(float(mask.shape[0] * horizon), device=mask.device)  # [] B * horizon


# DAPO (arXiv 2503.14476 sec. 3.3, "token-level policy gradient loss"): every response token of
# the batch weighs the same, so long responses are not down-weighted.
AGGREGATIONS.register("token_mean")(Aggregation(_token_sum_total, _token_mean_norm))

# Original GRPO (arXiv 2402.03300 eq. 3): mean over each sequence's tokens, then over sequences.
AGGREGATIONS.register("seq_mean_token_mean")(
    Aggregation(_seq_mean_token_mean_total, _num_sequences)
)

# Summed token losses per sequence, averaged over sequences: the loss of a sequence's summed
# logprobs (REINFORCE on log pi(y|x)), so a long response weighs more than a short one.
AGGREGATIONS.register("seq_mean_token_sum")(Aggregation(_token_sum_total, _num_sequences))

# Dr. GRPO (arXiv 2503.20783): every token's loss divided by the same constant, the number of
# sequences times the generation budget, so neither the response length nor the batch's token
# count rescales a sequence's gradient.
AGGREGATIONS.register("constant_norm")(Aggregation(_token_sum_total, _constant_norm))
