"""The gradient of one update does not depend on how the rollout batch is cut: all at once, in
micro-batches with accumulation, or split over 2 processes (real torch.distributed, gloo).

Each aggregation mode has a global normaliser (aggregation.py) that the update sums over
micro-batches and ranks before dividing, and the ranks' gradients are summed afterwards
(train/distributed.py). A per-micro-batch or per-rank mean would pass the first case and fail
the others: the micro-batches and rank shares below hold different numbers of tokens.
"""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlvr.config import load_config
from rlvr.models import load_policy
from rlvr.train.update import policy_gradients
from rlvr.types import RolloutBatch

MODES = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant_norm"]
RANK_SPLIT = 4  # rank 0 takes rows 0..3, rank 1 rows 4..10: unequal rows and tokens


def make_batch(vocab: int, seed: int = 0) -> RolloutBatch:
    """11 rollouts, prompts of 2-5 tokens, responses of 1-9 tokens, right-padded; one token-level
    advantage per response token (so per-token weighting matters) and rollout-time logprobs a
    little off the current ones (so ratios are not all 1 and some tokens clip)."""
    g = torch.Generator().manual_seed(seed)
    B, T = 11, 16
    ids = torch.randint(3, vocab, (B, T), generator=g)
    attention = torch.zeros(B, T, dtype=torch.bool)
    response = torch.zeros(B, T, dtype=torch.bool)
    for i in range(B):
        p = int(torch.randint(2, 6, (1,), generator=g))
        n = int(torch.randint(1, 10, (1,), generator=g))
        attention[i, : p + n] = True
        response[i, p : p + n] = True
    ids[~attention] = 0
    old = torch.where(response, -2.0 + 0.3 * torch.randn(B, T, generator=g), 0.0)
    adv = torch.where(response, torch.randn(B, T, generator=g), 0.0)
    return RolloutBatch(ids, attention, response, old, adv, torch.zeros(B), torch.arange(B) // 3)


def gradients(model_dir, mode: str, micro: int, rows=slice(None)) -> dict[str, torch.Tensor]:
    cfg = load_config(None, [f"rl.aggregation={mode}", f"rl.micro_batch_size={micro}", "rl.max_new_tokens=12",
                             "rl.clip_low=0.1", "rl.clip_high=0.1",
                             "model.autocast=off"])  # float32 arithmetic: bf16 autocast (model.autocast=auto on a GPU) rounds these sums differently
    torch.manual_seed(0)
    model, _ = load_policy(str(model_dir), dtype="float32")
    model.zero_grad(set_to_none=True)
    batch = make_batch(model.config.vocab_size).select(rows)
    policy_gradients(model, batch, cfg, on_policy=False)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _rank_main(rank: int, model_dir, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        rows = slice(0, RANK_SPLIT) if rank == 0 else slice(RANK_SPLIT, None)
        grads = {m: gradients(model_dir, m, micro=3, rows=rows) for m in MODES}
        torch.save(grads, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("mode", MODES)
def test_micro_batching_does_not_change_the_gradient(tiny_llama_dir, mode):
    whole = gradients(tiny_llama_dir, mode, micro=64)
    assert_same(whole, gradients(tiny_llama_dir, mode, micro=3))
    assert_same(whole, gradients(tiny_llama_dir, mode, micro=1))
    assert any(g.abs().sum() > 0 for g in whole.values())


def test_two_gloo_ranks_give_the_single_process_gradient(tiny_llama_dir, tmp_path):
    mp.spawn(_rank_main, args=(tiny_llama_dir, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for mode in MODES:
        whole = gradients(tiny_llama_dir, mode, micro=64)
        # after the all-reduce every rank holds the same, full gradient
        assert_same(whole, per_rank[0][mode])
        assert_same(whole, per_rank[1][mode])


def test_a_per_rank_mean_would_be_caught(tiny_llama_dir):
    """The test above can fail: averaging each half's own token-mean gradient (what a naive DDP
    setup computes) differs from the global token mean when the halves hold different numbers of
    tokens."""
    whole = gradients(tiny_llama_dir, "token_mean", micro=64)
    halves = [gradients(tiny_llama_dir, "token_mean", micro=64, rows=r)
              for r in (slice(0, RANK_SPLIT), slice(RANK_SPLIT, None))]
    naive = {n: (halves[0][n] + halves[1][n]) / 2 for n in whole}
    assert max((naive[n] - whole[n]).abs().max() for n in whole) > 1e-4


def test_logprob_mismatch_is_not_reported_under_top_p(tiny_llama_dir):
    """With top_p < 1 the engine's logprobs are those of the nucleus, renormalised (the
    distribution it sampled), so they differ from the trainer's full-softmax ones by design:
    the metric would read ~0.2 nats of made-up mismatch (a reviewer's measurement at top_p 0.8)."""
    model, _ = load_policy(str(tiny_llama_dir), dtype="float32")
    for top_p, measured in ((1.0, True), (0.8, False)):
        cfg = load_config(None, ["rl.skip_uniform_groups=false", "model.autocast=off", f"rl.top_p={top_p}"])
        model.zero_grad()
        value = policy_gradients(model, make_batch(model.config.vocab_size), cfg, on_policy=True)["logprob_mismatch"]
        assert (value == value) == measured, (top_p, value)  # NaN (logged as null) when not measured
