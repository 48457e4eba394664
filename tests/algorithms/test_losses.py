import math

import pytest
import torch

from rlvr.algorithms.aggregation import aggregate, normalizer
from rlvr.algorithms.losses import LOSSES, LossInputs, policy_loss

F64 = torch.float64


def clip_case(ratios, advantages, **kw):
    """One row; old_logprobs = 0 so ratio_t = exp(logprobs_t). Returns output and d loss / d lp."""
    lp = torch.tensor([[math.log(r) for r in ratios]], dtype=F64, requires_grad=True)
    mask = torch.ones(1, len(ratios), dtype=torch.bool)
    adv = torch.tensor([advantages], dtype=F64)
    out = policy_loss("ppo_clip", LossInputs(lp, torch.zeros_like(lp), adv, mask), **kw)
    (grad,) = torch.autograd.grad(out.per_token.sum(), lp)
    return out, grad[0]


def test_ppo_clip_by_hand():
    # clip range [0.8, 1.2]; loss = -min(r A, clip(r) A); where the unclipped term is chosen,
    # d loss / d lp = -A r (since dr / dlp = r), else 0.
    #  A=+1 r=1.1 inside:  -min(1.1, 1.1) = -1.1  grad -1.1
    #  A=+1 r=1.5 above:   -min(1.5, 1.2) = -1.2  grad 0 (clipped)
    #  A=+1 r=0.5 below:   -min(0.5, 0.8) = -0.5  grad -0.5 (pessimistic side keeps its gradient)
    #  A=-1 r=0.5 below:   -min(-0.5, -0.8) = 0.8 grad 0 (clipped)
    #  A=-1 r=1.5 above:   -min(-1.5, -1.2) = 1.5 grad +1.5
    #  A=-1 r=0.9 inside:  -min(-0.9, -0.9) = 0.9 grad +0.9
    out, grad = clip_case([1.1, 1.5, 0.5, 0.5, 1.5, 0.9], [1, 1, 1, -1, -1, -1])
    expected = torch.tensor([[-1.1, -1.2, -0.5, 0.8, 1.5, 0.9]], dtype=F64)
    torch.testing.assert_close(out.per_token, expected, atol=1e-12, rtol=0)
    expected_grad = torch.tensor([-1.1, 0, -0.5, 0, 1.5, 0.9], dtype=F64)
    torch.testing.assert_close(grad, expected_grad, atol=1e-12, rtol=0)
    assert out.clipped.tolist() == [[False, True, False, True, False, False]]
    torch.testing.assert_close(out.ratio, torch.tensor([[1.1, 1.5, 0.5, 0.5, 1.5, 0.9]], dtype=F64))
    assert not out.ratio.requires_grad and out.kl is None


def test_asymmetric_clip():
    # clip_high = 0.28: r = 1.25 with A > 0 is inside [0.8, 1.28] -> loss -1.25, gradient kept;
    # with the symmetric 0.2 it would be clipped at 1.2.
    out, grad = clip_case([1.25], [1.0], clip_low=0.2, clip_high=0.28)
    assert abs(out.per_token.item() + 1.25) < 1e-12 and abs(grad.item() + 1.25) < 1e-12
    out, grad = clip_case([1.25], [1.0])
    assert abs(out.per_token.item() + 1.2) < 1e-12 and grad.item() == 0 and out.clipped.item()
    # The lower bound stays 1 - clip_low = 0.8: A = -1, r = 0.75 -> -min(-0.75, -0.8) = 0.8,
    # clipped (a bound of 1 - clip_high = 0.72 would wrongly keep the gradient).
    out, grad = clip_case([0.75], [-1.0], clip_low=0.2, clip_high=0.28)
    assert abs(out.per_token.item() - 0.8) < 1e-12 and grad.item() == 0 and out.clipped.item()


def test_kl_penalty_and_missing_ref():
    # ratio 1, A = 2 -> -2; k3 with lp - ref = -0.5: e^0.5 - 0.5 - 1 = 0.1487213; 0.1 * that added.
    lp = torch.tensor([[-1.0]], dtype=F64)
    adv, mask = torch.tensor([2.0], dtype=F64), torch.ones(1, 1, dtype=torch.bool)
    out = policy_loss("ppo_clip", LossInputs(lp, lp, adv, mask, lp + 0.5), kl_coef=0.1)
    k3 = math.exp(0.5) - 1.5
    assert abs(out.per_token.item() - (-2 + 0.1 * k3)) < 1e-12 and abs(out.kl.item() - k3) < 1e-12
    no_ref = LossInputs(lp, lp, adv, mask)
    with pytest.raises(ValueError, match="ref_logprobs"):
        policy_loss("ppo_clip", no_ref, kl_coef=0.1)


def test_padding_cannot_overflow():
    # Garbage logprobs on padding would give exp(2e4) = inf; masked, they give ratio 1 and loss 0.
    lp = torch.tensor([[-1.0, 1e4]], dtype=torch.float32, requires_grad=True)
    old = torch.tensor([[-1.0, -1e4]])
    mask = torch.tensor([[True, False]])
    out = policy_loss("ppo_clip", LossInputs(lp, old, torch.tensor([1.0]), mask, old), kl_coef=0.5)
    out.per_token.sum().backward()
    assert out.per_token[0, 1] == 0 and out.ratio[0, 1] == 1 and out.kl[0, 1] == 0
    assert torch.isfinite(lp.grad).all() and lp.grad[0, 1] == 0


def reference_loss(lp, old, ref, adv, mask, mode, clip, kl_coef):
    """ppo_clip + aggregation with Python floats, one token at a time."""
    rows = []
    for b in range(len(lp)):
        row = []
        for t in range(len(lp[b])):
            if mask[b][t]:
                r = math.exp(lp[b][t] - old[b][t])
                obj = min(r * adv[b], min(max(r, 1 - clip), 1 + clip) * adv[b])
                log_r = ref[b][t] - lp[b][t]
                row.append(-obj + kl_coef * (math.exp(log_r) - log_r - 1))
        rows.append(row)
    if mode == "token_mean":
        return sum(sum(row) for row in rows) / sum(len(row) for row in rows)
    return sum(sum(row) / max(len(row), 1) for row in rows) / len(rows)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean"])
def test_matches_loop_reference(seed, mode):
    gen = torch.Generator().manual_seed(seed)
    b, t = 6, 9
    lp, old, ref = (-2 * torch.rand(b, t, generator=gen, dtype=F64) for _ in range(3))
    adv = torch.randn(b, generator=gen, dtype=F64)
    mask = torch.rand(b, t, generator=gen) < 0.7
    mask[0] = False  # a response with no tokens
    inputs = LossInputs(lp, old, adv, mask, ref)
    out = policy_loss("ppo_clip", inputs, kl_coef=0.05)
    loss = aggregate(mode, out.per_token, mask, normalizer(mode, mask))
    args = (lp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist())
    assert abs(loss.item() - reference_loss(*args, mode, 0.2, 0.05)) < 1e-6


def test_unknown_loss_lists_valid_names():
    x = torch.zeros(1, 1)
    with pytest.raises(KeyError, match="ppo_clip"):
        policy_loss("reinforce++", LossInputs(x, x, x[0], x.bool()))
    assert "ppo_clip" in LOSSES
