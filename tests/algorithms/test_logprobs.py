import pytest
import torch

from rlvr.algorithms.logprobs import token_entropy, token_entropy_with_grad, token_logprobs


def make(seed, dtype=torch.float64, b=3, t=6, v=11):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(b, t, v, generator=gen, dtype=torch.float64)).to(dtype)
    ids = torch.randint(0, v, (b, t), generator=gen)
    return logits.requires_grad_(), ids


def reference(logits, ids, temperature):
    """The obvious full-tensor version: log softmax of position t-1, picked at token t."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)  # [B,T,V]
    picked = logp[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B,T-1]
    return torch.cat([torch.zeros_like(picked[:, :1]), picked], dim=1)  # [B,T]


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_matches_log_softmax_values_and_gradients(chunk_size, temperature):
    logits, ids = make(seed=chunk_size)
    weight = torch.randn(ids.shape, dtype=torch.float64)  # an arbitrary upstream gradient
    out = token_logprobs(logits, ids, temperature, chunk_size)
    (grad,) = torch.autograd.grad((out * weight).sum(), logits)
    ref = reference(logits, ids, temperature)
    (grad_ref,) = torch.autograd.grad((ref * weight).sum(), logits)
    assert out.shape == ids.shape and torch.all(out[:, 0] == 0)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, grad_ref, atol=1e-6, rtol=0)


def test_gradcheck():
    logits, ids = make(seed=0, b=2, t=4, v=5)
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, ids, 0.9, 3), (logits,))


def test_low_precision_logits_are_upcast_per_chunk():
    # bf16 logits: the result is float32 and matches the reference on the same (rounded) logits.
    logits, ids = make(seed=1, dtype=torch.bfloat16)
    out = token_logprobs(logits, ids, chunk_size=5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(logits.float(), ids, 1.0), atol=1e-5, rtol=0)
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_entropy_matches_full_softmax(chunk_size):
    logits, _ = make(seed=2)
    logp = torch.log_softmax(logits.detach() / 0.8, dim=-1)  # [B,T,V]
    ent = -(logp.exp() * logp).sum(-1)[:, :-1]  # [B,T-1], position t-1 predicts token t
    expected = torch.cat([torch.zeros_like(ent[:, :1]), ent], dim=1)
    out = token_entropy(logits, chunk_size, temperature=0.8)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert not out.requires_grad


def entropy_reference(logits, temperature):
    """Plain autograd through the full softmax: entropy of position t-1's distribution at t."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)  # [B,T,V]
    ent = -(logp.exp() * logp).sum(-1)[:, :-1]  # [B,T-1]
    return torch.cat([torch.zeros_like(ent[:, :1]), ent], dim=1)  # [B,T]


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_entropy_with_grad_matches_autograd(chunk_size, temperature):
    logits, _ = make(seed=3 + chunk_size)
    weight = torch.randn(logits.shape[:2], dtype=torch.float64)  # an arbitrary upstream gradient
    out = token_entropy_with_grad(logits, chunk_size, temperature)
    (grad,) = torch.autograd.grad((out * weight).sum(), logits)
    ref = entropy_reference(logits, temperature)
    (grad_ref,) = torch.autograd.grad((ref * weight).sum(), logits)
    assert out.shape == logits.shape[:2] and torch.all(out[:, 0] == 0)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(grad, grad_ref, atol=1e-10, rtol=0)
    assert torch.equal(out.detach(), token_entropy(logits, chunk_size, temperature))


def test_entropy_with_grad_gradcheck():
    logits, _ = make(seed=4, b=2, t=4, v=5)
    assert torch.autograd.gradcheck(lambda x: token_entropy_with_grad(x, 3, 0.9), (logits,))


def test_entropy_with_grad_keeps_no_float32_copy():
    # bf16 logits: autograd may keep the bf16 logits, but nothing float32 of [B,T,V] size.
    logits, _ = make(seed=5, dtype=torch.bfloat16)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda x: saved.append(x) or x, lambda x: x):
        out = token_entropy_with_grad(logits, chunk_size=4)
    assert out.dtype == torch.float32
    assert not any(x.dtype == torch.float32 and x.numel() >= logits.numel() for x in saved)
    expected = entropy_reference(logits.float(), 1.0)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()
