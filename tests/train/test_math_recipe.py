"""The chapter-6 recipe (recipes/math-qwen3-0.6b.yaml) as a GPU user runs it, for 2 steps: the
same command, recipe and code path, with only the model swapped for a tiny random Qwen3 and the
data for local MATH-format files (the hub is not reachable in tests)."""

import json
from pathlib import Path

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from rlvr.cli import main, recipe_path
from rlvr.config import load_config
from rlvr.models import build_char_tokenizer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "math_tiny.jsonl"


@pytest.fixture(scope="module")
def tiny_qwen3_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen3")
    tok = build_char_tokenizer()
    config = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_train(path: Path) -> Path:
    """Eight made-up MATH-style training problems (none of them in the held-out fixture)."""
    rows = [{"problem": f"What is ${a} \\cdot {b}$?", "solution": f"${a} \\cdot {b} = \\boxed{{{a * b}}}$.",
             "type": "Prealgebra", "level": f"Level {1 + a % 3}", "unique_id": f"train/prealgebra/{a}{b}.json"}
            for a, b in [(2, 3), (4, 5), (6, 7), (3, 9), (8, 2), (5, 5), (7, 3), (9, 4)]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_recipe_is_the_books_run():
    cfg = load_config(recipe_path("math-qwen3-0.6b"), ["task.train_path=x.jsonl", "task.eval_path=y.jsonl"])
    rl = cfg.rl
    assert cfg.model.name_or_path == "Qwen/Qwen3-0.6B-Base" and cfg.task.template == "book"
    assert (cfg.task.name, cfg.task.reward) == ("math", "math")
    assert (rl.steps, rl.prompts_per_step, rl.group_size, rl.max_new_tokens) == (50, 1, 8, 512)
    assert (rl.temperature, rl.top_p, rl.lr, rl.grad_clip, rl.kl_coef) == (0.8, 0.9, 1e-5, 1.0, 0.0)
    assert (rl.advantage, rl.aggregation, rl.inner_epochs, rl.min_lr_ratio, rl.warmup_steps) == (
        "grpo", "seq_mean_token_sum", 1, 1.0, 0)
    assert (cfg.eval.max_new_tokens, cfg.eval.temperature, cfg.eval.by) == (2048, 0.0, "subject,level")


@pytest.mark.slow
def test_two_steps_of_the_chapter6_recipe(tiny_qwen3_dir, tmp_path):
    out = tmp_path / "run"
    train = write_train(tmp_path / "math_train.jsonl")
    main(["train", "math-qwen3-0.6b", f"model.name_or_path={tiny_qwen3_dir}", f"task.train_path={train}",
          f"task.eval_path={FIXTURE}", "rl.steps=2", f"output_dir={out}"])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["kept_rollouts"] == 8 and r["generated_tokens"] > 0 for r in rows)  # 1 prompt x 8 rollouts, none skipped
    assert all(r["lr"] == pytest.approx(1e-5) for r in rows)  # constant
    ev = json.loads((out / "eval" / "eval.json").read_text())
    assert ev["n"] == 5 and ev["settings"]["max_new_tokens"] == 2048 and ev["settings"]["template"] == "book"
    assert set(ev["breakdown"]) == {"subject", "level"}
    assert sum(s["n"] for s in ev["breakdown"]["subject"].values()) == 5
    ckpt = out / "checkpoints" / "step-000002"
    assert (ckpt / "config.json").exists() and json.loads((ckpt / "config.json").read_text())["model_type"] == "qwen3"

    # and `rlvr eval --task math500` on the result: by subject and level, through the same recipe
    eval_out = tmp_path / "eval500"
    main(["eval", "--model", str(ckpt), "--task", "math500", f"task.eval_path={FIXTURE}", "--out", str(eval_out)])
    again = json.loads((eval_out / "eval.json").read_text())
    assert again["ids"] == ev["ids"] and set(again["breakdown"]) == {"subject", "level"}
    main(["compare", str(out / "eval"), str(eval_out)])  # math (MATH-500 held out) and math500: comparable
