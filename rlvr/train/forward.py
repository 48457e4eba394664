"""The policy's forward pass for the loss: token logprobs and entropies of a micro-batch,
through the decoder's hidden states and the output layer chunk by chunk, so that neither a
[b, t, V] logits tensor nor its gradient ever exists (for a 152k vocabulary that is most of an
update's memory; benchmarks/memory.py)."""

from __future__ import annotations

import torch

from rlvr.algorithms.logprobs import (chunk_rows_for, head_token_stats, token_entropy, token_entropy_with_grad,
                                     token_logprobs)
from rlvr.models import eval_mode, under_autocast
from rlvr.train import distributed as dist_utils
from rlvr.types import RolloutBatch


def _fused_parts(model):
    """(decoder, output layer) when the model's logits are exactly output_layer(decoder(x)) --
    checked once per model on a short input, so a model that rescales or caps its logits (Gemma's
    soft-capping, Cohere's logit_scale) falls back to its own forward -- else None."""
    cached = getattr(model, "_rlvr_fused_parts", None)
    if cached is not None:
        return cached or None
    if dist_utils.is_sharded(model):  # FSDP gathers weights in the model's forward, not for its parts
        return None
    parts = False
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
        if isinstance(head, torch.nn.Linear) and decoder is not None:
            ids = torch.arange(1, 6, device=model.device)[None] % head.weight.shape[0]
            # a frozen model whose matmul weights are held in bf16 beside float32 norms and
            # embeddings (models.hold_linears_in) only runs under autocast
            dtypes = {p.dtype for p in model.parameters()}
            low = dtypes - {torch.float32}
            mixed = low.pop() if len(low) == 1 and torch.float32 in dtypes else None
            with torch.no_grad(), eval_mode(model), under_autocast(mixed, model.device):
                ref = model(input_ids=ids).logits.float()
                got = torch.nn.functional.linear(decoder(input_ids=ids).last_hidden_state, head.weight, head.bias).float()
            if torch.allclose(ref, got, rtol=1e-3, atol=1e-3):
                parts = (decoder, head)
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        pass
    object.__setattr__(model, "_rlvr_fused_parts", parts)  # a plain attribute, not a submodule
    return parts or None


def token_stats(model, batch: RolloutBatch, temperature: float, entropy_grad: bool = False,
                autocast: torch.dtype | None = None):
    """(logprobs [b,t], entropy [b,t]) of a micro-batch trimmed to its longest row; entry t
    describes token t. The logprobs carry a gradient; the entropy does when `entropy_grad`.
    Through the decoder's hidden states and the output layer chunk by chunk (algorithms/
    logprobs.py: head_token_stats), so no [b, t, V] logits tensor exists, nor its gradient: for
    a 152k vocabulary that is most of an update's memory. Models whose logits are not a plain
    linear layer of the hidden state use their own logits, still chunked.

    With `autocast` (bf16; models.resolve_precision) the model's forward runs under
    torch.autocast and the output layer's matmuls in that dtype, while logprobs and entropies
    are computed in float32 from the bf16 logits, a chunk at a time (never a float32 [b, t, V]).
    Autocast ends before this returns, so the loss and its backward run outside it, as torch
    recommends; the gradients reach the float32 weights in float32."""
    t = int(batch.attention_mask.sum(1).max())
    ids = batch.input_ids[:, :t].to(model.device)
    attn = batch.attention_mask[:, :t].to(model.device)
    parts = _fused_parts(model)  # outside autocast: the check compares the model's own float32 logits
    if parts is None:
        with under_autocast(autocast, model.device):
            logits = model(input_ids=ids, attention_mask=attn).logits  # [b, t, V], bf16 under autocast
        chunk = chunk_rows_for(logits.shape[-1])  # ~64 MB of float32 a chunk, as the fused path's
        ent = (token_entropy_with_grad if entropy_grad else token_entropy)(logits, chunk, temperature)
        return token_logprobs(logits, ids, temperature, chunk), ent  # [b, t] float32 each
    decoder, head = parts
    with under_autocast(autocast, model.device):
        hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state  # [b, t, H]
    lp, ent = head_token_stats(hidden, head.weight, head.bias, ids, temperature, matmul_dtype=autocast)
    return lp, ent if entropy_grad else ent.detach()
