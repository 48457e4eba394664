import math

import pytest
import torch

from rlvr.algorithms.advantages import (
    ADVANTAGES,
    AdvantageInputs,
    compute,
    returns_from_advantages,
)

F64 = torch.float64


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
    rewards = torch.tensor([2.0, 1.0, 0.0, 1.0, 4.0, 5.0], dtype=F64)
    ids = torch.tensor([7, 3, 7, 3, 3, 9])
    s2, s3 = math.sqrt(2), math.sqrt(3)
    expected = torch.tensor([1 / s2, -1 / s3, -1 / s2, -1 / s3, 2 / s3, 0.0], dtype=F64)
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
    rewards += torch.rand(b, generator=gen, dtype=F64)  # ties and spread both occur
    out = compute("grpo", AdvantageInputs(rewards, ids))
    expected = grpo_reference(rewards.tolist(), ids.tolist(), 1e-6)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=F64), atol=1e-6, rtol=0)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(KeyError, match="grpo"):
        compute("nope", AdvantageInputs(torch.zeros(2), torch.zeros(2, dtype=torch.long)))
    assert "grpo" in ADVANTAGES.names()


# ---- outcome-level: dr_grpo, rloo -------------------------------------------------------------


def dr_grpo_reference(rewards: list[float], group_ids: list[int]) -> list[float]:
    out = []
    for r, g in zip(rewards, group_ids):
        group = [rj for rj, gj in zip(rewards, group_ids) if gj == g]
        out.append(r - sum(group) / len(group))
    return out


def rloo_reference(rewards: list[float], group_ids: list[int]) -> list[float]:
    """r_i minus the mean of the other members of its group, one rollout at a time."""
    out = []
    for i, (r, g) in enumerate(zip(rewards, group_ids)):
        others = [rj for j, (rj, gj) in enumerate(zip(rewards, group_ids)) if gj == g and j != i]
        out.append(r - sum(others) / len(others) if others else 0.0)
    return out


