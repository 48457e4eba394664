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


# ---- the output layer fused in: never a [B,T,V] tensor at all --------------------------------


def chunk_rows_for(vocab: int, budget: int = 1 << 24) -> int:
    """Rows per chunk so one chunk's float32 [rows, V] block holds about `budget` numbers
    (64 MB): 110 rows for Qwen3's 151,936-token vocabulary, all rows for a tiny one."""
    return max(16, budget // max(1, vocab))


def _matmul_weights(weight: Tensor, bias: Tensor | None, matmul_dtype: torch.dtype | None):
    """The output layer in the dtype its matmuls run in: cast once per call (autocast would cast
    a frozen weight again for every chunk), or as it is when matmul_dtype is None."""
    if matmul_dtype is None:
        return weight, bias
    return weight.to(matmul_dtype), None if bias is None else bias.to(matmul_dtype)


class _FusedHead(torch.autograd.Function):
    """hidden [N,H], weight [V,H], bias [V] | None, targets [N] -> (logprob [N], entropy [N]) of
    softmax((hidden @ weight.T + bias) / temperature), chunk rows at a time. Only hidden, weight
    and targets are kept for the backward, which recomputes each chunk's logits: memory is
    O(chunk x V) however long the batch, where the plain path holds [N, V] logits, their float32
    log-softmax and their gradient. With `matmul_dtype` (the autocast dtype, bf16) the logits'
    matmuls, forward and backward, run in it, as autocast would run them; the softmax, logprobs,
    entropies and the weight-gradient sums stay float32."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature: float, chunk: int, matmul_dtype):
        dtype = _compute_dtype(hidden.dtype)
        w, b = _matmul_weights(weight, bias, matmul_dtype)  # [V,H], [V]
        lp = hidden.new_empty(hidden.shape[0], dtype=dtype)
        ent = hidden.new_empty(hidden.shape[0], dtype=dtype)
        for s in range(0, hidden.shape[0], chunk):
            z = torch.nn.functional.linear(hidden[s : s + chunk].to(w.dtype), w, b).to(dtype).div_(temperature)  # [n,V]
            logp = torch.log_softmax(z, dim=-1)
            del z
            lp[s : s + chunk] = logp.gather(-1, targets[s : s + chunk, None]).squeeze(-1)
            ent[s : s + chunk] = -(logp.exp().mul_(logp)).sum(-1)
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.temperature, ctx.chunk, ctx.matmul_dtype = temperature, chunk, matmul_dtype
        ctx.set_materialize_grads(False)
        return lp, ent

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_lp, grad_ent):
        hidden, weight, bias, targets = ctx.saved_tensors
        grad_h = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(weight, dtype=_compute_dtype(weight.dtype)) if ctx.needs_input_grad[1] else None
        grad_b = None
        if bias is not None and ctx.needs_input_grad[2]:
            grad_b = torch.zeros_like(bias, dtype=_compute_dtype(bias.dtype))
        dtype = _compute_dtype(hidden.dtype)
        w, b = _matmul_weights(weight, bias, ctx.matmul_dtype)  # [V,H], [V]
        # the weight gradient's products: float32 (exact sums), or autocast's dtype as its own linear backward
        grad_w_dtype = ctx.matmul_dtype or dtype
        for s in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[s : s + ctx.chunk]
            h_w = h.to(w.dtype)  # [n, H]
            z = torch.nn.functional.linear(h_w, w, b).to(dtype).div_(ctx.temperature)  # [n,V]
            logp = torch.log_softmax(z, dim=-1)
            del z
            p = logp.exp()
            # d = d loss / d (z / tau), built in place: at most four [n, V] blocks live at once
            if grad_lp is not None:  # d logp_y / dx_j = 1[j = y] - p_j
                g = grad_lp[s : s + ctx.chunk, None].to(dtype)
                d = p.mul(-g).scatter_add_(-1, targets[s : s + ctx.chunk, None], g)
            else:
                d = torch.zeros_like(p)
            if grad_ent is not None:  # dH / dx_j = -p_j (log p_j + H)
                ent = -(p * logp).sum(-1, keepdim=True)
                d.sub_(logp.add_(ent).mul_(p).mul_(grad_ent[s : s + ctx.chunk, None].to(dtype)))
            del p, logp
            d.div_(ctx.temperature)  # [n,V], d loss / d logits
            if grad_b is not None:
                grad_b += d.sum(0)
            # each [n, V] and [n, H] cast once: under autocast both products take the bf16 copies
            d_w = d.to(w.dtype)  # [n, V]
            if grad_h is not None:
                grad_h[s : s + ctx.chunk] = (d_w @ w).to(hidden.dtype)
            if grad_w is not None:
                same = grad_w_dtype == w.dtype
                a, b_ = (d_w, h_w) if same else (d.to(grad_w_dtype), h.to(grad_w_dtype))  # [n, V], [n, H]
                if a.dtype == grad_w.dtype:  # accumulated in place: no [V, H] product (622 MB for Qwen3) per chunk
                    grad_w.addmm_(a.T, b_)
                else:  # bf16 products (autocast) summed into the float32 gradient
                    grad_w += a.T @ b_
        grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
        grad_b = grad_b.to(bias.dtype) if grad_b is not None else None
        return grad_h, grad_w, grad_b, None, None, None, None


def head_token_stats(hidden: Tensor, weight: Tensor, bias: Tensor | None, input_ids: Tensor, temperature: float = 1.0,
                     chunk_rows: int | None = None, matmul_dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
    """(logprobs [B,T], entropy [B,T]) from the last hidden states [B,T,H] and the output layer
    (weight [V,H], bias [V] or None), as token_logprobs and token_entropy_with_grad give them from
    the logits (entry t describes token t; entry 0 = 0), both differentiable, without ever
    materialising the logits. `matmul_dtype` (under autocast: bf16) is the dtype of the output
    layer's matmuls; logprobs and entropies are float32 whatever it is."""
    b, t, hdim = hidden.shape
    rows = hidden[:, :-1].reshape(b * (t - 1), hdim)  # position t-1 predicts token t
    targets = input_ids[:, 1:].reshape(-1)
    chunk = chunk_rows or chunk_rows_for(weight.shape[0])
    lp, ent = _FusedHead.apply(rows, weight, bias, targets, temperature, chunk, matmul_dtype)
    pad = lp.new_zeros(b, 1)
    return torch.cat([pad, lp.view(b, t - 1)], 1), torch.cat([pad, ent.view(b, t - 1)], 1)
