"""model.autocast=bfloat16 (the GPU default, forced here: this CPU runs bf16 autocast) on real
tiny models: every training forward runs in bf16 matmuls while the weights, their gradients and
AdamW's moments stay float32, and the numbers stay within bf16 rounding of the float32 run's
without being equal to them (which would mean autocast never ran).

What could go wrong, and what would see it: a forward left out of autocast (its numbers equal
the float32 run's), bf16 weights or optimizer state (dtype checks after real steps), logprobs
or values returned in bf16 (dtype checks), a checkpoint written from bf16 copies (its dtype).
"""

import json

import torch
from safetensors.torch import load_file

from rlvr.config import load_config
from rlvr.logging import MetricsLog
from rlvr.models import load_policy
from rlvr.train import checkpoint, state
from rlvr.train.critic import critic_values, load_critic, update_critic
from rlvr.train.rl import train_rl
from rlvr.train.update import frozen_logprobs, update
from tests.train.test_invariance import make_batch
from tests.train.test_rl_plumbing import config as rl_config

BF16 = ["model.autocast=bfloat16"]


def _moments(optimizer) -> set[torch.dtype]:
    return {v.dtype for s in optimizer.state.values() for k, v in s.items() if k != "step"}


def test_an_update_keeps_float32_weights_gradients_and_adamw_state(tiny_llama_dir):
    """One update with a KL reference, with and without autocast: the reference's logprobs (a
    frozen forward under autocast) and the loss (the policy's forward; both runs are given the
    same reference logprobs) are near the float32 ones but not equal."""
    runs = {}
    for autocast in ("off", "bfloat16"):
        cfg = load_config(None, [f"model.name_or_path={tiny_llama_dir}", f"model.autocast={autocast}",
                                 "rl.micro_batch_size=3", "rl.kl_coef=0.1", "rl.lr=1e-2", "rl.max_new_tokens=12"])
        torch.manual_seed(0)
        tr = state.build_trainer(cfg, None)
        batch = make_batch(tr.model.config.vocab_size)
        ref = frozen_logprobs(tr.ref_model, batch, cfg)
        batch.ref_logprobs = runs["off"][1] if runs else ref
        start = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
        metrics = update(tr, batch, cfg, on_policy=False)
        runs[autocast] = metrics, ref, tr
        assert {p.dtype for p in tr.model.parameters()} == {torch.float32}
        assert {p.grad.dtype for p in tr.model.parameters()} == {torch.float32}
        assert _moments(tr.optimizer) == {torch.float32}
        assert any(not torch.equal(start[n], p) for n, p in tr.model.named_parameters())  # the step happened
    (m32, ref32, _), (m16, ref16, tr16) = runs["off"], runs["bfloat16"]
    assert tr16.engine.autocast == torch.bfloat16  # the rollouts decode under it too
    assert ref16.dtype == torch.float32
    torch.testing.assert_close(ref16, ref32, atol=1e-2, rtol=0)  # measured ~3e-3
    assert not torch.equal(ref16, ref32)
    # measured: 2.5e-5 and 1e-3 relative
    assert m16["loss"] != m32["loss"] and abs(m16["loss"] - m32["loss"]) < 1e-2 * abs(m32["loss"])
    assert abs(m16["grad_norm"] - m32["grad_norm"]) < 2e-2 * m32["grad_norm"]


def test_critic_values_and_step_under_autocast(tiny_llama_dir):
    """PPO's critic: its backbone runs under autocast, its head in float32; the values come back
    float32 near the float32 critic's, and its step leaves float32 weights and moments."""
    torch.manual_seed(0)
    critics = [load_critic(str(tiny_llama_dir), autocast=a) for a in ("off", "bfloat16")]
    w = critics[0].head.weight  # [1, H]: zero, which would make every value 0; values of size ~1 instead
    head = torch.randn_like(w) / w.shape[1] ** 0.5
    for c in critics:
        c.head.weight.data.copy_(head)
    batch = make_batch(64)
    v32, v16 = (critic_values(c, batch, micro_batch_size=4) for c in critics)
    assert critics[1].autocast == torch.bfloat16 and v16.dtype == torch.float32
    torch.testing.assert_close(v16, v32, atol=2e-2, rtol=0)  # measured 9e-3 on values of size ~1
    assert not torch.equal(v16, v32)
    batch.old_values, batch.returns = v16, v16 + torch.randn_like(v16) * batch.response_mask
    cfg = load_config(None, ["rl.micro_batch_size=4", *BF16])
    critic = critics[1]
    optimizer = torch.optim.AdamW(critic.parameters(), lr=1e-3)
    metrics = update_critic(critic, optimizer, batch, cfg)
    assert metrics["critic_grad_norm"] > 0
    assert {p.dtype for p in critic.parameters()} == {torch.float32} == _moments(optimizer)