def random_groups(gen, b):
    """b rollouts in interleaved groups of random sizes (singletons likely), sparse ids."""
    return torch.randint(0, b // 3 + 1, (b,), generator=gen) * 7 + 2


def test_dr_grpo_and_rloo_by_hand():
    # Group 7 = rows 0, 2 (rewards 2, 0), group 3 = rows 1, 3, 4 (1, 1, 4), group 9 = row 5 (5).
    # dr_grpo: means 1, 2, 5 -> [2-1, 1-2, 0-1, 1-2, 4-2, 5-5] = [1, -1, -1, -1, 2, 0].
    # rloo: row 0: 2 - 0 = 2; row 2: 0 - 2 = -2; row 1: 1 - (1+4)/2 = -1.5; row 3: same -1.5;
    #   row 4: 4 - (1+1)/2 = 3; row 5: alone -> 0.
    # Check: G/(G-1) * dr_grpo = 2 * [1, -1] for group 7, 1.5 * [-1, -1, 2] for group 3.
    rewards = torch.tensor([2.0, 1.0, 0.0, 1.0, 4.0, 5.0], dtype=F64)
    inputs = AdvantageInputs(rewards, torch.tensor([7, 3, 7, 3, 3, 9]))
    expected = {"dr_grpo": [1, -1, -1, -1, 2, 0], "rloo": [2, -1.5, -2, -1.5, 3, 0]}
    for name, values in expected.items():
        out = compute(name, inputs)
        torch.testing.assert_close(out, torch.tensor(values, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("name", ["dr_grpo", "rloo"])
def test_outcome_estimators_match_loop_reference(seed, name):
    gen = torch.Generator().manual_seed(seed)
    b = 30
    ids = random_groups(gen, b)
    rewards = torch.randint(0, 3, (b,), generator=gen).double()
    rewards += torch.rand(b, generator=gen, dtype=F64)
    ref = {"dr_grpo": dr_grpo_reference, "rloo": rloo_reference}[name]
    expected = torch.tensor(ref(rewards.tolist(), ids.tolist()), dtype=F64)
    out = compute(name, AdvantageInputs(rewards, ids))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["dr_grpo", "rloo"])
def test_outcome_estimators_equal_rewards_and_singletons_give_zero(name):
    out = compute(name, AdvantageInputs(torch.full((5,), 3.0), torch.tensor([0, 0, 1, 1, 2])))
    assert torch.equal(out, torch.zeros(5))
    out = compute(name, AdvantageInputs(torch.tensor([1.0, -2.0]), torch.tensor([4, 5])))
    assert torch.equal(out, torch.zeros(2))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_outcome_estimators_refuse_token_rewards(name):
    # They return [B]; per-token rewards would be silently dropped.
    rewards, ids = torch.zeros(2), torch.zeros(2, dtype=torch.long)
    inputs = AdvantageInputs(rewards, ids, token_rewards=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="token_rewards"):
        compute(name, inputs)


# ---- token-level: reinforce_pp, reinforce_pp_baseline, gae ------------------------------------


def random_token_case(gen, b=12, t=9):
    """Random rewards, groups, token rewards, values and one contiguous response per row
    (random start and length, some rows empty), with garbage off the mask."""
    ids = random_groups(gen, b)
    rewards = torch.randint(0, 2, (b,), generator=gen).double() + 0.3 * torch.rand(b, generator=gen)
    mask = torch.zeros(b, t, dtype=torch.bool)
    for i in range(b):
        length = int(torch.randint(0, t + 1, (), generator=gen))
        start = int(torch.randint(0, t - length + 1, (), generator=gen))
        mask[i, start : start + length] = True
    mask[1] = False  # at least one empty response
    token_rewards = torch.where(mask, -0.1 * torch.rand(b, t, generator=gen, dtype=F64), 0.0)
    values = torch.randn(b, t, generator=gen, dtype=F64)
    values[~mask] = float("nan")  # off-mask values must never be read
    return rewards, ids, mask, token_rewards, values


def row_token_rewards(i, outcome, mask, token_rewards) -> tuple[list[int], list[float]]:
    """Response positions of row i and r_t there: token reward, plus the outcome on the last."""
    pos = [t for t, m in enumerate(mask[i]) if m]
    r = [token_rewards[i][t] if token_rewards is not None else 0.0 for t in pos]
    if pos:
        r[-1] += outcome
    return pos, r


def reinforce_pp_reference(outcomes, mask, token_rewards, gamma, eps):
    """Returns-to-go straight from the sum G_t = sum_{k>=t} gamma^(k-t) r_k, then whitening
    with the unbiased std over every response token of the batch."""
    returns = [[0.0] * len(mask[0]) for _ in mask]
    flat = []
    for i, outcome in enumerate(outcomes):
        pos, r = row_token_rewards(i, outcome, mask, token_rewards)
        for j, t in enumerate(pos):
            returns[i][t] = sum(gamma ** (k - j) * r[k] for k in range(j, len(pos)))
            flat.append(returns[i][t])
    if not flat:
        return returns
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / max(len(flat) - 1, 1))
    return [
        [(x - mean) / (std + eps) if m else 0.0 for x, m in zip(row, mrow)]
        for row, mrow in zip(returns, mask)
    ]


def gae_reference(outcomes, mask, token_rewards, values, gamma, lam):
    """A_t = sum_{l>=0} (gamma lam)^l delta_{t+l} (arXiv 1506.02438 eq. 16), one token at a time,
    with V = 0 after the last response token."""
    out = [[0.0] * len(mask[0]) for _ in mask]
    for i, outcome in enumerate(outcomes):
        pos, r = row_token_rewards(i, outcome, mask, token_rewards)
        v = [values[i][t] for t in pos] + [0.0]
        deltas = [r[j] + gamma * v[j + 1] - v[j] for j in range(len(pos))]
        for j, t in enumerate(pos):
            out[i][t] = sum((gamma * lam) ** (l - j) * deltas[l] for l in range(j, len(pos)))
    return out


def group_centred(rewards, group_ids):
    return dr_grpo_reference(rewards, group_ids)


def test_reinforce_pp_by_hand():
    # gamma = 0.5, no token rewards. Row 0: response at positions 1, 2, outcome 1 on position 2
    # -> G = [0.5 * 1, 1] = [0.5, 1]. Row 1: positions 2, 3, outcome -1 -> G = [-0.5, -1].
    # Row 2: empty. All response G = [0.5, 1, -0.5, -1]: mean 0, unbiased var
    # (0.25 + 1 + 0.25 + 1) / 3 = 5/6, so A = G / sqrt(5/6) (eps = 0).
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    rewards, ids = torch.tensor([1.0, -1.0, 7.0], dtype=F64), torch.tensor([0, 1, 2])
    inputs = AdvantageInputs(rewards, ids, eps=0.0, response_mask=mask, gamma=0.5)
    s = math.sqrt(5 / 6)
    expected = torch.tensor([[0, 0.5, 1, 0], [0, 0, -0.5, -1], [0, 0, 0, 0]], dtype=F64) / s
    torch.testing.assert_close(compute("reinforce_pp", inputs), expected, atol=1e-12, rtol=0)

    # Baseline version: rows 0 and 1 in one group with outcomes 3 and 1 -> centred to 1 and -1,
    # the same returns as above; row 2 (empty) alone. So the result is identical...
    rewards, ids = torch.tensor([3.0, 1.0, 7.0], dtype=F64), torch.tensor([5, 5, 6])
    base = AdvantageInputs(rewards, ids, eps=0.0, response_mask=mask, gamma=0.5)
    torch.testing.assert_close(compute("reinforce_pp_baseline", base), expected, atol=1e-12, rtol=0)
    # ...while without the baseline G = [1.5, 3, 0.5, 1] (mean 1.5, deviations [0, 1.5, -1, -0.5],
    # var (0 + 2.25 + 1 + 0.25) / 3 = 7/6) gives a different answer.
    s = math.sqrt(7 / 6)
    plain = torch.tensor([[0, 0, 1.5, 0], [0, 0, -1, -0.5], [0, 0, 0, 0]], dtype=F64) / s
    torch.testing.assert_close(compute("reinforce_pp", base), plain, atol=1e-12, rtol=0)


def test_reinforce_pp_token_rewards_by_hand():
    # gamma = 1. Row 0: positions 1, 2 with token rewards -0.1, -0.2 and outcome 1 on position 2:
    # r = [-0.1, 0.8], G = [0.7, 0.8]. Row 1: positions 2, 3, outcome 0: G = [0, 0].
    # mean = 1.5 / 4 = 0.375; deviations [0.325, 0.425, -0.375, -0.375];
    # var = (0.105625 + 0.180625 + 0.140625 + 0.140625) / 3 = 0.5675 / 3.
    mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    token_rewards = torch.tensor([[0, -0.1, -0.2, 0], [0, 0, 0, 0]], dtype=F64)
    rewards, ids = torch.tensor([1.0, 0.0], dtype=F64), torch.tensor([0, 1])
    inputs = AdvantageInputs(
        rewards, ids, eps=0.0, response_mask=mask, token_rewards=token_rewards
    )
    s = math.sqrt(0.5675 / 3)
    expected = torch.tensor([[0, 0.325, 0.425, 0], [0, 0, -0.375, -0.375]], dtype=F64) / s
    torch.testing.assert_close(compute("reinforce_pp", inputs), expected, atol=1e-12, rtol=0)


def test_gae_by_hand():
    # One row, response at positions 1..3, outcome 1, V = [0.5, 0.4, 0.2] there (position 0 is
    # garbage and must be ignored); r = [0, 0, 1]; V_next = [0.4, 0.2, 0].
    # gamma = 1, lam = 0.5: delta = [0 + 0.4 - 0.5, 0 + 0.2 - 0.4, 1 + 0 - 0.2] = [-0.1, -0.2, 0.8];
    #   A3 = 0.8, A2 = -0.2 + 0.5 * 0.8 = 0.2, A1 = -0.1 + 0.5 * 0.2 = 0;
    #   returns A + V = [0.5, 0.6, 1].
    # gamma = 1, lam = 1: A = G - V = 1 - V = [0.5, 0.6, 0.8]; returns = [1, 1, 1] (Monte Carlo).
    # gamma = 0.5, lam = 1: G = [0.25, 0.5, 1], A = G - V = [-0.25, 0.1, 0.8]; via deltas
    #   [0.5*0.4 - 0.5, 0.5*0.2 - 0.4, 0.8] = [-0.3, -0.3, 0.8]: A2 = -0.3 + 0.4, A1 = -0.3 + 0.05.
    # gamma = 1, lam = 0: A = delta = [-0.1, -0.2, 0.8] (one-step TD).
    # Row 1 has no response: all zeros despite its reward and values.
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    values = torch.tensor([[9.0, 0.5, 0.4, 0.2], [1.0, 2.0, 3.0, 4.0]], dtype=F64)
    rewards, ids = torch.tensor([1.0, 5.0], dtype=F64), torch.tensor([0, 1])
    cases = [
        (1.0, 0.5, [0.0, 0.2, 0.8], [0.5, 0.6, 1.0]),
        (1.0, 1.0, [0.5, 0.6, 0.8], [1.0, 1.0, 1.0]),
        (0.5, 1.0, [-0.25, 0.1, 0.8], [0.25, 0.5, 1.0]),
        (1.0, 0.0, [-0.1, -0.2, 0.8], [0.4, 0.2, 1.0]),
    ]
    for gamma, lam, adv, ret in cases:
        inputs = AdvantageInputs(
            rewards, ids, response_mask=mask, values=values, gamma=gamma, lam=lam
        )
        out = compute("gae", inputs)
        expected = torch.tensor([[0.0, *adv], [0.0] * 4], dtype=F64)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)
        returns = returns_from_advantages(out, values, mask)
        expected = torch.tensor([[0.0, *ret], [0.0] * 4], dtype=F64)
        torch.testing.assert_close(returns, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("use_token_rewards", [False, True])
def test_token_estimators_match_loop_reference(seed, use_token_rewards):
    gen = torch.Generator().manual_seed(seed)
    rewards, ids, mask, token_rewards, values = random_token_case(gen)
    gamma, lam = [(1.0, 1.0), (0.9, 0.95), (0.7, 0.0), (1.0, 0.5)][seed]
    inputs = AdvantageInputs(rewards, ids, response_mask=mask, values=values, gamma=gamma, lam=lam,
                             token_rewards=token_rewards if use_token_rewards else None)
    tr = token_rewards.tolist() if use_token_rewards else None
    r, m = rewards.tolist(), mask.tolist()
    expected = {
        "reinforce_pp": reinforce_pp_reference(r, m, tr, gamma, 1e-6),
        "reinforce_pp_baseline": reinforce_pp_reference(
            group_centred(r, ids.tolist()), m, tr, gamma, 1e-6
        ),
        "gae": gae_reference(r, m, tr, values.tolist(), gamma, lam),
    }
    for name, ref in expected.items():
        out = compute(name, inputs)
        assert out.shape == mask.shape and torch.all(out[~mask] == 0), name
        torch.testing.assert_close(out, torch.tensor(ref, dtype=F64), atol=1e-6, rtol=0)


def test_token_estimators_degenerate_batches():
    mask = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 0]], dtype=torch.bool)
    ids = torch.tensor([0, 0, 1])
    # All-equal rewards, gamma = 1, no token rewards: every return is 3, whitening gives 0.
    # For the baseline version the centred outcomes are 0 (row 2 is a group of one).
    inputs = AdvantageInputs(torch.full((3,), 3.0), ids, response_mask=mask)
    for name in ("reinforce_pp", "reinforce_pp_baseline"):
        assert torch.equal(compute(name, inputs), torch.zeros(3, 3))
    # No response token anywhere, or a single one: 0, not NaN.
    one_token = torch.tensor([[0, 1, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.bool)
    for m in (torch.zeros_like(mask), one_token):
        inputs = AdvantageInputs(torch.tensor([1.0, 2.0, 3.0]), ids, response_mask=m)
        for name in ("reinforce_pp", "reinforce_pp_baseline"):
            assert torch.equal(compute(name, inputs), torch.zeros(3, 3))
    # GAE with zero values and lam = gamma = 1 is just the return: equal rewards stay equal.
    zeros = torch.zeros(3, 3)
    inputs = AdvantageInputs(torch.full((3,), 3.0), ids, response_mask=mask, values=zeros)
    assert torch.equal(compute("gae", inputs), torch.where(mask, 3.0, 0.0))


def test_token_estimators_name_missing_fields():
    rewards, ids = torch.zeros(2), torch.zeros(2, dtype=torch.long)
    for name in ("reinforce_pp", "reinforce_pp_baseline", "gae"):
        with pytest.raises(ValueError, match="response_mask"):
            compute(name, AdvantageInputs(rewards, ids, values=torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="values"):
        mask = torch.ones(2, 3, dtype=torch.bool)
        compute("gae", AdvantageInputs(rewards, ids, response_mask=mask))


def split_case():
    """random_token_case with groups of 3 consecutive rows, so rows 0-2 / 3-11 split no group."""
    rewards, _, mask, token_rewards, values = random_token_case(torch.Generator().manual_seed(7))
    return rewards, torch.arange(12) // 3, mask, token_rewards, values


def _whiten_rank(rank: int, init_file: str, out_dir: str) -> None:
    """One of 2 gloo processes: its own rows of the batch, whitened with the global statistics."""
    import os

    import torch.distributed as dist

    from rlvr.algorithms.advantages import whiten
    from rlvr.train.distributed import global_sum

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        rewards, ids, mask, token_rewards, values = split_case()
        rows = slice(0, 3) if rank == 0 else slice(3, None)  # unequal shares of rows and tokens
        share = AdvantageInputs(rewards[rows], ids[rows], response_mask=mask[rows], values=values[rows],
                                token_rewards=token_rewards[rows], reduce=global_sum)
        out = {name: compute(name, share) for name in ("reinforce_pp", "reinforce_pp_baseline")}
        out["whiten"] = whiten(values[rows], mask[rows], reduce=global_sum)
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_batch_whitening_over_two_gloo_ranks_equals_the_whole_batch(tmp_path):
    """reinforce_pp's and whiten_advantages' mean and std are over the whole rollout batch even
    when each process holds part of it (real torch.distributed, gloo). Groups sit whole on one
    rank, as the trainer shards them. A per-rank whitening (reduce left out) would differ: each
    share has its own mean."""
    import torch.multiprocessing as mp

    from rlvr.algorithms.advantages import whiten

    mp.spawn(_whiten_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    rewards, ids, mask, token_rewards, values = split_case()
    whole = AdvantageInputs(rewards, ids, response_mask=mask, values=values, token_rewards=token_rewards)
    expected = {name: compute(name, whole) for name in ("reinforce_pp", "reinforce_pp_baseline")}
    expected["whiten"] = whiten(values, mask)
    for name, full in expected.items():
        torch.testing.assert_close(torch.cat([parts[0][name], parts[1][name]]), full, atol=1e-6, rtol=0, msg=name)
    local = whiten(values[:3], mask[:3])
    assert (local - expected["whiten"][:3]).abs().max() > 1e-3  # the per-rank version is caught


def _gradient_rank(rank: int, init_file: str, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    from rlvr.train.distributed import sum_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        both, mine, never = (torch.nn.Parameter(torch.ones(3)) for _ in range(3))
        (both * (rank + 1)).sum().backward()  # every rank: grads 1 and 2
        if rank == 0:
            (mine * 5).sum().backward()  # rank 0 only: rank 1 must still send its (zero) share
        sum_gradients([both, mine, never])
        torch.save({"both": both.grad, "mine": mine.grad, "never": never.grad}, os.path.join(out_dir, f"grad{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_summed_gradients_over_two_gloo_ranks():
    """sum_gradients: a gradient is the sum over ranks; one only some ranks computed counts the
    others' as zero; one no rank computed stays None, as in one process (AdamW skips it: no
    state, no weight decay on a layer that never ran)."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_gradient_rank, args=(f"{tmp}/init", tmp), nprocs=2, join=True)
        for rank in range(2):
            got = torch.load(f"{tmp}/grad{rank}.pt")
            assert torch.equal(got["both"], torch.full((3,), 3.0)) and torch.equal(got["mine"], torch.full((3,), 5.0))
            assert got["never"] is None


def test_a_uniform_group_has_exactly_zero_advantage_whatever_its_reward():
    """Eight rewards of 0.7 sum, in float32, to a mean one ulp off 0.7; divided by a std of
    ~1e-8 (+ eps 1e-6) that gave grpo advantages of ~0.06 to a group with no signal at all.
    The group's mean is now its reward exactly, so every estimator with a group baseline gives 0."""
    rewards = torch.tensor([0.7] * 8 + [0.0, 1.0, 0.3, 0.7], dtype=torch.float32)
    group_ids = torch.tensor([0] * 8 + [1] * 4)
    assert rewards[:8].sum() / 8 != rewards[0]  # the rounding is there
    for name in ("grpo", "dr_grpo", "rloo"):
        adv = compute(name, AdvantageInputs(rewards, group_ids))
        assert torch.equal(adv[:8], torch.zeros(8)), name
        assert adv[8:].abs().sum() > 0.5, name  # the group with spread keeps its advantages
