import math

import pytest
import torch

from rlvr.algorithms.aggregation import aggregate, normalizer
from rlvr.algorithms.losses import LOSSES, LossInputs, policy_loss, value_loss

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


def reference_loss(lp, old, ref, ent, adv, mask, mode, clip, kl_coef, clip_ratio_c, entropy_coef):
    """ppo_clip + aggregation with Python floats, one token at a time; also the clipped flags."""
    rows, clipped = [], []
    for b in range(len(lp)):
        row, flags = [], []
        for t in range(len(lp[b])):
            if not mask[b][t]:
                flags.append(False)
                continue
            r = math.exp(lp[b][t] - old[b][t])
            unclipped, clipped_obj = r * adv[b], min(max(r, 1 - clip), 1 + clip) * adv[b]
            loss = -min(unclipped, clipped_obj)
            flag = clipped_obj < unclipped  # the constant branch wins (ties cannot occur here)
            if clip_ratio_c > 0 and adv[b] < 0 and loss > -clip_ratio_c * adv[b]:
                loss, flag = -clip_ratio_c * adv[b], True
            log_r = ref[b][t] - lp[b][t]
            row.append(loss + kl_coef * (math.exp(log_r) - log_r - 1) - entropy_coef * ent[b][t])
            flags.append(flag)
        rows.append(row)
        clipped.append(flags)
    if mode == "token_mean":
        total = sum(sum(row) for row in rows) / sum(len(row) for row in rows)
    else:
        total = sum(sum(row) / max(len(row), 1) for row in rows) / len(rows)
    return total, clipped


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean"])
@pytest.mark.parametrize("clip_ratio_c, entropy_coef", [(0.0, 0.0), (1.5, 0.01)])
def test_matches_loop_reference(seed, mode, clip_ratio_c, entropy_coef):
    gen = torch.Generator().manual_seed(seed)
    b, t = 6, 9
    lp, old, ref = (-2 * torch.rand(b, t, generator=gen, dtype=F64) for _ in range(3))
    ent = 3 * torch.rand(b, t, generator=gen, dtype=F64)
    adv = torch.randn(b, generator=gen, dtype=F64)
    mask = torch.rand(b, t, generator=gen) < 0.7
    mask[0] = False  # a response with no tokens
    inputs = LossInputs(lp, old, adv, mask, ref, ent)
    kw = dict(kl_coef=0.05, clip_ratio_c=clip_ratio_c, entropy_coef=entropy_coef)
    out = policy_loss("ppo_clip", inputs, **kw)
    loss = aggregate(mode, out.per_token, mask, normalizer(mode, mask))
    args = (lp.tolist(), old.tolist(), ref.tolist(), ent.tolist(), adv.tolist(), mask.tolist())
    expected, clipped = reference_loss(*args, mode, 0.2, *kw.values())
    assert abs(loss.item() - expected) < 1e-6
    assert out.clipped.tolist() == clipped


def test_dual_clip_by_hand():
    # clip range [0.8, 1.2], c = 3: for A < 0 the loss is capped at -3 A.
    #  A=-1 r=4:   PPO -min(-4, -1.2) = 4 > cap 3   -> 3, grad 0, clipped
    #  A=-1 r=2:   PPO -min(-2, -1.2) = 2 < cap 3   -> 2, grad -A r = 2
    #  A=-2 r=4:   PPO -min(-8, -2.4) = 8 > cap 6   -> 6, grad 0, clipped
    #  A=+1 r=4:   -min(4, 1.2) = -1.2 (no cap for A > 0), clipped as usual
    #  A=-1 r=0.5: -min(-0.5, -0.8) = 0.8 < cap, clipped as usual
    ratios, advs = [4.0, 2.0, 4.0, 4.0, 0.5], [-1, -1, -2, 1, -1]
    out, grad = clip_case(ratios, advs, clip_ratio_c=3.0)
    expected = torch.tensor([[3, 2, 6, -1.2, 0.8]], dtype=F64)
    torch.testing.assert_close(out.per_token, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, torch.tensor([0, 2, 0, 0, 0], dtype=F64), atol=1e-12, rtol=0)
    assert out.clipped.tolist() == [[True, False, True, True, True]]
    # Without dual clip the r = 4, A < 0 tokens keep their unbounded loss and gradient -A r.
    out, grad = clip_case(ratios, advs)
    expected = torch.tensor([[4, 2, 8, -1.2, 0.8]], dtype=F64)
    torch.testing.assert_close(out.per_token, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, torch.tensor([4, 2, 8, 0, 0], dtype=F64), atol=1e-12, rtol=0)
    for bad in (1.0, 0.5, -2.0):
        with pytest.raises(ValueError, match="clip_ratio_c"):
            clip_case(ratios, advs, clip_ratio_c=bad)