def test_sft_steps_under_autocast(tmp_path):
    """SFT's forward under autocast: the logged loss is near the float32 one, not equal."""
    from rlvr.rewards import resolve
    from rlvr.tasks import load_task
    from rlvr.train.sft import train_sft

    cfg = load_config(None, ["task.sft_examples=40", "task.sft_val=0", "task.eval_per_bucket=2", "sft.max_steps=2",
                             "sft.batch_size=8", "sft.warmup_steps=0"])
    data = load_task(cfg.task, need=("sft",))
    losses = []
    for autocast in (None, torch.bfloat16):
        torch.manual_seed(0)
        model, tok = load_policy("embedded")
        log = MetricsLog(tmp_path / f"{autocast}.jsonl")
        train_sft(model, tok, None, data.sft_train, [], resolve("exact"), "plain", cfg.sft, log, autocast=autocast)
        log.close()
        losses.append([json.loads(r)["loss"] for r in (tmp_path / f"{autocast}.jsonl").read_text().splitlines()])
        assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert len(losses[1]) == 2 and losses[1] != losses[0]
    for a, b in zip(*losses):
        assert abs(a - b) < 1e-2 * a  # measured 2e-4 relative


def test_train_rl_two_steps_end_to_end(tiny_llama_dir, tmp_path):
    """The whole loop under autocast: rollouts decoded under it, the KL reference, the update,
    checkpoints; the engine's sampling logprobs and the trainer's agree (both bf16 forwards),
    and the checkpoint holds the float32 master weights."""
    from tests.train.test_rl_plumbing import CALLS

    CALLS.update(n=0, stop_after=None)
    cfg = rl_config(tiny_llama_dir, tmp_path / "run", rl__steps=2, rl__kl_coef=0.05, model__autocast="bfloat16")
    result = train_rl(cfg, log_fn=lambda *_: None)
    assert result["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["grad_norm"] > 0 and r["generated_tokens"] > 0 for r in rows)
    assert rows[1]["kl"] > 0  # the policy moved away from the reference
    assert max(r["logprob_mismatch"] for r in rows) < 2e-3, rows  # bf16 rounding (measured 4e-4), not another policy
    saved = load_file(str(checkpoint.latest(tmp_path / "run") / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}


def test_weights_nothing_trains_are_held_in_bf16(tiny_llama_dir):
    """Under autocast the KL reference and a LoRA base have no master weights to keep: a LoRA base
    loads in bf16, the reference's linear layers too (half the memory; autocast would otherwise
    cast them again at every forward, as it caches casts of trainable weights only), while every
    trained weight stays float32. The reference keeps its norms and embeddings in float32, so at
    step 0 its logprobs are the policy's exactly (a wholly bf16 one differed by up to 4e-3 here)."""
    base = [f"model.name_or_path={tiny_llama_dir}", *BF16]
    cfg = load_config(None, [*base, "rl.kl_coef=0.1", "rl.micro_batch_size=3"])
    tr = state.build_trainer(cfg, None)
    linear = {id(p) for m in tr.ref_model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()}
    assert {p.dtype for p in tr.ref_model.parameters() if id(p) in linear} == {torch.bfloat16}
    assert {p.dtype for p in tr.ref_model.parameters() if id(p) not in linear} == {torch.float32}
    assert {p.dtype for p in tr.model.parameters()} == {torch.float32}
    batch = make_batch(tr.model.config.vocab_size)
    assert torch.equal(frozen_logprobs(tr.ref_model, batch, cfg), frozen_logprobs(tr.model, batch, cfg))
    tr = state.build_trainer(load_config(None, [*base, "model.lora_r=4"]), None)
    assert {p.dtype for p in tr.model.parameters() if p.requires_grad} == {torch.float32}  # the adapters
    assert {p.dtype for p in tr.model.parameters() if not p.requires_grad} == {torch.bfloat16}  # the base
    tr = state.build_trainer(load_config(None, [f"model.name_or_path={tiny_llama_dir}", "rl.kl_coef=0.1",
                                              "model.autocast=off"]), None)
    assert {p.dtype for p in tr.ref_model.parameters()} == {torch.float32}  # without autocast: as loaded


def test_lora_over_a_bf16_base_trains_end_to_end(tiny_llama_dir, tmp_path):
    """LoRA under autocast: float32 adapters over the bf16 base through rollouts, the update (the
    reference is the base, adapters off) and the adapter checkpoint, which stays float32."""
    from tests.train.test_rl_plumbing import CALLS

    CALLS.update(n=0, stop_after=None)
    cfg = rl_config(tiny_llama_dir, tmp_path / "run", rl__steps=2, rl__kl_coef=0.05, model__autocast="bfloat16",
                    model__lora_r=4)
    assert train_rl(cfg, log_fn=lambda *_: None)["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] > 0 for r in rows) and max(r["logprob_mismatch"] for r in rows) < 2e-3, rows
    saved = load_file(str(checkpoint.latest(tmp_path / "run") / "adapter_model.safetensors"))
    assert saved and {t.dtype for t in saved.values()} == {torch.float32}
