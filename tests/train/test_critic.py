"""The critic and the loop's stage 3 (reference logprobs, KL in the reward, values, advantages)
on a real tiny model, checked against the definitions computed independently."""

import torch

from rlvr.algorithms.advantages import AdvantageInputs, compute
from rlvr.config import load_config
from rlvr.models import load_policy
from rlvr.train.critic import critic_values, explained_variance, load_critic
from rlvr.train.rl import Trainer, add_advantages
from tests.train.test_invariance import make_batch


def test_value_at_t_sees_only_tokens_before_t(tiny_llama_dir):
    critic = load_critic(str(tiny_llama_dir))
    torch.nn.init.normal_(critic.head.weight)  # a zero head would make every value 0
    ids = torch.randint(3, 40, (1, 10))
    attn = torch.ones_like(ids, dtype=torch.bool)
    changed = ids.clone()
    changed[0, 5] = (ids[0, 5] + 1 - 3) % 37 + 3
    with torch.no_grad():
        a, b = critic(ids, attn), critic(changed, attn)
    assert a[0, 0] == 0  # no state before the first token
    torch.testing.assert_close(a[0, :6], b[0, :6])  # V_t is the value before token t
    assert (a[0, 6:] - b[0, 6:]).abs().max() > 1e-6


def test_a_fresh_critic_predicts_zero(tiny_llama_dir):
    batch = make_batch(64)
    values = critic_values(load_critic(str(tiny_llama_dir)), batch, micro_batch_size=4)
    assert torch.equal(values, torch.zeros_like(values))


def _trainer(model_dir, cfg, critic=False):
    model, tok = load_policy(str(model_dir), dtype="float32")
    ref, _ = load_policy(str(model_dir), dtype="float32")
    with torch.no_grad():  # a reference that differs from the policy, so KL is not 0
        for p in ref.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tr = Trainer(model, tok, None, None, None, None, ref_model=ref)
    if critic:
        tr.critic = load_critic(str(model_dir))
        torch.nn.init.normal_(tr.critic.head.weight, std=0.1)
    return tr


def test_kl_in_the_reward_for_a_sequence_level_estimator(tiny_llama_dir):
    """rloo with kl_in_reward: each rollout's reward becomes r - beta * sum_t (logp_t - ref_t),
    with logp the policy's own logprobs (one full forward here, not the micro-batched one), then
    leave-one-out. The batch's engine logprobs are made up, so using them would fail this."""
    cfg = load_config(None, ["rl.advantage=rloo", "rl.kl_coef=0.1", "rl.kl_in_reward=true",
                             "rl.skip_uniform_groups=false", "rl.micro_batch_size=4",
                             "model.autocast=off"])  # the reference below is a float32 forward
    tr = _trainer(tiny_llama_dir, cfg)
    batch = make_batch(tr.model.config.vocab_size)
    batch.rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    add_advantages(tr, batch, cfg)
    assert batch.ref_logprobs.abs().sum() > 0
    with torch.no_grad():
        logits = tr.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # [B, T, V]
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    logp = torch.cat([torch.zeros(len(batch), 1), logp], 1)  # logp[:, t] scores token t
    kl = torch.where(batch.response_mask, logp - batch.ref_logprobs, 0.0).sum(-1)  # [B]
    expected = compute("rloo", AdvantageInputs(batch.rewards - 0.1 * kl, batch.group_ids))
    torch.testing.assert_close(batch.advantages, expected)


def test_gae_stage_gives_returns_for_the_critic(tiny_llama_dir):
    """With a critic, lambda = 1, gamma = 1 and no KL: A_t = R - V_t and returns = R on every
    response token (the Monte-Carlo return of a terminal reward)."""
    cfg = load_config(None, ["rl.advantage=gae", "rl.skip_uniform_groups=false", "rl.micro_batch_size=4"])
    tr = _trainer(tiny_llama_dir, cfg, critic=True)
    tr.ref_model = None
    batch = make_batch(tr.model.config.vocab_size)
    batch.rewards = torch.arange(11, dtype=torch.float) / 10
    add_advantages(tr, batch, cfg)
    mask = batch.response_mask
    R = batch.rewards[:, None].expand_as(mask)
    assert batch.old_values[mask].abs().min() > 0
    torch.testing.assert_close(batch.advantages, torch.where(mask, R - batch.old_values, 0.0))
    torch.testing.assert_close(batch.returns, torch.where(mask, R, 0.0))