def test_entropy_bonus_by_hand():
    # Token 0: ratio 1, A = 1 -> -1; minus 0.01 * entropy 0.5 -> -1.005; d loss / d H = -0.01.
    # Token 1 is padding with NaN entropy: loss 0, gradient 0.
    lp = torch.tensor([[-1.0, -1.0]], dtype=F64)
    ent = torch.tensor([[0.5, float("nan")]], dtype=F64, requires_grad=True)
    mask = torch.tensor([[True, False]])
    inputs = LossInputs(lp, lp, torch.tensor([1.0], dtype=F64), mask, entropy=ent)
    out = policy_loss("ppo_clip", inputs, entropy_coef=0.01)
    (grad,) = torch.autograd.grad(out.per_token.sum(), ent)
    expected = torch.tensor([[-1.005, 0.0]], dtype=F64)
    torch.testing.assert_close(out.per_token, expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, torch.tensor([[-0.01, 0.0]], dtype=F64), atol=1e-12, rtol=0)
    for name in ("ppo_clip", "gspo"):
        with pytest.raises(ValueError, match="entropy"):
            policy_loss(name, LossInputs(lp, lp, torch.tensor([1.0]), mask), entropy_coef=0.01)


# ---- gspo ---------------------------------------------------------------------------------------


def test_gspo_by_hand():
    # old_logprobs = 0, clip range [0.8, 1.2]. s_i = exp(mean of lp over row i's tokens).
    #  Row 0: lp = [0.1, -0.3] (position 2 is garbage padding): s = e^-0.1 = 0.904837, A = 2,
    #    inside: loss_t = -2 s = -1.809675 on both tokens, d sum / d lp_t = -A s = -1.809675 each
    #    (token ratios 1.105 and 0.741 would have been judged one by one by ppo_clip).
    #  Row 1: lp = [0.3, 0.5, 0.4]: s = e^0.4 = 1.491825 > 1.2 with A = 1: loss -1.2, grad 0,
    #    every token clipped.
    #  Row 2: same lp, A = -1: loss = -min(-1.491825, -1.2) = 1.491825, grad -A s = 1.491825.
    lp = torch.tensor([[0.1, -0.3, 50.0], [0.3, 0.5, 0.4], [0.3, 0.5, 0.4]], dtype=F64)
    lp.requires_grad_()
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    adv = torch.tensor([2.0, 1.0, -1.0], dtype=F64)
    out = policy_loss("gspo", LossInputs(lp, torch.zeros_like(lp), adv, mask))
    (grad,) = torch.autograd.grad(out.per_token.sum(), lp)
    s0, s1 = math.exp(-0.1), math.exp(0.4)
    expected = torch.tensor([[-2 * s0, -2 * s0, 0], [-1.2] * 3, [s1] * 3], dtype=F64)
    torch.testing.assert_close(out.per_token, expected, atol=1e-12, rtol=0)
    expected_grad = torch.tensor([[-2 * s0, -2 * s0, 0], [0] * 3, [s1] * 3], dtype=F64)
    torch.testing.assert_close(grad, expected_grad, atol=1e-12, rtol=0)
    assert out.clipped.tolist() == [[False] * 3, [True] * 3, [False] * 3]
    expected_ratio = torch.tensor([[s0, s0, 1], [s1] * 3, [s1] * 3], dtype=F64)
    torch.testing.assert_close(out.ratio, expected_ratio, atol=1e-12, rtol=0)
    assert not out.ratio.requires_grad


