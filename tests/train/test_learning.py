"""End to end: a short fixed-seed run must learn — measured as greedy accuracy, not weights.

The embedded model is taught the answer format by a brief SFT on 1-2 digit problems (stopped
early on purpose, so there is room to improve), then GRPO trains on a small set of 128
answer-only problems. Greedy accuracy on that set must rise, significantly by McNemar's paired
test. (The demo and its summary.json are where held-out generalisation is measured.)
"""

import dataclasses

import pytest
import torch

from rlvr.config import load_config
from rlvr.eval.evaluate import evaluate
from rlvr.eval.stats import mcnemar_exact
from rlvr.logging import MetricsLog
from rlvr.models import eos_token_ids, load_policy
from rlvr.rewards import resolve
from rlvr.rollout.hf import HFEngine
from rlvr.tasks import load_task
from rlvr.train.rl import train_rl
from rlvr.train.sft import train_sft

OVERRIDES = [
    "task.sft_examples=600", "task.sft_val=0", "task.sft_max_digits=2", "task.rl_max_digits=2",
    "task.rl_problems=128", "task.eval_per_bucket=300", "task.template=plain",
    "sft.max_steps=SFT_STEPS", "sft.eval_every=1000", "sft.batch_size=32", "sft.warmup_steps=20",
    "rl.steps=RL_STEPS", "rl.prompts_per_step=32", "rl.group_size=8", "rl.max_new_tokens=48",
    "rl.lr=2e-4", "rl.warmup_steps=5", "rl.save_every=1000", "eval.max_new_tokens=48",
]


@pytest.mark.slow
def test_grpo_raises_accuracy_on_its_problem_set(tmp_path):
    cfg = load_config(None, [o.replace("SFT_STEPS", "300").replace("RL_STEPS", "40") for o in OVERRIDES])
    torch.manual_seed(0)
    reward = resolve("exact")
    data = load_task(cfg.task)
    model, tok = load_policy("embedded")
    engine = HFEngine(model, tok, eos_token_ids(tok, model))
    train_sft(model, tok, engine, data.sft_train, [], reward, "plain", cfg.sft, MetricsLog(tmp_path / "sft.jsonl"))
    model.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    before = evaluate(engine, tok, data.rl_train, reward, "plain", 48)

    rl_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=str(tmp_path / "sft")),
                                 output_dir=str(tmp_path / "rl"))
    result = train_rl(rl_cfg, log_fn=lambda *_: None)
    model, tok = load_policy(result["checkpoint"])
    after = evaluate(HFEngine(model, tok, eos_token_ids(tok, model)), tok, data.rl_train, reward, "plain", 48)

    test = mcnemar_exact(before.correct, after.correct)
    print(f"accuracy {before.overall.accuracy:.3f} -> {after.overall.accuracy:.3f}, p = {test.p_value:.2g}")
    assert 0.05 < before.overall.accuracy < 0.8  # SFT left room to learn
    assert after.overall.accuracy >= before.overall.accuracy + 0.08
    assert test.p_value < 0.01
