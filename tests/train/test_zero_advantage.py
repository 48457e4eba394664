"""Rows with exactly zero advantage are left out of the update's forward and backward
(rl.skip_zero_advantage_rows), and the update is the same as computing them.

Under the PPO-clip and GSPO losses a row whose advantages are all 0 has loss
-min(r * 0, clip(r) * 0) = 0 on every token and gradient -0 * dr/dtheta = 0, whatever its
logprobs; it still counts in the normaliser (its tokens under token_mean, the row under
seq_mean_token_mean). Uniform groups under GRPO with 0/1 rewards are such rows: TRL and verl
compute them anyway. A KL or entropy term does not vanish with A, so then nothing is skipped.
"""

import pytest
import torch

from rlvr.algorithms.losses import rows_with_gradient
from rlvr.config import load_config
from rlvr.models import load_policy
from rlvr.train.update import frozen_logprobs, policy_gradients, update
from rlvr.train.state import make_optimizer
from tests.train.test_invariance import MODES, assert_same, make_batch


def test_rows_with_gradient_by_hand():
    mask = torch.tensor([[0, 1, 1, 0], [0, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    per_row = torch.tensor([0.0, 0.5, -0.0, -1.0])
    kw = dict(kl_coef=0.0, entropy_coef=0.0)
    assert rows_with_gradient("ppo_clip", per_row, mask, **kw).tolist() == [False, True, False, True]
    assert rows_with_gradient("gspo", per_row, mask, **kw).tolist() == [False, True, False, True]
    # per-token advantages: only response tokens matter; row 0 is nonzero on padding only, row 3 on
    # its last response token only
    per_token = torch.tensor([[9.0, 0, 0, 9], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.1]])
    assert rows_with_gradient("ppo_clip", per_token, mask, **kw).tolist() == [False, True, False, True]
    # a NaN advantage is not zero: the row is computed and the NaN shows
    assert rows_with_gradient("ppo_clip", torch.tensor([float("nan"), 0, 0, 0]), mask, **kw).tolist()[0]
    # terms that do not vanish with A, or a loss not known to vanish: every row
    assert rows_with_gradient("ppo_clip", per_row, mask, kl_coef=0.1, entropy_coef=0.0).all()
    assert rows_with_gradient("ppo_clip", per_row, mask, kl_coef=0.0, entropy_coef=0.01).all()
    assert rows_with_gradient("someone_elses_loss", per_row, mask, **kw).all()


def zeroed(batch, rows: list[int], per_row: bool):
    """The batch with exactly zero advantages on `rows` (per row [B], or per token [B, T])."""
    per_row_adv = torch.arange(len(batch)) * 0.3 - 1.45  # [B] -1.45 .. 1.55, none of them 0
    adv = per_row_adv if per_row else batch.advantages.clone()  # [B] or [B, T]
    adv[rows] = 0.0
    batch.advantages = adv
    return batch


def run(model_dir, mode: str, skip: bool, per_row: bool, zero_rows: list[int]):
    cfg = load_config(None, [f"rl.aggregation={mode}", "rl.micro_batch_size=4", "rl.max_new_tokens=12",
                             "rl.clip_low=0.1", "rl.clip_high=0.1", f"rl.skip_zero_advantage_rows={skip}",
                             "model.autocast=off"])  # float32 arithmetic: bf16 autocast (model.autocast=auto on a GPU) rounds these sums differently
    model, _ = load_policy(str(model_dir), dtype="float32")
    model.zero_grad(set_to_none=True)
    batch = zeroed(make_batch(model.config.vocab_size), zero_rows, per_row)
    metrics = policy_gradients(model, batch, cfg, on_policy=False)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, metrics


@pytest.mark.parametrize("per_row", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_skipping_zero_advantage_rows_leaves_the_gradient_unchanged(tiny_llama_dir, mode, per_row):
    zero_rows = [0, 3, 4, 5, 9]  # 5 of 11, spread over the micro-batches
    computed, m_skip = run(tiny_llama_dir, mode, True, per_row, zero_rows)
    full, m_full = run(tiny_llama_dir, mode, False, per_row, zero_rows)
    assert m_skip["zero_adv_skipped"] == pytest.approx(5 / 11) and m_full["zero_adv_skipped"] == 0
    assert_same(full, computed)
    assert m_skip["loss"] == pytest.approx(m_full["loss"], abs=1e-6)
    assert any(g.abs().sum() > 0 for g in full.values())


def test_the_check_would_catch_a_row_wrongly_skipped(tiny_llama_dir):
    """The test above can fail: dropping the advantage term of rows whose advantage is not zero
    (rows 6 and 8: positive, so unclipped at these ratios) changes the gradient."""
    full, _ = run(tiny_llama_dir, "token_mean", False, True, [0])
    batch_minus_rows = run(tiny_llama_dir, "token_mean", False, True, [0, 6, 8])[0]
    assert max((full[n] - batch_minus_rows[n]).abs().max() for n in full) > 1e-4


def test_nothing_is_skipped_with_a_kl_term(tiny_llama_dir):
    model, _ = load_policy(str(tiny_llama_dir), dtype="float32")
    batch = zeroed(make_batch(model.config.vocab_size), [0, 3], True)
    batch.ref_logprobs = batch.old_logprobs - 0.1
    cfg = load_config(None, ["rl.micro_batch_size=4", "rl.max_new_tokens=12", "rl.kl_coef=0.1"])
    assert policy_gradients(model, batch, cfg, on_policy=False)["zero_adv_skipped"] == 0


def test_nothing_is_skipped_with_dropout(tiny_llama_dir):
    """With dropout active the rows computed would draw other masks: the same update only in
    distribution, so every row is computed."""
    model, _ = load_policy(str(tiny_llama_dir), dtype="float32")
    model.config.attention_dropout = 0.1  # HF attention reads it in training mode
    batch = zeroed(make_batch(model.config.vocab_size), [0, 3], True)
    cfg = load_config(None, ["rl.micro_batch_size=4", "rl.max_new_tokens=12"])
    assert policy_gradients(model, batch, cfg, on_policy=False)["zero_adv_skipped"] == 0


def test_lora_dropout_counts_as_dropout(tiny_llama_dir):
    from rlvr.models import add_lora
    from rlvr.train.update import _has_dropout

    for rate, expected in ((0.0, False), (0.1, True)):
        model, _ = load_policy(str(tiny_llama_dir), dtype="float32")
        cfg = load_config(None, [f"model.name_or_path={tiny_llama_dir}", "model.lora_r=4",
                                 f"model.lora_dropout={rate}"]).model
        assert _has_dropout(add_lora(model, cfg)) is expected


def test_an_all_zero_batch_still_steps_adamw(tiny_llama_dir):
    """With every row skipped there is no backward at all, yet AdamW must step as it would on
    the zero gradient TRL computes: momentum from earlier steps still moves the weights, and
    weight decay shrinks them. Parameters after two updates (one real, one all-zero) match."""
    after = {}
    for skip in (True, False):
        cfg = load_config(None, ["rl.micro_batch_size=4", "rl.max_new_tokens=12", "rl.lr=1e-2", "rl.weight_decay=0.1",
                                 f"rl.skip_zero_advantage_rows={skip}"])
        model, _ = load_policy(str(tiny_llama_dir), dtype="float32")
        optimizer, _ = make_optimizer(model, cfg)
        tr = type("Trainer", (), {"model": model, "optimizer": optimizer})()
        batch = make_batch(model.config.vocab_size)
        update(tr, zeroed(batch, [], True), cfg, on_policy=False)  # a real step: momentum is nonzero
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        metrics = update(tr, zeroed(make_batch(model.config.vocab_size), list(range(11)), True), cfg, on_policy=False)
        assert metrics["grad_norm"] == 0.0
        assert metrics["zero_adv_skipped"] == (1.0 if skip else 0.0)
        if skip:  # nothing computed: the per-token metrics are unknown, logged as null
            assert all(metrics[k] != metrics[k] for k in ("entropy", "clip_frac", "ratio_mean", "ratio_max", "ratio_min"))
        assert all((p != before[n]).any() for n, p in model.named_parameters())  # the zero-gradient step moved them
        after[skip] = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert_same(after[False], after[True])


def _rank_main(rank: int, model_dir, init_file: str, out_dir: str) -> None:
    import os

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        cfg = load_config(None, ["rl.micro_batch_size=4", "rl.max_new_tokens=12", "rl.clip_low=0.1", "rl.clip_high=0.1",
                                 "model.autocast=off"])  # as run() computes the whole batch: float32
        model, _ = load_policy(str(model_dir), dtype="float32")
        batch = zeroed(make_batch(model.config.vocab_size), ZERO_ON_RANK0, True)
        share = batch.select(slice(0, 4) if rank == 0 else slice(4, None))  # rank 0's rows are all zero
        metrics = policy_gradients(model, share, cfg, on_policy=False)
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        torch.save((grads, metrics), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


ZERO_ON_RANK0 = [0, 1, 2, 3, 7]


def test_a_rank_with_only_zero_advantage_rows_joins_the_sum(tiny_llama_dir, tmp_path):
    """Under torchrun, a rank whose whole share is skipped runs no backward, yet its (zero)
    gradient joins the all-reduce and every rank ends with the single-process gradient."""
    import torch.multiprocessing as mp

    mp.spawn(_rank_main, args=(tiny_llama_dir, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    whole, m_whole = run(tiny_llama_dir, "token_mean", True, True, ZERO_ON_RANK0)
    for r, skipped in enumerate((4, 1)):  # each rank's share of the batch's fraction; they sum to 5/11
        grads, metrics = torch.load(tmp_path / f"rank{r}.pt")
        assert_same(whole, grads)
        assert metrics["zero_adv_skipped"] == pytest.approx(skipped / 11)
    assert m_whole["zero_adv_skipped"] == pytest.approx(5 / 11)


def half_uniform(completion, sample):
    """Problems with an odd-length prompt score 1 whatever the answer (a uniform group, zero
    advantage); the others by the parity of the response's length (spread)."""
    return 1.0 if len(sample.prompt) % 2 else float(len(completion) % 2)


@pytest.mark.parametrize("inner_epochs", [1, 2])
def test_training_with_and_without_the_skip_ends_at_the_same_weights(tiny_llama_dir, tmp_path, inner_epochs):
    """Whole RL steps (on-policy, and PPO-style reuse, where the frozen rollout logprobs are only
    computed for the rows the update reads): skipping changes nothing but the work done."""
    import json

    from safetensors.torch import load_file

    from rlvr.train import checkpoint
    from rlvr.train.rl import train_rl

    weights, skipped = {}, {}
    for skip in (True, False):
        out = tmp_path / str(skip)
        cfg = load_config(None, [
            f"model.name_or_path={tiny_llama_dir}", f"output_dir={out}", "task.template=auto",
            "task.reward=tests.train.test_zero_advantage:half_uniform", "task.rl_problems=100", "task.eval_per_bucket=4",
            "rl.steps=2", "rl.prompts_per_step=4", "rl.group_size=4", "rl.max_new_tokens=10", "rl.save_every=2",
            "rl.reward_truncated=true", "rl.skip_uniform_groups=false", "rl.micro_batch_size=5", "rl.lr=1e-2",
            f"rl.inner_epochs={inner_epochs}", f"rl.skip_zero_advantage_rows={skip}",
            "model.autocast=off"])  # float32 arithmetic: bf16 autocast (model.autocast=auto on a GPU) rounds these sums differently
        train_rl(cfg, log_fn=lambda *_: None)
        weights[skip] = load_file(str(checkpoint.latest(out) / "model.safetensors"))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        skipped[skip] = [r["zero_adv_skipped"] for r in rows]
    assert max(skipped[True]) > 0 and max(skipped[False]) == 0
    # whole steps, not one gradient: the micro-batches hold other rows with and without the skip,
    # so float32 sums round differently, and AdamW's first steps (lr 1e-2, update ~ lr * sign)
    # carry that into the weights: measured up to 1.5e-6 on weights of ~0.08. A gradient that
    # differed in substance (a row's share lost) would move them by ~lr = 1e-2.
    for name in weights[False]:
        torch.testing.assert_close(weights[True][name], weights[False][name], atol=1e-5, rtol=1e-4, msg=name)


def test_the_ratio_range_is_over_the_tokens_computed(tiny_llama_dir):
    """ratio_min / ratio_max are the range over the update's tokens: with every rollout-time
    logprob 0.1 below the current one, every ratio is e^0.1, and 1.0 (where the range used to
    start) is not in it."""
    import math

    cfg = load_config(None, ["rl.micro_batch_size=4", "rl.skip_zero_advantage_rows=false", "model.autocast=off"])
    model, _ = load_policy(str(tiny_llama_dir), dtype="float32")
    optimizer, _ = make_optimizer(model, cfg)
    tr = type("Trainer", (), {"model": model, "optimizer": optimizer})()
    batch = make_batch(model.config.vocab_size)
    batch.old_logprobs = frozen_logprobs(model, batch, cfg) - 0.1 * batch.response_mask.float()
    metrics = update(tr, batch, cfg, on_policy=False)
    assert metrics["ratio_min"] == pytest.approx(math.exp(0.1), rel=1e-4)
    assert metrics["ratio_max"] == pytest.approx(math.exp(0.1), rel=1e-4)
