"""The few collective operations the update needs, as no-ops in a single process.

A rollout batch split across ranks must give the same gradient as the whole batch in one
process. Two things make that true: the loss normaliser is summed over all ranks before any
rank divides by it (aggregation.py), and gradients are *summed* (not averaged) across ranks
afterwards, since each rank's loss is already its share of the global mean. DDP averages, which
would be right only when every rank holds the same number of tokens.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def global_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum over all ranks of a tensor (a new tensor; the input is left alone)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def sum_gradients(parameters) -> None:
    """Replace each parameter's .grad by its sum over ranks, in one flat all-reduce."""
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:  # every rank must send the same layout, even one whose batch touched nothing
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
