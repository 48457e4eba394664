"""Per-token estimators of KL(pi || ref) from tokens sampled from pi.

With log r = ref_logprobs - logprobs at a token sampled from pi, the three estimators of
Schulman's note "Approximating KL divergence" (2020) are
    k1 = -log r                 unbiased, high variance, can be negative;
    k2 = (log r)^2 / 2          biased, low variance, always >= 0;
    k3 = (r - 1) - log r        unbiased, low variance, always >= 0 (the one GRPO uses,
                                arXiv 2402.03300 eq. 4).
Each has the signature `(logprobs [B,T], ref_logprobs [B,T]) -> [B,T]`. None masks: the caller
zeroes padding (and should pass zeros there, so exp in k3 cannot overflow).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlvr.registry import Registry

KL = Registry("kl estimator")


def kl(name: str, logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token KL estimate [B,T] from the estimator registered as `name`."""
    return KL.get(name)(logprobs, ref_logprobs)


@KL.register("k1")
def k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return logprobs - ref_logprobs  # [B,T]


@KL.register("k2")
def k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    return 0.5 * (logprobs - ref_logprobs).square()  # [B,T]


@KL.register("k3")
def k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    log_ratio = ref_logprobs - logprobs  # [B,T], log(ref / pi)
    return torch.exp(log_ratio) - log_ratio - 1  # [B,T]
