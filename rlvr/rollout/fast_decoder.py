"""A lean decoding forward for Llama-family causal LMs (Llama, Qwen2, Qwen3).

Why: for small models the Hugging Face forward spends most of each decode step in Python and
dispatch (mask building, cache bookkeeping, output dataclasses), not in matmuls. This forward
does only the arithmetic: embed, per layer RMSNorm -> q/k/v -> (Qwen3: per-head q/k RMSNorm)
-> RoPE -> scaled_dot_product_attention over a preallocated KV cache -> o_proj -> SwiGLU MLP,
then the final norm and the LM head.

It reads the module's own parameters at every call (nothing is copied, so an optimizer step
between rollouts is seen by the next rollout) and the module's own rotary embedding, so RoPE
scaling variants compute the cos/sin that HF computes for the same positions. Anything that is
not recognisably one of these architectures goes through the generic HF path instead; see
`supports`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

# model_type -> class-name prefix of its standard attention, MLP and norm modules
_FAMILIES = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3"}
_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def supports(model: PreTrainedModel) -> bool:
    """True when `FastDecoder` computes exactly what `model`'s own forward computes.

    Anything unusual (sliding-window layers, a non-SiLU MLP, adapters or quantised layers that
    replace nn.Linear, a swapped-in attention class) is refused: those must take the HF path.
    """
    config = model.config
    prefix = _FAMILIES.get(config.model_type)
    if prefix is None or config.hidden_act != "silu" or type(model).__name__ != f"{prefix}ForCausalLM":
        return False
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        return False
    if type(model.lm_head) is not nn.Linear or type(model.model.embed_tokens) is not nn.Embedding:
        return False
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if type(attn).__name__ != f"{prefix}Attention" or type(mlp).__name__ != f"{prefix}MLP":
            return False
        norms = [layer.input_layernorm, layer.post_attention_layernorm]
        norms += [attn.q_norm, attn.k_norm] if prefix == "Qwen3" else []
        if any(type(n).__name__ != f"{prefix}RMSNorm" for n in norms):
            return False
        linears = [getattr(attn, p) for p in _PROJECTIONS] + [getattr(mlp, p) for p in _MLP]
        if any(type(lin) is not nn.Linear for lin in linears):
            return False
    return True


def _rms_norm(x: torch.Tensor, norm: nn.Module, eps: float) -> torch.Tensor:
    """HF's RMSNorm: normalise in float32, cast back, then scale (same order, same rounding)."""
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [b, heads, s, d] by cos/sin [b, 1, s, d] (the rotate-half convention of HF)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)  # [b, heads, s, d]
    return x * cos + rotated * sin


class FastDecoder:
    """Prefill once, then one token per row per `step`, over a KV cache sized for the whole run.

    Rows are left-padded prompts; `key_real` remembers which cache columns hold real tokens so
    pad columns are never attended to. `select` keeps only some rows (finished ones are dropped).
    """

    def __init__(self, model: PreTrainedModel, prompt_mask: torch.Tensor, max_new_tokens: int):
        config = model.config
        self.model = model
        self.eps = config.rms_norm_eps
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.qk_norm = config.model_type == "qwen3"
        B, P = prompt_mask.shape
        T = P + max_new_tokens
        param = model.lm_head.weight
        shape = (len(model.model.layers), B, self.kv_heads, T, self.head_dim)
        self.keys = torch.empty(shape, dtype=param.dtype, device=param.device)  # [L, B, kvh, T, d]
        self.values = torch.empty_like(self.keys)  # [L, B, kvh, T, d]
        # every generated column is real: live rows always append a real token
        self.key_real = torch.ones((B, T), dtype=torch.bool, device=param.device)  # [B, T]
        self.key_real[:, :P] = prompt_mask.bool()
        self.length = 0  # cache columns filled so far

    def prefill(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_ids, positions [B, P] -> next-token logits [B, V] (from the last column)."""
        P = input_ids.shape[1]
        causal = torch.ones((P, P), dtype=torch.bool, device=input_ids.device).tril()  # [P, P]
        mask = causal & self.key_real[:, None, :P]  # [B, P, P] query i sees real keys <= i
        # a pad query row would see no key at all (softmax of nothing = NaN); let it see itself
        mask = mask | torch.eye(P, dtype=torch.bool, device=input_ids.device)  # [B, P, P]
        return self._forward(input_ids, positions, mask[:, None])

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [b], positions [b, 1] -> next-token logits [b, V]."""
        mask = self.key_real[:, None, None, : self.length + 1]  # [b, 1, 1, S]
        return self._forward(tokens[:, None], positions, mask)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` [b'] of the batch (cache and mask alike)."""
        self.keys = self.keys.index_select(1, rows)  # [L, b', kvh, T, d]
        self.values = self.values.index_select(1, rows)  # [L, b', kvh, T, d]
        self.key_real = self.key_real.index_select(0, rows)  # [b', T]

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """input_ids, positions [b, s], mask [b, 1, s|1, S] -> logits of the last column [b, V]."""
        base = self.model.model
        h = base.embed_tokens(input_ids)  # [b, s, H]
        cos, sin = base.rotary_emb(h, positions)  # [b, s, d] each
        cos, sin = cos[:, None], sin[:, None]  # [b, 1, s, d] broadcast over heads
        for i, layer in enumerate(base.layers):
            h = h + self._attention(i, layer.self_attn, _rms_norm(h, layer.input_layernorm, self.eps), cos, sin, mask)
            mlp = layer.mlp
            x = _rms_norm(h, layer.post_attention_layernorm, self.eps)  # [b, s, H]
            h = h + mlp.down_proj(F.silu(mlp.gate_proj(x)) * mlp.up_proj(x))  # [b, s, H]
        self.length += input_ids.shape[1]
        h = _rms_norm(h[:, -1], base.norm, self.eps)  # [b, H] only the last column is sampled
        return self.model.lm_head(h)  # [b, V]

    def _attention(self, i: int, attn: nn.Module, x: torch.Tensor, cos, sin, mask: torch.Tensor) -> torch.Tensor:
        """Layer i's self-attention on x [b, s, H]; appends this step's keys/values to the cache."""
        b, s, _ = x.shape
        q = attn.q_proj(x).view(b, s, self.heads, self.head_dim)  # [b, s, h, d]
        k = attn.k_proj(x).view(b, s, self.kv_heads, self.head_dim)  # [b, s, kvh, d]
        v = attn.v_proj(x).view(b, s, self.kv_heads, self.head_dim)  # [b, s, kvh, d]
        if self.qk_norm:  # Qwen3 normalises each head before RoPE
            q, k = _rms_norm(q, attn.q_norm, self.eps), _rms_norm(k, attn.k_norm, self.eps)
        q = _rope(q.transpose(1, 2), cos, sin)  # [b, h, s, d]
        k = _rope(k.transpose(1, 2), cos, sin)  # [b, kvh, s, d]
        end = self.length + s
        self.keys[i, :, :, self.length : end] = k
        self.values[i, :, :, self.length : end] = v.transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, self.keys[i, :, :, :end], self.values[i, :, :, :end], attn_mask=mask,
            scale=attn.scaling, enable_gqa=self.heads != self.kv_heads,
        )  # [b, h, s, d]
        return attn.o_proj(out.transpose(1, 2).reshape(b, s, -1))  # [b, s, H]