def test_gspo_tiny_clip_range():
    # The paper's range [1 - 3e-4, 1 + 4e-4], A = 1, old = 0.
    # lp = [0.001, -0.0004]: mean 0.0003, s = e^0.0003 = 1.00030005 < 1.0004 -> loss -s, kept.
    # lp = [0.001, 0.0002]:  mean 0.0006, s = 1.00060018 > 1.0004 -> loss -1.0004, clipped.
    lp = torch.tensor([[0.001, -0.0004], [0.001, 0.0002]], dtype=F64)
    mask = torch.ones(2, 2, dtype=torch.bool)
    out = policy_loss("gspo", LossInputs(lp, torch.zeros_like(lp), torch.ones(2, dtype=F64), mask),
                      clip_low=3e-4, clip_high=4e-4)
    expected = torch.tensor([[-math.exp(0.0003)] * 2, [-1.0004] * 2], dtype=F64)
    torch.testing.assert_close(out.per_token, expected, atol=1e-12, rtol=0)
    assert out.clipped.tolist() == [[False, False], [True, True]]


def test_gspo_needs_sequence_advantages():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss("gspo", LossInputs(x, x, torch.zeros(2, 3), x.bool()))


def gspo_reference(lp, old, ref, adv, mask, clip_low, clip_high, kl_coef, clip_ratio_c):
    """GSPO with seq_mean_token_mean aggregation, one sequence at a time: the loss, its gradient
    w.r.t. lp from the paper's formula
        d(-J)/d lp_i,t = -(1/B) * 1[unclipped_i] * s_i A_i / |y_i|   (+ the KL term's gradient),
    and the clipped flags. d k3 / d lp = 1 - exp(ref - lp)."""
    b = len(lp)
    total, grad, clipped = 0.0, [[0.0] * len(row) for row in lp], []
    for i in range(b):
        pos = [t for t, m in enumerate(mask[i]) if m]
        n = len(pos)
        s = math.exp(sum(lp[i][t] - old[i][t] for t in pos) / n) if n else 1.0
        a = adv[i]
        if (a > 0 and s > 1 + clip_high) or (a < 0 and s < 1 - clip_low):
            loss, live = -min(max(s, 1 - clip_low), 1 + clip_high) * a, False
        else:
            loss, live = -s * a, True
        if clip_ratio_c > 0 and a < 0 and loss > -clip_ratio_c * a:
            loss, live = -clip_ratio_c * a, False
        clipped.append([m and not live for m in mask[i]])
        for t in pos:
            log_r = ref[i][t] - lp[i][t]
            total += (loss + kl_coef * (math.exp(log_r) - log_r - 1)) / n / b
            grad[i][t] = (-(s * a if live else 0.0) + kl_coef * (1 - math.exp(log_r))) / n / b
    return total, grad, clipped


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("clip_ratio_c", [0.0, 1.25])
def test_gspo_matches_loop_reference(seed, clip_ratio_c):
    gen = torch.Generator().manual_seed(seed)
    b, t = 10, 7
    old = -2 * torch.rand(b, t, generator=gen, dtype=F64)
    lp = (old + 0.4 * torch.randn(b, t, generator=gen, dtype=F64)).requires_grad_()
    ref = -2 * torch.rand(b, t, generator=gen, dtype=F64)
    adv = torch.randn(b, generator=gen, dtype=F64)
    mask = torch.rand(b, t, generator=gen) < 0.6
    mask[2] = False  # a response with no tokens
    inputs = LossInputs(lp, old, adv, mask, ref)
    out = policy_loss("gspo", inputs, kl_coef=0.05, clip_ratio_c=clip_ratio_c)
    mode = "seq_mean_token_mean"  # GSPO's own 1/G sum_i 1/|y_i| sum_t
    loss = aggregate(mode, out.per_token, mask, normalizer(mode, mask))
    (grad,) = torch.autograd.grad(loss, lp)
    args = (lp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist())
    expected, expected_grad, clipped = gspo_reference(*args, 0.2, 0.2, 0.05, clip_ratio_c)
    assert abs(loss.item() - expected) < 1e-6
    torch.testing.assert_close(grad, torch.tensor(expected_grad, dtype=F64), atol=1e-6, rtol=0)
    assert out.clipped.tolist() == clipped


