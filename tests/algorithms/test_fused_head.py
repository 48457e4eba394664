"""The fused output layer (logprobs and entropy straight from hidden states, chunk by chunk)
equals the plain path -- full logits, then log-softmax -- in value and in every gradient."""

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from rlvr.algorithms.logprobs import head_token_stats, token_entropy_with_grad, token_logprobs
from rlvr.train.forward import _fused_parts, token_stats
from rlvr.types import RolloutBatch

F64 = torch.float64


def reference(hidden, weight, bias, ids, temperature):
    """The obvious way: materialise [B,T,V] logits, then the chunked-by-rows helpers."""
    logits = torch.nn.functional.linear(hidden, weight, bias)
    return token_logprobs(logits, ids, temperature), token_entropy_with_grad(logits, temperature=temperature)


@pytest.mark.parametrize("seed, chunk, temperature, with_bias", [(0, 3, 1.0, False), (1, 7, 0.7, True),
                                                                 (2, 1000, 1.3, True), (3, 1, 1.0, False)])
def test_values_and_gradients_match_the_plain_path(seed, chunk, temperature, with_bias):
    g = torch.Generator().manual_seed(seed)
    B, T, H, V = 3, 6, 5, 11
    hidden = torch.randn(B, T, H, generator=g, dtype=F64, requires_grad=True)
    weight = torch.randn(V, H, generator=g, dtype=F64, requires_grad=True)
    bias = torch.randn(V, generator=g, dtype=F64, requires_grad=True) if with_bias else None
    ids = torch.randint(0, V, (B, T), generator=g)
    # a loss that weighs every position's logprob and entropy differently (like advantages and an
    # entropy bonus under a mask), so any mix-up of rows or of the two outputs shows
    w_lp, w_ent = torch.randn(B, T, generator=g, dtype=F64), torch.randn(B, T, generator=g, dtype=F64)

    def grads(fn):
        lp, ent = fn()
        ((lp * w_lp).sum() + (ent * w_ent).sum()).backward()
        out = [lp.detach(), ent.detach()] + [x.grad.clone() for x in (hidden, weight, bias) if x is not None]
        for x in (hidden, weight, bias):
            if x is not None:
                x.grad = None
        return out

    fused = grads(lambda: head_token_stats(hidden, weight, bias, ids, temperature, chunk_rows=chunk))
    plain = grads(lambda: reference(hidden, weight, bias, ids, temperature))
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert (fused[0][:, 0] == 0).all()  # position 0 predicts nothing


def test_gradient_checks_in_float64():
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 4, 3, generator=g, dtype=F64, requires_grad=True)
    weight = torch.randn(7, 3, generator=g, dtype=F64, requires_grad=True)
    bias = torch.randn(7, generator=g, dtype=F64, requires_grad=True)
    ids = torch.randint(0, 7, (2, 4), generator=g)
    fn = lambda h, w, b: head_token_stats(h, w, b, ids, 0.9, chunk_rows=2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (hidden, weight, bias))


def _qwen3(**extra):
    torch.manual_seed(0)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                        tie_word_embeddings=True, **extra))


def _batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 40, (3, 9), generator=g)
    attn = torch.ones(3, 9, dtype=torch.bool)
    attn[1, 6:] = False
    resp = attn.clone()
    resp[:, :3] = False
    return RolloutBatch(ids, attn, resp, torch.zeros(3, 9), torch.zeros(3), torch.zeros(3), torch.arange(3))