def _whitened_gae(model_dir):
    """A critic trainer, a batch with spread rewards and the config of whitened GAE advantages."""
    cfg = load_config(None, ["rl.advantage=gae", "rl.skip_uniform_groups=false", "rl.micro_batch_size=4",
                             "rl.whiten_advantages=true"])
    tr = _trainer(model_dir, cfg, critic=True)
    tr.ref_model = None
    batch = make_batch(tr.model.config.vocab_size)
    batch.rewards = torch.arange(11, dtype=torch.float) / 10
    return tr, batch, cfg


def test_whitening_changes_the_advantages_but_not_the_critic_targets(tiny_llama_dir):
    tr, batch, cfg = _whitened_gae(tiny_llama_dir)
    add_advantages(tr, batch, cfg)
    mask = batch.response_mask
    a = batch.advantages[mask]
    assert abs(a.mean().item()) < 1e-5 and abs(a.std().item() - 1) < 1e-4  # unbiased std, as `whiten` uses
    assert torch.equal(batch.advantages[~mask], torch.zeros_like(batch.advantages[~mask]))
    torch.testing.assert_close(batch.returns, torch.where(mask, batch.rewards[:, None].expand_as(mask), 0.0))


def test_explained_variance_of_constant_returns_is_zero_not_rounding_noise():
    """With gamma = lam = 1 every return is the outcome: returns = A + V equal it up to float32
    rounding. Var(R) is then ~1e-15, and 1 - Var(R - V) / Var(R) was logged as -1e11."""
    values = torch.randn(4, 6)  # [B, T]
    returns = (1.0 - values) + values  # [B, T] 1.0 plus rounding
    mask = torch.ones(4, 6)
    assert returns.var() > 0  # the rounding is there
    assert explained_variance(values, returns, mask) == 0.0
    # a real spread is still measured: returns = V + noise explains most of Var(R)
    noisy = values + 0.1 * torch.randn(4, 6)
    assert 0.5 < explained_variance(values, noisy, mask) <= 1.0


def test_a_shared_critic_on_a_lora_policy(tiny_llama_dir):
    """critic.shared with model.lora_r: the head reads the decoder under the peft wrapper (whose
    base_model is the whole causal LM: its output has no last_hidden_state), and the head is
    float32 like the adapters that train, though the frozen base is bf16."""
    peft = __import__("pytest").importorskip("peft")
    model, _ = load_policy(str(tiny_llama_dir), dtype="bfloat16")
    policy = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    critic = load_critic(str(tiny_llama_dir), policy=policy)
    assert critic.head.weight.dtype == torch.float32
    torch.nn.init.normal_(critic.head.weight)
    batch = make_batch(model.config.vocab_size)
    values = critic_values(critic, batch, micro_batch_size=4)  # [B, T]
    assert values[batch.response_mask].abs().min() > 0


def test_a_shared_critic_reads_the_policy_without_dropout(tiny_llama_dir):
    """The shared backbone is the policy, which the update leaves in training mode: with dropout
    in the policy, V_old (the value-clipping anchor) and the value loss would each draw masks."""
    policy, _ = load_policy(str(tiny_llama_dir), dtype="float32")
    for module in policy.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.5
    policy.train()
    critic = load_critic(str(tiny_llama_dir), policy=policy)
    torch.nn.init.normal_(critic.head.weight)
    critic.train()  # as update_critic leaves it
    ids = torch.randint(3, 40, (2, 12))
    attn = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(critic(ids, attn), critic(ids, attn), rtol=0, atol=0)
    assert policy.training  # and the policy is left in its mode
    with torch.no_grad():  # the dropout is real: the policy's own forward draws masks
        a, b = policy(ids).logits, policy(ids).logits
    assert (a - b).abs().max() > 1e-3


