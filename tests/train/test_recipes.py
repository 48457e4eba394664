"""Every shipped algorithm recipe runs through the real loop on a user's checkpoint (toy sizes),
and the pieces each one adds are really exercised: the critic, the reference model, dynamic
sampling, overlong shaping. Whether each one *learns* is benchmarks/algorithms.py's job."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rlvr.cli import recipe_path
from rlvr.config import load_config
from rlvr.rewards.length import overlong_penalty
from rlvr.train import checkpoint
from rlvr.train.rl import train_rl

RECIPES = ["grpo", "dr-grpo", "dapo", "ppo", "rloo", "reinforce-pp"]


def parity_reward(completion, sample):
    """Length parity: about half of any group scores 1, so groups have spread."""
    return float(len(completion) % 2)


def recipe(name, model_dir, out, *extra):
    return load_config(recipe_path(name), [
        f"model.name_or_path={model_dir}", f"output_dir={out}", "sft.before_rl=false", "task.template=auto",
        "task.reward=tests.train.test_recipes:parity_reward", "task.rl_problems=200", "task.eval_per_bucket=4",
        "rl.steps=2", "rl.prompts_per_step=2", "rl.group_size=4", "rl.max_new_tokens=12", "rl.save_every=1",
        "rl.reward_truncated=true", "rl.micro_batch_size=3", "rl.warmup_steps=1", "rl.time_budget_s=0",
        "critic.warmup_steps=1", *(["rl.overlong_buffer=4"] if name == "dapo" else []), *extra])


def rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_runs_and_uses_its_parts(name, tiny_llama_dir, tmp_path):
    cfg = recipe(name, tiny_llama_dir, tmp_path / name)
    result = train_rl(cfg)
    assert result["steps"] == 2
    metrics = rows(tmp_path / name)
    assert len(metrics) == 2 and all(m["kept_rollouts"] > 0 for m in metrics)
    last = metrics[-1]
    assert "grad_norm" in last and last["grad_norm"] > 0
    if cfg.rl.kl_coef > 0 and not cfg.rl.kl_in_reward:
        assert last["kl"] >= 0 and "kl" in last
    if name == "ppo":  # the critic learned at both steps; the policy only after its warm-up step
        assert all(m["value_loss"] > 0 for m in metrics)
        assert "grad_norm" not in metrics[0] and "grad_norm" in metrics[1]
        assert (checkpoint.latest(tmp_path / name) / "critic" / "value_head.pt").exists()
    if name == "dapo":
        assert all(m["sampling_rounds"] >= 1 for m in metrics)
        assert all(m["kept_rollouts"] <= cfg.rl.prompts_per_step * cfg.rl.group_size for m in metrics)


def test_ppo_resume_restores_the_critic_exactly(tiny_llama_dir, tmp_path):
    """Stop after step 1, resume: the policy and the critic end bit-identical to a straight run."""
    straight = tmp_path / "straight"
    train_rl(recipe("ppo", tiny_llama_dir, straight, "rl.steps=3"))
    part = tmp_path / "part"
    train_rl(recipe("ppo", tiny_llama_dir, part, "rl.steps=1"))
    train_rl(recipe("ppo", tiny_llama_dir, part, "rl.steps=3"), resume=True)
    a, b = checkpoint.latest(straight), checkpoint.latest(part)
    for sub in ("", "critic"):
        wa, wb = load_file(str(a / sub / "model.safetensors")), load_file(str(b / sub / "model.safetensors"))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    ha, hb = torch.load(a / "critic" / "value_head.pt"), torch.load(b / "critic" / "value_head.pt")
    assert all(torch.equal(ha[k], hb[k]) for k in ha) and ha["weight"].abs().sum() > 0
    assert [r["value_loss"] for r in rows(straight)] == [r["value_loss"] for r in rows(part)]


def test_the_policy_lr_warms_up_after_the_critic_and_resumes_there(tiny_llama_dir, tmp_path):
    """PPO with critic.warmup_steps=1 and rl.warmup_steps=2: the lr each step's policy update used
    is none in the critic's warm-up, then half, then the full rate (the policy's warm-up starts at
    its first update). A checkpoint saved before the schedule skipped the critic's warm-up (its
    scheduler stepped there too, and its state has no "schedule" entry) resumes on the new one."""
    extra = ("rl.steps=3", "rl.warmup_steps=2", "rl.min_lr_ratio=1.0")
    straight = tmp_path / "straight"
    cfg = recipe("ppo", tiny_llama_dir, straight, *extra)
    train_rl(cfg)
    lrs = [r["lr"] for r in rows(straight)]
    assert lrs == [0.0, cfg.rl.lr / 2, cfg.rl.lr]
    part = tmp_path / "part"
    train_rl(recipe("ppo", tiny_llama_dir, part, *extra[1:], "rl.steps=1"))
    state_file = checkpoint.latest(part) / checkpoint.STATE
    state = torch.load(state_file, weights_only=False)
    del state["schedule"]
    # the old loop stepped the scheduler during the critic's warm-up: one step on, at the full rate
    state["scheduler"].update(last_epoch=1, _last_lr=[cfg.rl.lr])
    state["optimizer"]["param_groups"][0]["lr"] = cfg.rl.lr
    torch.save(state, state_file)
    train_rl(recipe("ppo", tiny_llama_dir, part, *extra), resume=True)
    assert [r["lr"] for r in rows(part)] == lrs


def test_a_value_head_on_the_policy(tiny_llama_dir, tmp_path):
    """critic.shared: the head reads the policy's hidden states; only the head is the critic's,
    the value loss never moves the policy, and the checkpoint's critic is the head alone; resume
    is exact."""
    from rlvr.train import state
    from rlvr.train.critic import update_critic
    from tests.train.test_invariance import make_batch

    cfg = recipe("ppo", tiny_llama_dir, tmp_path / "probe", "critic.shared=true")
    tr = state.build_trainer(cfg, None)
    assert [p.shape for p in tr.critic.parameters()] == [p.shape for p in tr.critic.head.parameters()]
    torch.nn.init.normal_(tr.critic.head.weight, std=0.1)
    batch = make_batch(tr.model.config.vocab_size)
    batch.old_values = torch.zeros(batch.response_mask.shape)
    batch.returns = torch.where(batch.response_mask, 1.0, 0.0)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    head = tr.critic.head.weight.detach().clone()
    update_critic(tr.critic, tr.critic_optimizer, batch, cfg)
    assert all(torch.equal(before[k], v) for k, v in tr.model.state_dict().items())
    assert not torch.equal(head, tr.critic.head.weight)

    straight, part = tmp_path / "straight", tmp_path / "part"
    train_rl(recipe("ppo", tiny_llama_dir, straight, "rl.steps=3", "critic.shared=true"))
    train_rl(recipe("ppo", tiny_llama_dir, part, "rl.steps=1", "critic.shared=true"))
    train_rl(recipe("ppo", tiny_llama_dir, part, "rl.steps=3", "critic.shared=true"), resume=True)
    a, b = checkpoint.latest(straight), checkpoint.latest(part)
    assert sorted(p.name for p in (a / "critic").iterdir()) == ["value_head.pt"]
    ha, hb = torch.load(a / "critic" / "value_head.pt"), torch.load(b / "critic" / "value_head.pt")
    assert all(torch.equal(ha[k], hb[k]) for k in ha) and ha["weight"].abs().sum() > 0
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_dynamic_sampling_resamples_until_the_batch_is_full(tiny_llama_dir, tmp_path):
    """With a reward that gives most groups no spread, DAPO samples more rounds and trains on
    exactly prompts_per_step groups when it finds them."""
    cfg = recipe("dapo", tiny_llama_dir, tmp_path / "d", "rl.max_sampling_rounds=6", "rl.overlong_buffer=0",
                 "task.reward=tests.train.test_recipes:rare_reward")
    train_rl(cfg)
    metrics = rows(tmp_path / "d")
    assert max(m["sampling_rounds"] for m in metrics) > 1
    for m in metrics:
        assert m["kept_rollouts"] % cfg.rl.group_size == 0
        assert m["kept_rollouts"] <= cfg.rl.prompts_per_step * cfg.rl.group_size


def rare_reward(completion, sample):
    """1 only for responses containing '7' and of odd length: most groups are all zeros."""
    return float("7" in completion and len(completion) % 2 == 1)


def test_overlong_penalty_by_hand():
    # max 96, buffer 16: free up to 80 tokens; 88 is half-way into the buffer -> -0.5 * penalty
    assert overlong_penalty(80, 96, 16) == 0.0
    assert overlong_penalty(88, 96, 16, penalty=1.0) == -0.5
    assert overlong_penalty(96, 96, 16, penalty=0.5) == -0.5
    assert overlong_penalty(120, 96, 16) == -1.0
    assert overlong_penalty(96, 96, 0) == 0.0  # off
