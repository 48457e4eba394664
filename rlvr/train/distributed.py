"""The few collective operations the update needs, as no-ops in a single process.

A rollout batch split across ranks must give the same gradient as the whole batch in one
process. Two things make that true: the loss normaliser is summed over all ranks before any
rank divides by it (aggregation.py), and gradients are *summed* (not averaged) across ranks
afterwards, since each rank's loss is already its share of the global mean. DDP averages, which
would be right only when every rank holds the same number of tokens.

With `model.fsdp` (FSDP2, `shard`) each rank holds a slice of every weight, gradient and
optimizer state instead of a whole copy. FSDP reduce-scatters each gradient as it is computed,
set here to the same sum; sum_gradients leaves those sharded parameters alone. Every forward of
a sharded model is a collective, so ranks run the same number of micro-batches (micro_batches).
"""

from __future__ import annotations

import math
from dataclasses import fields

import torch
import torch.distributed as dist

from rlvr.types import RolloutBatch


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
    """Replace each parameter's .grad by its sum over ranks, in one flat all-reduce. Parameters
    sharded by FSDP (DTensors) are skipped: their gradients were reduce-scattered in the backward.
    A parameter no rank computed a gradient for (an untied output layer a critic never runs)
    keeps .grad None, as in one process: AdamW then skips it, with no state and no decay."""
    from torch.distributed.tensor import DTensor

    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad and not isinstance(p, DTensor)]
    if not params:
        return
    anywhere = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8)  # [n] on the CPU: gloo
    dist.all_reduce(anywhere, op=dist.ReduceOp.MAX)
    params = [p for p, some in zip(params, anywhere.tolist()) if some]
    if not params:
        return
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


