"""LoRA through peft: only the adapters train, the reference is the base model (adapters off,
no second copy), checkpoints hold the adapters and load in plain transformers, resume is exact."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rlvr.config import ConfigError, load_config
from rlvr.train import checkpoint
from rlvr.train.rl import train_rl

pytest.importorskip("peft")


def config(model_dir, out, *extra):
    return load_config(None, [
        f"model.name_or_path={model_dir}", f"output_dir={out}", "model.lora_r=4", "task.template=auto",
        "task.reward=tests.train.test_recipes:parity_reward", "task.rl_problems=200", "task.eval_per_bucket=4",
        "rl.prompts_per_step=2", "rl.group_size=4", "rl.max_new_tokens=12", "rl.reward_truncated=true",
        "rl.micro_batch_size=3", "rl.skip_uniform_groups=false", "rl.kl_coef=0.1", "rl.lr=0.05", "rl.save_every=2",
        *extra])


def test_lora_trains_adapters_only_and_resumes(tiny_llama_dir, tmp_path):
    straight = train_rl(config(tiny_llama_dir, tmp_path / "a", "rl.steps=4"), log_fn=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-7)  # step 1: adapters start at zero, policy = base
    assert rows[-1]["kl"] > 0  # the adapters moved the policy away from the base (the reference)
    ckpt = checkpoint.latest(tmp_path / "a")
    adapter = load_file(str(ckpt / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)  # the checkpoint holds the adapters only
    assert not (ckpt / "model.safetensors").exists()

    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(ckpt)  # transformers + peft load it as it is
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert not torch.allclose(loaded(input_ids=ids).logits, base(input_ids=ids).logits)

    train_rl(config(tiny_llama_dir, tmp_path / "b", "rl.steps=2"), log_fn=lambda *_: None)
    resumed = train_rl(config(tiny_llama_dir, tmp_path / "b", "rl.steps=4"), resume=True, log_fn=lambda *_: None)
    assert resumed["steps"] == straight["steps"] == 4
    again = load_file(str(checkpoint.latest(tmp_path / "b") / "adapter_model.safetensors"))
    for k in adapter:
        torch.testing.assert_close(adapter[k], again[k], rtol=1e-5, atol=1e-6)


def test_lora_needs_a_saved_base_model():
    with pytest.raises(ConfigError, match="model.lora_r with model.name_or_path=embedded"):
        load_config(None, ["model.lora_r=8"])


def test_frozen_logprobs_draw_no_dropout(tiny_llama_dir, tmp_path):
    """With lora_dropout the policy in training mode draws a mask at every forward. The rollout
    policy's logprobs (inner_epochs > 1, kl_in_reward) are a fixed reference: taken in eval mode,
    two takes agree and equal the policy's dropout-free logprobs, and the mode is given back."""
    from rlvr.models import add_lora, load_policy
    from rlvr.train.forward import token_stats
    from rlvr.train.update import frozen_logprobs
    from tests.train.test_invariance import make_batch

    cfg = config(tiny_llama_dir, tmp_path, "model.lora_dropout=0.5", "model.autocast=off")
    model, tok = load_policy(str(tiny_llama_dir))
    model = add_lora(model, cfg.model)
    with torch.no_grad():  # adapters away from zero, so their dropout changes the output
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.train()
    batch = make_batch(len(tok))
    first, second = frozen_logprobs(model, batch, cfg), frozen_logprobs(model, batch, cfg)
    assert model.training and torch.equal(first, second)
    model.eval()
    with torch.no_grad():
        lp, _ = token_stats(model, batch, cfg.rl.temperature)
    t = lp.shape[1]  # token_stats trims the batch to its longest row
    expected = torch.where(batch.response_mask[:, :t], lp.float(), torch.zeros_like(lp.float()))
    torch.testing.assert_close(first[:, :t], expected, rtol=0, atol=1e-6)
