"""A lean decoding forward for Llama-family causal LMs (Llama, Qwen2, Qwen3).

Why: for small models the Hugging Face forward spends most of each decode step in Python and
dispatch (mask building, cache bookkeeping, output dataclasses), not in matmuls. This forward
does only the arithmetic: embed, per layer RMSNorm -> q/k/v -> (Qwen3: per-head q/k RMSNorm)
-> RoPE -> attention over a preallocated KV cache (scaled_dot_product_attention for the prompt,
two batched matmuls for a decode step) -> o_proj -> SwiGLU MLP, then the final norm and the LM
head. Activations are flat [tokens, H], so each residual add rides on its matmul (addmm).

Per layer the q/k/v projections run as one matmul: a decoder concatenates those weights once,
when it is built. The engine builds one per rollout batch, so an optimizer step between
rollouts is seen by the next rollout; weights must not change during a decode. (At a small
width one [b, H] x [H, 3H] matmul runs nearer the machine's FLOP rate than three [H, H] ones,
and Qwen3's q_norm and k_norm become one call.) Every other parameter is read live.

cos/sin come from the module's own rotary embedding, evaluated once per decode for every
reachable position, so RoPE scaling variants (linear, yarn, llama3, ...) give HF's values; the
dynamic ones, whose frequencies depend on the positions of each call, are left to HF. Anything
that is not recognisably one of these architectures goes through the generic HF path instead;
see `supports`.

Under autocast (float32 weights, bf16 matmuls; models.resolve_precision) it computes what the HF
forward computes under torch.autocast: the matmuls in bf16, the residual stream, norms and RoPE
in float32 (so a residual add is not folded into a bf16 matmul), and keys and values cached in
bf16, the dtype attention reads them in, at half the memory of float32. In bf16 (autocast, or
bf16 weights) every op is HF's own, in HF's order: a decode step's attention is SDPA, as HF's, not
the two matmuls, which would round the scores to bf16; the residual adds and RoPE are not fused.
Each fused kernel rounds a little differently, which float32 does not see but bf16 compounds over
a decode (measured over 60 tokens: 0.03 nats mean, 0.2 max, from the trainer's logprobs, against
0.008 for HF's own decode).

With `static=True` a decode step has the same shapes at every step, so it can be captured once as a
CUDA graph and replayed (`CudaGraphStep`; rollout.cuda_graph): it writes keys and values at a cache
column held in a device tensor, and attends over every column of the cache, the bias masking
those not written yet (the cache starts zeroed, so an unwritten column holds no NaN).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from rlvr.models import under_autocast

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
    rope_type = model.model.rotary_emb.rope_type
    if "dynamic" in rope_type or rope_type == "longrope":  # frequencies depend on the call's positions
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


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's RMSNorm with the same operations in the same order, so the same rounding in any
    dtype: normalise in float32, cast back, then scale. (F.rms_norm fuses the scale into the
    float32 part, which rounds differently in bf16, and dispatches more small kernels on CPU.)"""
    x32 = x.float()
    inv_rms = x32.pow(2).mean(-1, keepdim=True).add_(eps).rsqrt_()  # [..., 1]
    return weight * (x32 * inv_rms).to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, fused: bool = True) -> torch.Tensor:
    """HF's rotate-half RoPE on x [b, heads, s, d] with cos, signed_sin [b, 1, s, d] -> [b, heads, s, d].

    rotate_half(x) = cat(-x2, x1) is roll(x, d/2) = cat(x2, x1) with the first half negated; the
    sign is folded into signed_sin once per decode, so a call is three kernels, not six. `fused`
    (float32): the second product and the sum in one addcmul; otherwise each rounded on its own,
    in HF's order, so that in bf16 the result is HF's to the bit (addcmul rounds once).
    """
    rolled = x.roll(x.shape[-1] // 2, dims=-1)
    return torch.addcmul(x * cos, rolled, signed_sin) if fused else x * cos + rolled * signed_sin


class _Fused(NamedTuple):
    """One layer's concatenated weights, built once per decoder (see the module docstring)."""

    qkv: torch.Tensor  # [(h + 2 kvh) d, H] rows: q heads, then k heads, then v heads
    qkv_bias: torch.Tensor | None  # [(h + 2 kvh) d] (Qwen2; Llama with attention_bias)
    qk_norm: torch.Tensor | None  # [h + kvh, d] Qwen3's q_norm weight per q head, then k_norm's per k head


class FastDecoder:
    """Prefill once, then one token per row per `step`, over a KV cache sized for the whole run.

    Rows are left-padded prompts. `bias` is the additive attention mask over cache columns (0 on
    real tokens, -inf on padding), kept as a buffer so a decode step slices it rather than
    building and converting a boolean mask per layer. `select` keeps only some rows, or repeats
    them: a prefill of each distinct prompt once, then `select` with repeated indices, gives
    every sample of a prompt its own copy of the prompt's cache (`capacity` rows are allocated).
    """

    def __init__(self, model: PreTrainedModel, prompt_mask: torch.Tensor, max_new_tokens: int,
                 autocast: torch.dtype | None = None, capacity: int | None = None, static: bool = False):
        """`autocast`: the dtype the forward's matmuls run in under torch.autocast (None: the
        weights' own); the cache holds keys and values in it. Each call runs under autocast.
        `capacity`: rows to allocate (at least prompt_mask's; `select` may grow to it).
        `static`: decode steps of fixed shapes (see the module docstring); no `select` after the
        first step."""
        config = model.config
        self.model = model
        self.eps = config.rms_norm_eps
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        param = model.lm_head.weight
        self.autocast = autocast
        self.dtype = autocast or param.dtype  # of the matmuls' outputs, the cache and the mask bias
        # float32 throughout: fused kernels (addmm, addcmul, attention as two matmuls) round a little
        # differently from HF's ops, ~1e-7, which float32 does not see; in bf16 each such rounding
        # is ~4e-3 and compounds over a decode, so there every op is HF's, in HF's order
        self.fused_ops = self.dtype == torch.float32
        self.fused = [self._fuse(layer.self_attn, config.model_type == "qwen3") for layer in model.model.layers]
        B, P = prompt_mask.shape
        T = P + max_new_tokens
        shape = (len(model.model.layers), max(B, capacity or 0), self.kv_heads, T, self.head_dim)
        alloc = torch.zeros if static else torch.empty  # static steps read every column
        self.keys = alloc(shape, dtype=self.dtype, device=param.device)  # [L, B, kvh, T, d]
        self.values = alloc(shape, dtype=self.dtype, device=param.device)  # [L, B, kvh, T, d]
        # generated columns are all real: a live row always appends a real token
        self.bias = torch.zeros((shape[1], T), dtype=self.dtype, device=param.device)  # [capacity, T]
        self.bias[:B, :P].masked_fill_(prompt_mask == 0, float("-inf"))
        self.rows = B  # live rows: the first `rows` of the cache and bias (see `select`)
        self.length = 0  # cache columns filled so far
        self.static = static
        self.column = torch.zeros((), dtype=torch.long, device=param.device)  # static: `length` on the device
        self.columns = torch.arange(T, device=param.device)  # [T]
        # cos/sin of every position this decode can reach, from the model's own rotary module
        # (`supports` admits only RoPE types whose values do not depend on the call), in the
        # residual stream's dtype as HF's forward makes them (it reads only x's dtype and device)
        x = torch.empty(0, dtype=param.dtype, device=param.device)
        cos, sin = model.model.rotary_emb(x, torch.arange(T, device=param.device)[None])  # [1, T, d]
        half = self.head_dim // 2
        self.cos = cos[0]  # [T, d]
        self.signed_sin = torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)  # [T, d] see _rope

    def _fuse(self, attn: nn.Module, qk_norm: bool) -> _Fused:
        lins = [attn.q_proj, attn.k_proj, attn.v_proj]
        # in the matmuls' dtype: autocast would cast these non-parameters again at every step
        qkv = torch.cat([lin.weight for lin in lins]).to(self.dtype)  # [(h + 2 kvh) d, H]
        bias = None
        if attn.q_proj.bias is not None:
            bias = torch.cat([lin.bias for lin in lins]).to(self.dtype)  # [(h + 2 kvh) d]
        norm = None
        if qk_norm:  # one norm call over q and k heads together
            d = self.head_dim
            norm = torch.cat([attn.q_norm.weight.expand(self.heads, d), attn.k_norm.weight.expand(self.kv_heads, d)])
        return _Fused(qkv, bias, norm)

    def prefill(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """input_ids, positions [B, P] -> next-token logits [B, V] (from the last column)."""
        B, P = input_ids.shape
        future = torch.ones((P, P), dtype=torch.bool, device=input_ids.device).triu(1)  # [P, P] key after query
        bias = self.bias[:B, None, :P].masked_fill(future, float("-inf"))  # [B, P, P]
        # a pad query row would see no key at all, which some SDPA kernels answer with NaN (CPU
        # gives zeros) and a NaN would reach the cache; let it see itself. Its output is unused.
        bias.diagonal(dim1=1, dim2=2).zero_()  # [B, P, P] the diagonal is a view: zeroed in place
        logits = self._forward(input_ids, positions, bias[:, None])
        if self.static:
            self.column.fill_(self.length)  # the first column a step writes
        return logits

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [b], positions [b, 1] -> next-token logits [b, V]."""
        if self.static:  # every shape fixed, the column read from and advanced on the device
            unwritten = self.columns > self.column  # [T]
            bias = self.bias[: self.rows, None, None].masked_fill(unwritten, float("-inf"))  # [b, 1, 1, T]
            logits = self._forward(tokens[:, None], positions, bias, self.column)
            self.column.add_(1)
            return logits
        bias = self.bias[: self.rows, None, None, : self.length + 1]  # [b, 1, 1, S]
        return self._forward(tokens[:, None], positions, bias)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only `rows` [b'] of the batch, cache and mask alike, in that order; an index may
        repeat (b' up to the capacity).

        The kept rows move to the front of the existing buffers, and only the filled columns
        are copied: nothing is reallocated, and the columns still to be written are not moved.
        """
        b, S = len(rows), self.length
        for cache in (self.keys, self.values):  # a layer at a time: the gather's copy is one layer's
            for layer in cache:
                layer[:b, :, :S] = layer[rows, :, :S]  # [b', kvh, S, d]
        self.bias[:b] = self.bias[rows]  # [b', T]
        self.rows = b

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, bias: torch.Tensor,
                 column: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, positions [b, s], bias [b, 1, s|1, S] -> logits of the last column [b, V].
        `column` (static steps): the cache column to write, a device tensor; bias then spans all T."""
        with under_autocast(self.autocast, input_ids.device):  # a no-op inside the engine's own region
            b, s = input_ids.shape
            base = self.model.model
            h = F.embedding(input_ids.reshape(-1), base.embed_tokens.weight)  # [b s, H]
            cos, sin = self.cos[positions][:, None], self.signed_sin[positions][:, None]  # [b, 1, s, d]
            for i, (layer, fused) in enumerate(zip(base.layers, self.fused)):
                x = _rms_norm(h, layer.input_layernorm.weight, self.eps)  # [b s, H]
                attn = self._attention(i, layer.self_attn, fused, x.view(b, s, -1), cos, sin, bias, column)  # [b s, h d]
                h = _linear_add(h, attn, layer.self_attn.o_proj, not self.fused_ops)  # [b s, H]
                x = _rms_norm(h, layer.post_attention_layernorm.weight, self.eps)  # [b s, H]
                h = _linear_add(h, self._gated(layer.mlp, x), layer.mlp.down_proj, not self.fused_ops)  # [b s, H]
            self.length += s
            h = _rms_norm(h.view(b, s, -1)[:, -1], base.norm.weight, self.eps)  # [b, H] only the last column is sampled
            return F.linear(h, self.model.lm_head.weight, self.model.lm_head.bias)  # [b, V]

    def _attention(self, i: int, attn: nn.Module, fused: _Fused, x: torch.Tensor, cos, sin, bias,
                   column: torch.Tensor | None = None) -> torch.Tensor:
        """Layer i's self-attention on x [b, s, H], before o_proj -> [b s, h d]; appends this
        step's keys/values to the cache (at `column`, a device tensor, for a static step)."""
        b, s, _ = x.shape
        h, kvh, d = self.heads, self.kv_heads, self.head_dim
        qkv = F.linear(x, fused.qkv, fused.qkv_bias).view(b, s, h + 2 * kvh, d)  # [b, s, h+2kvh, d]
        qk = qkv[:, :, : h + kvh]  # [b, s, h+kvh, d]
        if fused.qk_norm is not None:  # Qwen3 normalises each head before RoPE
            qk = _rms_norm(qk, fused.qk_norm, self.eps)
        qk = _rope(qk.transpose(1, 2), cos, sin, self.fused_ops)  # [b, h+kvh, s, d]
        k, v = qk[:, h:], qkv[:, :, h + kvh :].transpose(1, 2)  # [b, kvh, s, d] each
        if column is None:
            start, end = self.length, self.length + s
            self.keys[i, :b, :, start:end], self.values[i, :b, :, start:end] = k, v
            keys, values = self.keys[i, :b, :, :end], self.values[i, :b, :, :end]  # [b, kvh, S, d]
        else:  # a static step (s = 1): the bias masks the columns not written yet
            keys, values = self.keys[i, :b], self.values[i, :b]  # [b, kvh, T, d]
            keys.index_copy_(2, column.view(1), k.to(keys.dtype))
            values.index_copy_(2, column.view(1), v.to(values.dtype))
        q = qk[:, :h].to(self.dtype)  # [b, h, s, d] float32 after RoPE under autocast, as HF's; attention reads bf16
        if s > 1 or not self.fused_ops:  # prefill; and every step in bf16, where bmm would round the scores
            out = F.scaled_dot_product_attention(
                q, keys, values, attn_mask=bias, scale=attn.scaling, enable_gqa=h != kvh
            )  # [b, h, s, d]
            return out.transpose(1, 2).reshape(b * s, h * d)  # [b s, h d]
        # One query per row: two batched matmuls, each kv head with its h/kvh query heads (no
        # copies for GQA). On CPU this is ~2x faster than SDPA, whose kernel is built for long
        # queries (measured at batch 512, 4 heads, d 32).
        q = q.reshape(b, kvh, h // kvh, d)  # [b, kvh, g, d] query head j*g + r uses kv head j
        scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(attn.scaling).add_(bias)  # [b, kvh, g, S]
        probs = scores.softmax(-1)  # [b, kvh, g, S] float32 (bf16 steps take SDPA above)
        return torch.matmul(probs, values).view(b, h * d)  # [b, h d]

    @staticmethod
    def _gated(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """SwiGLU before down_proj: silu(gate(x)) * up(x), in place on the fresh gate activations.
        (Kept as two matmuls: a fused [2F, H] weight measured no faster, and its strided gate half
        made silu several times slower.)"""
        gate = F.silu(_linear(mlp.gate_proj, x), inplace=True)  # [b s, F]
        return gate.mul_(_linear(mlp.up_proj, x))  # [b s, F]


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """F.linear on the layer's live parameters (skips nn.Module call overhead, copies nothing)."""
    return F.linear(x, layer.weight, layer.bias)


def _linear_add(h: torch.Tensor, x: torch.Tensor, layer: nn.Linear, separate: bool = False) -> torch.Tensor:
    """h + layer(x) for h [n, H], x [n, in] -> [n, H], the add folded into the matmul. `separate`
    (bf16): a separate add, as HF's forward does it. Under autocast (bf16 matmuls over a float32
    residual stream) an addmm would also run, and so round the residual stream, in bf16; over
    bf16 weights it would round once where HF rounds the product, then the sum."""
    if separate:
        return h + F.linear(x, layer.weight, layer.bias)  # [n, H] float32
    out = torch.addmm(h, x, layer.weight.t())  # [n, H]
    return out if layer.bias is None else out.add_(layer.bias)


class CudaGraphStep:
    """`decoder.step` of a static FastDecoder, captured once as a CUDA graph and replayed at every
    later step of the decode (rollout.cuda_graph). For a small batch a decode step costs kernel
    launches (a few dozen per layer, each timed by Python and the driver), not arithmetic; a replay
    launches them all at once.

    Built at the first step, from that step's inputs: one warm-up step on a side stream, as capture
    requires (it also fills autocast's cache of bf16 weight copies, which the graph then reads), the
    decoder's column put back, then the capture, which records and does not run. Inputs and output
    are fixed tensors: a call copies tokens and positions in, replays, and returns the logits
    tensor, which the next call overwrites. The batch is fixed: no `select` once it is built.
    """

    def __init__(self, decoder: FastDecoder, tokens: torch.Tensor, positions: torch.Tensor):
        if not decoder.static:
            raise ValueError("CudaGraphStep needs a FastDecoder built with static=True")
        self.decoder = decoder  # the graph reads its buffers' memory: keep them alive as long as it
        self.device = decoder.column.device
        with torch.cuda.device(self.device):  # streams and capture on the model's GPU, whichever is current
            self.tokens, self.positions = tokens.clone(), positions.clone()  # [b], [b, 1]
            column, length = decoder.column.clone(), decoder.length
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                decoder.step(self.tokens, self.positions)  # warm-up; writes the column the first replay rewrites
            torch.cuda.current_stream().wait_stream(side)
            decoder.column.copy_(column)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = decoder.step(self.tokens, self.positions)  # [b, V]
        decoder.length = length  # the Python-side count the two calls advanced; replays go by `column`

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [b], positions [b, 1] -> next-token logits [b, V] (the graph's own output tensor)."""
        if tokens.shape != self.tokens.shape or positions.shape != self.positions.shape:  # copy_ would broadcast
            raise ValueError(f"a CUDA graph replays its captured batch: tokens {tuple(self.tokens.shape)} and "
                             f"positions {tuple(self.positions.shape)}, got {tuple(tokens.shape)}, {tuple(positions.shape)}")
        with torch.cuda.device(self.device):
            self.tokens.copy_(tokens)
            self.positions.copy_(positions)
            self.graph.replay()
        return self.logits