def test_batch_whitening_uses_only_the_rows_trained_on(tiny_llama_dir):
    """rl.whiten_advantages with rows left out (uniform groups, truncated rows): the advantages the
    update sees have mean 0 and std 1 over its own tokens. Whitening over every row counted the
    left-out rows' tokens too, so the trained advantages' scale moved with the share left out."""
    tr, batch, cfg = _whitened_gae(tiny_llama_dir)
    trained = torch.tensor([True, False] * 5 + [True])  # [B]
    add_advantages(tr, batch, cfg, trained)
    kept = batch.response_mask & trained[:, None]
    a = batch.advantages[kept]
    assert abs(a.mean().item()) < 1e-5 and abs(a.std().item() - 1) < 1e-4
    assert batch.advantages[batch.response_mask & ~trained[:, None]].abs().sum() > 0  # still shifted and scaled
    # reinforce_pp whitens inside the estimator: the same rule
    cfg = load_config(None, ["rl.advantage=reinforce_pp", "rl.skip_uniform_groups=false", "rl.micro_batch_size=4"])
    tr.critic = None
    add_advantages(tr, batch, cfg, trained)
    a = batch.advantages[kept]
    assert abs(a.mean().item()) < 1e-5 and abs(a.std().item() - 1) < 1e-4


def test_the_policy_schedule_starts_after_the_critic_warmup(tiny_llama_dir):
    """PPO with critic.warmup_steps: the policy's lr warmup begins at its first update and the
    cosine reaches its floor at rl.steps. Stepped through the critic's warm-up, the first policy
    update (fresh AdamW moments) came at nearly the full rate."""
    from rlvr.train.state import make_optimizer, policy_steps

    cfg = load_config(None, ["rl.advantage=gae", "rl.skip_uniform_groups=false", "rl.steps=10",
                             "critic.warmup_steps=4", "rl.warmup_steps=2", "rl.min_lr_ratio=0.1", "rl.lr=1e-3"])
    model, _ = load_policy(str(tiny_llama_dir), dtype="float32")
    assert policy_steps(cfg) == 6
    _, sched = make_optimizer(model, cfg)
    lrs = []
    for _ in range(policy_steps(cfg)):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    assert lrs[0] == 1e-3 / 2 and lrs[1] == 1e-3  # warmup: 1/2, 2/2 of the base
    assert sched.get_last_lr()[0] == __import__("pytest").approx(1e-4)  # the floor, after the last update


def _stage3(tr, cfg, trained):
    batch = make_batch(tr.model.config.vocab_size)
    batch.rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    add_advantages(tr, batch, cfg, trained)
    return batch


def test_rows_left_out_get_no_reference_or_critic_forward(tiny_llama_dir):
    """Rows the update leaves out (uniform groups, truncated ones) need no reference logprobs
    and no values when those reach only the row's own advantage (KL in the loss; GAE, per row):
    they are not computed (0), and the trained rows get exactly what computing every row gives.
    With KL in the reward and a group baseline every row's penalty moves its group's baseline,
    so every row is computed there."""
    trained = torch.tensor([True, False] * 5 + [True])  # [B]
    for overrides, critic in ((["rl.advantage=grpo", "rl.kl_coef=0.1"], False),
                              (["rl.advantage=gae", "rl.whiten_advantages=true"], True),
                              (["rl.advantage=gae", "rl.kl_coef=0.1", "rl.kl_in_reward=true"], True)):
        cfg = load_config(None, overrides + ["rl.skip_uniform_groups=false", "rl.micro_batch_size=4",
                                             "model.autocast=off"])
        tr = _trainer(tiny_llama_dir, cfg, critic=critic)
        full, part = _stage3(tr, cfg, None), _stage3(tr, cfg, trained)
        assert part.ref_logprobs[~trained].abs().sum() == 0, overrides  # never computed
        torch.testing.assert_close(part.ref_logprobs[trained], full.ref_logprobs[trained], rtol=0, atol=0)
        if critic:
            assert part.old_values[~trained].abs().sum() == 0
            torch.testing.assert_close(part.old_values[trained], full.old_values[trained], rtol=0, atol=0)
            torch.testing.assert_close(part.returns[trained], full.returns[trained], rtol=0, atol=0)
        if "rl.whiten_advantages=true" not in overrides:  # whitening's statistics are over the trained rows
            torch.testing.assert_close(part.advantages[trained], full.advantages[trained], rtol=0, atol=0)
    cfg = load_config(None, ["rl.advantage=rloo", "rl.kl_coef=0.1", "rl.kl_in_reward=true",
                             "rl.skip_uniform_groups=false", "rl.micro_batch_size=4", "model.autocast=off"])
    tr = _trainer(tiny_llama_dir, cfg)
    part = _stage3(tr, cfg, trained)
    assert part.ref_logprobs[~trained].abs().sum() > 0  # the baseline reads every row's KL
    torch.testing.assert_close(part.advantages, _stage3(tr, cfg, None).advantages, rtol=0, atol=0)
