"""Token logprobs and entropies from logits [B,T,V], one chunk of rows at a time.

Position t of the output describes token t, predicted by the logits at position t - 1
(rlvr.types convention); position 0 has no prediction and holds 0. Each chunk of rows is cast
to at least float32 on its own, so no float32 [B,T,V] copy exists at once. Plain autograd would
keep every chunk's float32 copy alive for the backward pass, which defeats the chunking, so
token_logprobs and token_entropy_with_grad have their own backward that recomputes the softmax
chunk by chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # bf16/fp16 -> fp32, fp64 stays fp64


def _rows_and_targets(logits: Tensor, input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """logits [B,T,V] -> rows [B*T,V] (a view when contiguous), next tokens [B*T].

    We keep all B*T rows rather than slicing off the last position: logits[:, :-1] cannot be
    flattened without copying the whole tensor; the wasted rows are 1/T of the work.
    """
    b, t, v = logits.shape
    nxt = torch.cat([input_ids[:, 1:], torch.zeros_like(input_ids[:, :1])], dim=1)  # [B,T]
    return logits.reshape(b * t, v), nxt.reshape(b * t)


def _shift_right(per_row: Tensor, b: int, t: int) -> Tensor:
    """Row r = (i, s) describes token s + 1 of sequence i: [B*T] -> [B,T] with entry 0 = 0."""
    per_row = per_row.view(b, t)
    return torch.cat([torch.zeros_like(per_row[:, :1]), per_row[:, :-1]], dim=1)


class _ChunkedLogprobs(torch.autograd.Function):
    """rows [N,V], targets [N] -> log softmax(rows / temperature)[targets], [N]."""

    @staticmethod
    def forward(ctx, rows: Tensor, targets: Tensor, temperature: float, chunk: int) -> Tensor:
        out = rows.new_empty(rows.shape[0], dtype=_compute_dtype(rows.dtype))  # [N]
        for s in range(0, rows.shape[0], chunk):
            x = rows[s : s + chunk].to(out.dtype) / temperature  # [n,V]
            picked = x.gather(-1, targets[s : s + chunk, None]).squeeze(-1)  # [n]
            out[s : s + chunk] = picked - torch.logsumexp(x, dim=-1)
        ctx.save_for_backward(rows, targets)
        ctx.temperature, ctx.chunk = temperature, chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None, None]:
        rows, targets = ctx.saved_tensors
        grad = torch.empty_like(rows)  # [N,V]
        for s in range(0, rows.shape[0], ctx.chunk):
            x = rows[s : s + ctx.chunk].to(grad_out.dtype) / ctx.temperature  # [n,V]
            g = grad_out[s : s + ctx.chunk, None]  # [n,1]
            # d/dz_j [z_y / tau - logsumexp(z / tau)] = (1[j = y] - softmax(z / tau)_j) / tau
            d = torch.softmax(x, dim=-1).mul_(-g)
            d.scatter_add_(-1, targets[s : s + ctx.chunk, None], g)
            grad[s : s + ctx.chunk] = d / ctx.temperature
        return grad, None, None, None


def token_logprobs(
    logits: Tensor, input_ids: Tensor, temperature: float = 1.0, chunk_size: int = 1024
) -> Tensor:
    """logprobs [B,T]: entry t = log softmax(logits[:, t-1] / temperature)[input_ids[:, t]],
    entry 0 = 0. logits [B,T,V] (any float dtype), input_ids [B,T] long. Differentiable;
    float32 (float64 for float64 logits)."""
    b, t, _ = logits.shape
    rows, targets = _rows_and_targets(logits, input_ids)
    per_row = _ChunkedLogprobs.apply(rows, targets, temperature, chunk_size)  # [B*T]
    return _shift_right(per_row, b, t)


def _entropy_rows(rows: Tensor, temperature: float, chunk: int) -> Tensor:
    """rows [N,V] -> entropy [N] (nats) of softmax(rows / temperature), chunk rows at a time."""
    out = rows.new_empty(rows.shape[0], dtype=_compute_dtype(rows.dtype))  # [N]
    for s in range(0, rows.shape[0], chunk):
        logp = torch.log_softmax(rows[s : s + chunk].to(out.dtype) / temperature, dim=-1)  # [n,V]
        out[s : s + chunk] = -(logp.exp() * logp).sum(-1)  # [n]
    return out


class _ChunkedEntropy(torch.autograd.Function):
    """rows [N,V] -> entropy of softmax(rows / temperature), [N]; only rows kept for backward."""

    @staticmethod
    def forward(ctx, rows: Tensor, temperature: float, chunk: int) -> Tensor:
        ctx.save_for_backward(rows)
        ctx.temperature, ctx.chunk = temperature, chunk
        return _entropy_rows(rows, temperature, chunk)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (rows,) = ctx.saved_tensors
        grad = torch.empty_like(rows)  # [N,V]
        for s in range(0, rows.shape[0], ctx.chunk):
            x = rows[s : s + ctx.chunk].to(grad_out.dtype) / ctx.temperature  # [n,V]
            logp = torch.log_softmax(x, dim=-1)  # [n,V]
            p = logp.exp()  # [n,V]
            ent = -(p * logp).sum(-1, keepdim=True)  # [n,1]
            # H = -sum_j p_j log p_j with p = softmax(z / tau): since d log p_k / dx_j =
            # 1[j = k] - p_j, dH/dx_j = -p_j (log p_j + H), and dx_j / dz_j = 1 / tau.
            d = p.mul_(logp.add_(ent)).mul_(-grad_out[s : s + ctx.chunk, None])
            grad[s : s + ctx.chunk] = d / ctx.temperature
        return grad, None, None


@torch.no_grad()
def token_entropy(logits: Tensor, chunk_size: int = 1024, temperature: float = 1.0) -> Tensor:
    """entropy [B,T] (nats) of softmax(logits[:, t-1] / temperature), the distribution that
    predicted token t; entry 0 = 0. A metric: no gradient."""
    b, t, v = logits.shape
    return _shift_right(_entropy_rows(logits.reshape(b * t, v), temperature, chunk_size), b, t)


def token_entropy_with_grad(
    logits: Tensor, chunk_size: int = 1024, temperature: float = 1.0
) -> Tensor:
    """As token_entropy, [B,T] with entry 0 = 0, but differentiable, for an entropy bonus in
    the loss. The backward recomputes the softmax chunk by chunk, so only the logits are kept
    for it, never a float32 [B,T,V]."""
    b, t, v = logits.shape
    per_row = _ChunkedEntropy.apply(logits.reshape(b * t, v), temperature, chunk_size)  # [B*T]
    return _shift_right(per_row, b, t)
