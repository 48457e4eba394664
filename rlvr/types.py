"""Typed containers that cross component boundaries. Shapes are in the field comments.

B = rollouts in a batch (prompts x G), T = padded sequence length (prompt + response),
V = vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

import torch


@dataclass(frozen=True)
class Sample:
    """One problem of a task: what the model sees, the gold answer, and anything else."""

    prompt: str  # the problem text, before a prompt template is applied
    answer: str  # the gold final answer a verifier checks against
    solution: str | None = None  # a worked solution (for SFT), ending in the final answer
    meta: Mapping[str, Any] = field(default_factory=dict)  # e.g. {"op": "+", "digits": 3}
    id: str = ""


@dataclass(frozen=True)
class Completion:
    """One sampled response, as the rollout engine produced it."""

    text: str  # decoded response, special tokens removed
    token_ids: list[int]  # [L] response tokens, including the EOS token if one was sampled
    logprobs: list[float]  # [L] logprob of each token under the distribution it was sampled from
    finish_reason: str  # "stop" (EOS sampled) or "length" (max_new_tokens reached)


@dataclass
class RolloutBatch:
    """Everything the policy update needs, for B rollouts, left-aligned prompt+response."""

    input_ids: torch.Tensor  # [B, T] long, prompt then response then padding
    attention_mask: torch.Tensor  # [B, T] bool, True on real (non-pad) tokens
    response_mask: torch.Tensor  # [B, T] bool, True on response tokens that count in the loss
    old_logprobs: torch.Tensor  # [B, T] float, logprob of token t under the rollout policy (0 off-response)
    advantages: torch.Tensor  # [B] (one per rollout) or [B, T] (one per token) float
    rewards: torch.Tensor  # [B] float
    group_ids: torch.Tensor  # [B] long, rollouts of one prompt share an id
    ref_logprobs: torch.Tensor | None = None  # [B, T] float, under the frozen reference model
    old_values: torch.Tensor | None = None  # [B, T] float, critic values at rollout time (PPO)
    returns: torch.Tensor | None = None  # [B, T] float, the critic's regression targets (PPO)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: torch.Tensor | slice) -> "RolloutBatch":
        """Rows `index` of every tensor (a micro-batch, or the rollouts kept for the update)."""
        return RolloutBatch(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                               for f in fields(self)})