def test_a_real_model_takes_the_fused_path_with_the_same_gradient():
    """Tied embeddings: the output layer's gradient and the input embedding's add up in one
    parameter; the fused path must give the same total."""
    batch = _batch()
    model = _qwen3()
    assert _fused_parts(model) is not None
    lp, ent = token_stats(model, batch, 0.8, entropy_grad=True)
    (lp[batch.response_mask].sum() - 0.1 * ent[batch.response_mask].sum()).backward()
    fused = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    lp2, ent2 = token_logprobs(logits, batch.input_ids, 0.8), token_entropy_with_grad(logits, temperature=0.8)
    (lp2[batch.response_mask].sum() - 0.1 * ent2[batch.response_mask].sum()).backward()
    torch.testing.assert_close(lp, lp2, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(fused[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


class _ScaledLogits(Qwen3ForCausalLM):
    """A model whose logits are not the plain output layer (like Cohere's logit_scale)."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 0.5
        return out


def test_a_model_that_rescales_its_logits_falls_back_to_them():
    torch.manual_seed(0)
    model = _ScaledLogits(_qwen3().config)
    assert _fused_parts(model) is None
    batch = _batch()
    lp, _ = token_stats(model, batch, 1.0)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(lp, token_logprobs(logits, batch.input_ids, 1.0))


def test_gradient_checkpointing_gives_the_same_gradient():
    from rlvr.models import enable_checkpointing

    batch = _batch()
    grads = []
    for on in (False, True):
        model = _qwen3()
        enable_checkpointing(model, on)
        model.train()
        lp, _ = token_stats(model, batch, 1.0)
        lp[batch.response_mask].sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert model.is_gradient_checkpointing
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7, msg=n)


# ---- under bf16 autocast (model.autocast): matmuls in bf16, logprobs and entropies in float32 -------

BF16 = torch.bfloat16


def test_autocast_head_is_autocasts_linear_then_a_float32_softmax():
    """matmul_dtype=bf16 must give what torch.autocast gives for the output layer (bf16 logits)
    followed by the float32 chunked helpers: the same values to float32 rounding, and gradients
    to bf16 rounding (the backward's matmuls are bf16 too, rounding d loss / d logits once where
    autograd rounds each output's share). A backward that recomputed the logits in float32
    would be ~7e-3 off instead of ~3e-3."""
    g = torch.Generator().manual_seed(0)
    B, T, H, V = 8, 16, 32, 100
    hidden = torch.randn(B, T, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    bias = torch.randn(V, generator=g, requires_grad=True)
    ids = torch.randint(0, V, (B, T), generator=g)
    w_lp, w_ent = torch.randn(B, T, generator=g), torch.randn(B, T, generator=g)

    def grads(fn):
        lp, ent = fn()
        ((lp * w_lp).sum() + (ent * w_ent).sum()).backward()
        out = [lp.detach(), ent.detach()] + [x.grad.clone() for x in (hidden, weight, bias)]
        for x in (hidden, weight, bias):
            x.grad = None
        return out

    def under_autocast():
        with torch.autocast("cpu", dtype=BF16):
            logits = torch.nn.functional.linear(hidden, weight, bias)  # [B, T, V] bf16
        return token_logprobs(logits, ids, 0.8), token_entropy_with_grad(logits, temperature=0.8)

    fused = grads(lambda: head_token_stats(hidden, weight, bias, ids, 0.8, chunk_rows=5, matmul_dtype=BF16))
    ref = grads(under_autocast)
    exact = grads(lambda: reference(hidden, weight, bias, ids, 0.8))  # float32 logits
    assert all(x.dtype == torch.float32 for x in fused)
    for a, b in zip(fused[:2], ref[:2]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert (fused[0] - exact[0]).abs().max() > 1e-2  # the logits were bf16: autocast was on
    for a, b in zip(fused[2:], ref[2:]):
        assert (a - b).norm() / b.norm() < 4e-3


@pytest.mark.parametrize("path", ["fused", "fallback"])
def test_token_stats_under_autocast_are_float32_near_the_float32_ones(path):
    """The update's forward under bf16 autocast, on float32 weights: logprobs and entropies come
    back float32 and equal to the obvious computation (the model's own forward under autocast,
    then the float32 chunked helpers), so every matmul ran in bf16; they are within bf16
    rounding of the float32 forward's; gradients reach the float32 weights as float32; and
    nothing saved for the backward is a float32 tensor of logits size (the chunking holds)."""
    model = _qwen3() if path == "fused" else _ScaledLogits(_qwen3().config)
    assert (_fused_parts(model) is not None) == (path == "fused")
    batch, V = _batch(), model.config.vocab_size
    runs = []
    for autocast in (None, BF16):
        model.zero_grad(set_to_none=True)
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
            lp, ent = token_stats(model, batch, 0.8, entropy_grad=True, autocast=autocast)
        (lp[batch.response_mask].sum() - 0.1 * ent[batch.response_mask].sum()).backward()
        runs.append((lp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved))
    (lp32, ent32, grads32, _), (lp, ent, grads, saved) = runs
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # [b, t, V] bf16
    ref_lp, ref_ent = token_logprobs(logits, batch.input_ids, 0.8), token_entropy_with_grad(logits, temperature=0.8)
    assert lp.dtype == ent.dtype == torch.float32
    torch.testing.assert_close(lp, ref_lp, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, ref_ent, atol=1e-5, rtol=0)
    torch.testing.assert_close(lp, lp32, atol=5e-3, rtol=0)  # measured ~1.3e-3: bf16 logits of size ~1
    torch.testing.assert_close(ent, ent32, atol=5e-3, rtol=0)
    assert (lp - lp32).abs().max() > 1e-4  # the float32 forward is further off than the reference check allows
    assert all(p.dtype == torch.float32 for p in model.parameters())
    for name, g in grads.items():
        assert g.dtype == torch.float32
        assert (g - grads32[name]).norm() / grads32[name].norm() < 5e-2, name  # measured <= 1.4e-2
    rows = batch.input_ids.numel()  # b * t: a [b, t, V] or [b * t, V] float32 logits tensor has rows * V
    assert not [x.shape for x in saved if x.dtype == torch.float32 and x.shape[-1] == V and x.numel() >= rows * V]
