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


def test_whitening_changes_the_advantages_but_not_the_critic_targets(tiny_llama_dir):
    cfg = load_config(None, ["rl.advantage=gae", "rl.skip_uniform_groups=false", "rl.micro_batch_size=4",
                             "rl.whiten_advantages=true"])
    tr = _trainer(tiny_llama_dir, cfg, critic=True)
    tr.ref_model = None
    batch = make_batch(tr.model.config.vocab_size)
    batch.rewards = torch.arange(11, dtype=torch.float) / 10
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
