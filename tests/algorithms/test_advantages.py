import math

import pytest
import torch

from rlvr.algorithms.advantages import ADVANTAGES, AdvantageInputs, compute


def grpo_reference(rewards: list[float], group_ids: list[int], eps: float) -> list[float]:
    """One rollout at a time, straight from the definition."""
    out = []
    for r, g in zip(rewards, group_ids):
        group = [rj for rj, gj in zip(rewards, group_ids) if gj == g]
        n = len(group)
        if n == 1:
            out.append(0.0)
            continue
        mean = sum(group) / n
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / (n - 1))
        out.append((r - mean) / (std + eps))
    return out


def test_grpo_one_group_by_hand():
    # mean = 1/4 = 0.25; squared deviations 0.75^2 + 3 * 0.25^2 = 0.5625 + 0.1875 = 0.75;
    # unbiased std = sqrt(0.75 / 3) = 0.5; A = [0.75, -0.25, -0.25, -0.25] / 0.5.
    rewards, ids = torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0, 0, 0, 0])
    inputs = AdvantageInputs(rewards, ids, eps=0.0)
    torch.testing.assert_close(
        compute("grpo", inputs), torch.tensor([1.5, -0.5, -0.5, -0.5]), atol=1e-6, rtol=0
    )
    # With the default eps the denominator is 0.5 + 1e-6.
    inputs = AdvantageInputs(inputs.rewards, inputs.group_ids)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6)
    torch.testing.assert_close(compute("grpo", inputs), expected, atol=1e-6, rtol=0)


def test_grpo_interleaved_unequal_groups_by_hand():
    # Group 7 = rows 0, 2: rewards 2, 0 -> mean 1, std = sqrt((1 + 1) / 1) = sqrt(2),
    #   A = [1, -1] / sqrt(2).
    # Group 3 = rows 1, 3, 4: rewards 1, 1, 4 -> mean 2, std = sqrt((1 + 1 + 4) / 2) = sqrt(3),
    #   A = [-1, -1, 2] / sqrt(3).
    # Group 9 = row 5 alone -> A = 0 (and no NaN).
    rewards = torch.tensor([2.0, 1.0, 0.0, 1.0, 4.0, 5.0], dtype=torch.float64)
    ids = torch.tensor([7, 3, 7, 3, 3, 9])
    s2, s3 = math.sqrt(2), math.sqrt(3)
    expected = torch.tensor([1 / s2, -1 / s3, -1 / s2, -1 / s3, 2 / s3, 0.0], dtype=torch.float64)
    out = compute("grpo", AdvantageInputs(rewards, ids, eps=1e-12))
    torch.testing.assert_close(out, expected, atol=1e-9, rtol=0)


def test_grpo_equal_rewards_give_zero():
    out = compute("grpo", AdvantageInputs(torch.ones(5), torch.tensor([0, 0, 1, 1, 2])))
    assert torch.equal(out, torch.zeros(5))


@pytest.mark.parametrize("seed", range(5))
def test_grpo_matches_loop_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    b = 40
    # Random non-contiguous ids drawn from a sparse range: unequal sizes, singletons likely.
    ids = torch.randint(0, 12, (b,), generator=gen) * 5 + 3
    rewards = torch.randint(0, 3, (b,), generator=gen).double()
    rewards += torch.rand(b, generator=gen, dtype=torch.float64)  # ties and spread both occur
    out = compute("grpo", AdvantageInputs(rewards, ids))
    expected = grpo_reference(rewards.tolist(), ids.tolist(), 1e-6)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(KeyError, match="grpo"):
        compute("nope", AdvantageInputs(torch.zeros(2), torch.zeros(2, dtype=torch.long)))
    assert "grpo" in ADVANTAGES.names()
