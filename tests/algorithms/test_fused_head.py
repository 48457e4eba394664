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