def is_sharded(module) -> bool:
    """Is `module` split across ranks by FSDP2 (`shard`)? Its parameters are then DTensors."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def shard(module, layers, param_dtype: torch.dtype | None = None) -> None:
    """FSDP2 over all ranks, in place: each of `layers` (the transformer blocks) is one group,
    whole only while it computes; the rest (embeddings, final norm, heads) is the root's group.
    FSDP divides the reduce-scattered gradients by the world size unless told otherwise; ours are
    summed (see the top of this file): divide factor 1, and a plain SUM collective, since factor 1
    would otherwise be sent as PREMUL_SUM, which gloo refuses. Build optimizers after this call:
    it replaces the parameters.

    `param_dtype` (the run's autocast dtype, bf16) is FSDP2's mixed precision: each group is
    gathered as a bf16 copy of its float32 shards (half the all-gather and the unsharded memory)
    and computes with it, under autocast all the same; gradients are reduce-scattered in float32
    into the float32 shards, which AdamW updates. Unlike single-process autocast, every weight
    (norms and embeddings too) computes in bf16 then, so the two agree to bf16 precision only."""
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    policy = {} if param_dtype is None else {"mp_policy": MixedPrecisionPolicy(param_dtype, reduce_dtype=torch.float32)}
    for layer in layers:
        fully_shard(layer, **policy)
    fully_shard(module, **policy)
    for m in module.modules():
        if isinstance(m, FSDPModule):  # these setters act on one module's group, not recursively
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)


def _whole(value, rank0_only: bool):
    """A DTensor gathered whole (a collective), else the value itself; with rank0_only, moved to
    rank 0's CPU memory and dropped (None) on the other ranks."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        value = value.full_tensor()
    if not rank0_only:
        return value
    if rank() != 0:
        return None
    return value.cpu() if torch.is_tensor(value) else value


def full_state_dict(module, rank0_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole (unsharded) weights of a sharded module, by the usual names; a collective, so
    every rank calls it. With rank0_only they are gathered into rank 0's CPU memory and the other
    ranks get None for each (what a checkpoint needs); otherwise every rank gets them on its device."""
    return {name: _whole(v, rank0_only) for name, v in module.state_dict().items()}


def iter_full_state(module):
    """(name, whole tensor) of a sharded module, gathered one tensor at a time as the caller
    iterates (a collective per tensor: every rank iterates alike), so no whole copy exists at once."""
    for name, value in module.state_dict().items():
        yield name, _whole(value, rank0_only=False)


def optimizer_state(module, optimizer) -> dict:
    """optimizer.state_dict(), whole: for a sharded module every moment is gathered onto rank 0 (a
    collective; the other ranks get None for each), so a checkpoint's optimizer state has the same
    layout with or without FSDP. (torch.distributed.checkpoint's get_optimizer_state_dict would
    first step a still-empty AdamW with lr 0, which advances its step count and so changes the bias
    correction of every later step.)"""
    sd = optimizer.state_dict()
    if not is_sharded(module):
        return sd
    return {**sd, "state": {i: {k: _whole(v, True) for k, v in s.items()} for i, s in sd["state"].items()}}


def load_optimizer_state(module, optimizer, state: dict) -> None:
    """optimizer.load_state_dict(state) from optimizer_state's layout. For a sharded module each rank
    first cuts its own slice of every moment; every rank read the same whole state, so no collective."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if is_sharded(module):
        params = [p for group in optimizer.param_groups for p in group["params"]]  # state_dict's numbering

        def mine(v, p):
            if isinstance(p, DTensor) and torch.is_tensor(v) and v.shape == p.shape:  # a moment, not the step count
                return distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
            return v

        slices = {i: {k: mine(v, params[i]) for k, v in s.items()} for i, s in state["state"].items()}
        state = {**state, "state": slices}
    optimizer.load_state_dict(state)


def pad_rows(batch: RolloutBatch, n: int) -> RolloutBatch:
    """`batch` and n blank rows after it: one attended token (id 0) and no response token each,
    so they cost a forward pass but add nothing to a token-masked loss, its gradient or metrics."""

    def grow(x):
        return None if x is None else torch.cat([x, x.new_zeros((n, *x.shape[1:]))])

    out = RolloutBatch(**{f.name: grow(getattr(batch, f.name)) for f in fields(batch)})
    out.attention_mask[len(batch) :, 0] = True
    return out


def micro_batches(batch: RolloutBatch, size: int, model):
    """(first row, micro-batch) for each slice of `size` rows. For a sharded model every rank
    runs as many as the rank with the most (a rank's share may be smaller, even empty): its extra
    ones are a blank row (pad_rows; first row None), which only joins the collectives."""
    n = -(-len(batch) // size)
    total = int(global_max(n)) if is_sharded(model) else n
    for i in range(total):
        if i < n:
            yield i * size, batch.select(slice(i * size, (i + 1) * size))
        else:
            yield None, pad_rows(batch.select(slice(0, 0)), 1)


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
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= gpus:  # NCCL needs a GPU of its own per rank; set_device would fail obscurely
            raise RuntimeError(
                f"torchrun started local rank {local_rank}, but this node has {gpus} visible GPU(s): "
                f"use --nproc-per-node {gpus} or fewer, or CUDA_VISIBLE_DEVICES= to train on the CPU (gloo)")
        torch.cuda.set_device(local_rank)
    # NCCL moves only CUDA tensors; the loop's counts and normalisers are CPU tensors, so CPU
    # collectives go through gloo in the same group
    dist.init_process_group("cpu:gloo,cuda:nccl" if backend == "nccl" else backend)
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
           "clip_frac", "entropy", "kl", "approx_kl", "logprob_mismatch", "ratio_mean", "zero_adv_skipped")
_MAXED = ("length_max", "ratio_max", "time_rollout", "time_update")
_SAME = ("reward_std", "grad_norm", "critic_grad_norm", "lr", "value_explained_var")  # computed from global sums: rank 0's
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


def check_replicas_equal(model, when: str = "after training") -> None:
    """Every rank must hold the same weights: from the same start, with summed gradients and the
    same optimizer steps. A mismatch at the start means a rank built other random weights; at the
    end, that a rank skipped a collective or diverged. A sharded model holds no replicas: each rank
    has its own slice, so there is nothing to compare."""
    if not is_distributed() or is_sharded(model):
        return
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    sums = gather_objects(float(total))
    if max(sums) != min(sums):
        raise RuntimeError(f"replicas differ {when}: parameter sums per rank {sums}")


def finite_step(optimizer, grad_norm: torch.Tensor, name: str = "grad_norm") -> dict[str, float]:
    """optimizer.step(), unless the gradient holds an inf or NaN (its norm is then not finite):
    one such step would turn every weight it touches into NaN for good, so the step is skipped
    (AdamW's moments and weights stay as they were) and counted in `{name}_nonfinite`. The norm
    is the same on every rank (after the gradient sum), so all ranks skip together. A NaN
    gradient can come from a kernel (e.g. cuDNN attention's backward, models.load_policy) or
    from overflow; a run that logs it at many steps has a real fault to find."""
    norm = float(grad_norm)
    if math.isfinite(norm):
        optimizer.step()
        return {name: norm}
    optimizer.zero_grad(set_to_none=True)
    return {name: norm, f"{name}_nonfinite": 1.0}
