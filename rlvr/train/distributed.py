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


def global_max(value: float) -> float:
    """The largest of one float per rank (e.g. elapsed time, so every rank stops together)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def global_min(value: float) -> float:
    """The smallest of one float per rank."""
    return -global_max(-value)


def init_from_env() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1): gloo on CPU, NCCL on GPUs.
    Returns True when this call created the group (the caller then destroys it at the end)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def from_rank0(fn):
    """fn() run on rank 0 only, its result (or its exception) given to every rank, so a check
    that touches the file system (is the output folder free?) happens once and fails everywhere."""
    if not is_distributed():
        return fn()
    box = [None, None]
    if rank() == 0:
        try:
            box[0] = fn()
        except Exception as e:  # noqa: BLE001 - re-raised on every rank below
            box[1] = e
    dist.broadcast_object_list(box, src=0)
    if box[1] is not None:
        raise box[1]
    return box[0]


def gather_objects(obj) -> list:
    """One picklable object per rank, as a list on every rank."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


# how each per-step metric combines across ranks; anything else is averaged (equal shards)
_SUMMED = ("generated_tokens", "kept_rollouts", "reward_errors", "loss", "value_loss", "value_clip_frac",
           # per-token means, each rank's share already divided by the global token count
           "clip_frac", "entropy", "kl", "approx_kl", "logprob_mismatch", "ratio_mean")
_MAXED = ("length_max", "ratio_max", "time_rollout", "time_update")
_SAME = ("reward_std", "grad_norm", "critic_grad_norm", "lr")  # computed from global sums: rank 0's
_MINNED = ("ratio_min",)


def reduce_metrics(row: dict) -> dict:
    """A step's metrics over the whole batch, from each rank's shard."""
    if not is_distributed():
        return row
    rows = gather_objects(row)
    out = {}
    for key, value in row.items():
        values = [r.get(key) for r in rows if isinstance(r.get(key), (int, float))]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or len(values) != len(rows):
            out[key] = value
        elif key in _SAME:
            out[key] = value if rank() == 0 else values[0]
        elif key in _SUMMED:
            out[key] = sum(values)
        elif key in _MAXED:
            out[key] = max(values)
        elif key in _MINNED:
            out[key] = min(values)
        else:
            out[key] = sum(values) / len(values)
    return out


def check_replicas_equal(model) -> None:
    """Every rank must hold the same weights after training (same start, summed gradients,
    same optimizer steps); a mismatch means a rank skipped a collective or diverged."""
    if not is_distributed():
        return
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    sums = gather_objects(float(total))
    if max(sums) != min(sums):
        raise RuntimeError(f"replicas diverged: parameter sums per rank {sums}")