# ---- value loss ---------------------------------------------------------------------------------


def test_value_loss_by_hand():
    # c = 0.2; position 3 is padding with garbage.
    #  V=1.4 old=1.0 R=1.5: unclipped 0.5 * 0.1^2 = 0.005; clipped V 1.2 -> 0.5 * 0.3^2 = 0.045
    #    -> 0.045, clipped branch larger (flag), grad 0 (the clamp is saturated).
    #  V=2.0 old=1.0 R=1.0: unclipped 0.5 * 1^2 = 0.5; clipped V 1.2 -> 0.5 * 0.2^2 = 0.02
    #    -> 0.5, grad V - R = 1.
    #  V=0.5 old=0.5 R=0.0: both 0.125 (tie: not flagged), grad V - R = 0.5.
    # Without clipping (c = 0): 0.5 (V - R)^2 = [0.005, 0.5, 0.125], grad V - R = [-0.1, 1, 0.5].
    values = torch.tensor([[1.4, 2.0, 0.5, 1e9]], dtype=F64, requires_grad=True)
    old = torch.tensor([[1.0, 1.0, 0.5, float("nan")]], dtype=F64)
    returns = torch.tensor([[1.5, 1.0, 0.0, 3.0]], dtype=F64)
    mask = torch.tensor([[True, True, True, False]])
    for c, exp_loss, exp_grad, exp_flags in [
        (0.2, [0.045, 0.5, 0.125, 0], [0, 1, 0.5, 0], [True, False, False, False]),
        (0.0, [0.005, 0.5, 0.125, 0], [-0.1, 1, 0.5, 0], [False] * 4),
    ]:
        loss, flags = value_loss(values, old, returns, mask, c)
        (grad,) = torch.autograd.grad(loss.sum(), values)
        torch.testing.assert_close(loss, torch.tensor([exp_loss], dtype=F64), atol=1e-12, rtol=0)
        torch.testing.assert_close(grad, torch.tensor([exp_grad], dtype=F64), atol=1e-12, rtol=0)
        assert flags.tolist() == [exp_flags]


@pytest.mark.parametrize("seed", range(3))
def test_value_loss_matches_loop_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    values, old, returns = (torch.randn(5, 8, generator=gen, dtype=F64) for _ in range(3))
    mask = torch.rand(5, 8, generator=gen) < 0.7
    c = 0.3
    loss, flags = value_loss(values, old, returns, mask, c)
    for i in range(5):
        for t in range(8):
            v, o, r = values[i, t].item(), old[i, t].item(), returns[i, t].item()
            unclipped = 0.5 * (v - r) ** 2
            clipped = 0.5 * (o + min(max(v - o, -c), c) - r) ** 2
            expected = max(unclipped, clipped) if mask[i, t] else 0.0
            assert abs(loss[i, t].item() - expected) < 1e-12
            assert flags[i, t].item() == bool(mask[i, t] and clipped > unclipped)


def test_unknown_loss_lists_valid_names():
    x = torch.zeros(1, 1)
    with pytest.raises(KeyError, match="ppo_clip"):
        policy_loss("reinforce++", LossInputs(x, x, x[0], x.bool()))
    assert LOSSES.names() == ["gspo", "ppo_clip"]
