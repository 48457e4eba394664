import pytest
import torch

from rlvr.algorithms.aggregation import AGGREGATIONS, aggregate, normalizer

MODES = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant_norm"]
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)


def full(mode, per_token, mask, horizon=None):
    horizon = mask.shape[1] if horizon is None else horizon  # the generation budget
    return aggregate(mode, per_token, mask, normalizer(mode, mask, horizon))


def test_two_by_three_by_hand():
    # mask keeps 1, 2 of row 0 and 4 of row 1.
    # token_mean: (1 + 2 + 4) / 3 tokens = 7/3.
    # seq_mean_token_mean: ((1 + 2) / 2 + 4 / 1) / 2 sequences = (1.5 + 4) / 2 = 2.75.
    # seq_mean_token_sum: ((1 + 2) + 4) / 2 sequences = 3.5.
    # constant_norm, horizon 3: (1 + 2 + 4) / (2 sequences * 3) = 7/6; horizon 5: 7/10.
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert normalizer("token_mean", mask).item() == 3
    assert normalizer("seq_mean_token_mean", mask).item() == 2
    assert normalizer("seq_mean_token_sum", mask).item() == 2
    assert normalizer("constant_norm", mask, horizon=5).item() == 10
    assert abs(full("token_mean", PER_TOKEN, mask).item() - 7 / 3) < 1e-12
    assert abs(full("seq_mean_token_mean", PER_TOKEN, mask).item() - 2.75) < 1e-12
    assert abs(full("seq_mean_token_sum", PER_TOKEN, mask).item() - 3.5) < 1e-12
    assert abs(full("constant_norm", PER_TOKEN, mask).item() - 7 / 6) < 1e-12
    assert abs(full("constant_norm", PER_TOKEN, mask, horizon=5).item() - 0.7) < 1e-12


def test_constant_norm_needs_horizon():
    with pytest.raises(ValueError, match="horizon"):
        normalizer("constant_norm", torch.ones(2, 3, dtype=torch.bool))


def test_empty_responses_and_nan_padding():
    # Row 1 has no response tokens and NaN padding. token_mean: (1 + 2 + 3) / 3 = 2;
    # seq_mean_token_mean: (6 / 3 + 0) / 2 = 1 (row 1's length clamped at 1, no 0/0).
    # seq_mean_token_sum: (6 + 0) / 2 = 3; constant_norm: 6 / (2 * 3) = 1.
    per_token = PER_TOKEN.clone()
    per_token[1] = float("nan")
    mask = torch.tensor([[True, True, True], [False, False, False]])
    assert abs(full("token_mean", per_token, mask).item() - 2.0) < 1e-12
    assert abs(full("seq_mean_token_mean", per_token, mask).item() - 1.0) < 1e-12
    assert abs(full("seq_mean_token_sum", per_token, mask).item() - 3.0) < 1e-12
    assert abs(full("constant_norm", per_token, mask).item() - 1.0) < 1e-12
    # A batch without any response token gives 0, not 0/0.
    for mode in MODES:
        assert full(mode, per_token, torch.zeros_like(mask)).item() == 0.0


def reference(mode, per_token, mask, horizon):
    rows = [[v for v, m in zip(pv, mv) if m] for pv, mv in zip(per_token, mask)]
    if mode == "token_mean":
        return sum(map(sum, rows)) / sum(map(len, rows))
    if mode == "seq_mean_token_mean":
        return sum(sum(row) / max(len(row), 1) for row in rows) / len(rows)
    if mode == "seq_mean_token_sum":
        return sum(sum(row) for row in rows) / len(rows)
    return sum(sum(row) for row in rows) / (len(rows) * horizon)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", MODES)
def test_matches_loop_reference(seed, mode):
    gen = torch.Generator().manual_seed(seed)
    per_token = torch.randn(7, 11, generator=gen, dtype=torch.float64)
    mask = torch.rand(7, 11, generator=gen) < 0.5
    mask[3] = False
    expected = reference(mode, per_token.tolist(), mask.tolist(), horizon=16)
    assert abs(full(mode, per_token, mask, horizon=16).item() - expected) < 1e-6


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("mode", MODES)
def test_micro_batches_sum_to_full_batch(seed, mode):
    # Micro-batches of sizes [3, 1, 4] with the global normaliser (the sum of their shares):
    # the summed losses and their gradients must equal those of the whole batch.
    gen = torch.Generator().manual_seed(seed)
    leaf = torch.randn(8, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(8, 10, generator=gen) < 0.6
    mask[5] = False
    whole = full(mode, leaf * 2, mask, horizon=12)
    (grad_whole,) = torch.autograd.grad(whole, leaf)

    splits = torch.split(torch.arange(8), [3, 1, 4])
    norm = sum(normalizer(mode, mask[idx], 12) for idx in splits)
    assert norm.item() == normalizer(mode, mask, 12).item()
    parts = sum(aggregate(mode, leaf[idx] * 2, mask[idx], norm) for idx in splits)
    (grad_parts,) = torch.autograd.grad(parts, leaf)
    torch.testing.assert_close(parts, whole, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad_parts, grad_whole, atol=1e-12, rtol=0)
    # A per-micro-batch normaliser would break this (the bug the global one prevents).
    local = sum(full(mode, leaf[idx] * 2, mask[idx], horizon=12) for idx in splits)
    assert abs(local.item() - whole.item()) > 1e-6


def test_unknown_mode_lists_valid_names():
    valid = "constant_norm, seq_mean_token_mean, seq_mean_token_sum, token_mean"
    with pytest.raises(KeyError, match=valid):
        normalizer("seq_sum", torch.ones(1, 1, dtype=torch.bool))
    assert AGGREGATIONS.names() == sorted(MODES)
