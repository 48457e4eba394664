"""The book's chapter-6 run at its real shapes: seconds per RL step and generated tokens/s.

The recipe recipes/math-qwen3-0.6b.yaml exactly as a user runs it (`train_rl`, 1 prompt x 8
rollouts of up to 512 new tokens, the math verifier, the update), with the model swapped for a
random-init model of Qwen3-0.6B's configuration (28 layers, width 1024, vocabulary 151,936) so no
download is needed, and made-up MATH-style problems. A random model never stops early, so every
rollout runs to max_new_tokens: the worst case of a real run. It never earns a reward either, so
the update computes every row (rl.skip_zero_advantage_rows=false), as a run with signal does.

    python benchmarks/ch6_shapes.py                         # GPU: 50 steps at full shapes
    python benchmarks/ch6_shapes.py --layers 2 --max-new-tokens 64 --steps 3   # a CPU's reduced version
    python benchmarks/ch6_shapes.py --time-budget 120 --set rollout.cuda_graph=true   # GPU: 2 minutes, graphed decode

The book's implementation generates about 47 tokens/s on an H100 (one sequence at a time, about
59 minutes for 50 steps); the target here is 50 steps in 3 minutes or less on one H100. Ends
with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_model(path: Path, layers: int) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    vocab_size = 151936
    chars = sorted(set("0123456789+-*/=()[]{}<>|.,:;!?#$%&_^~'\"@ \n\\abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    vocab.update({f"<t{i}>": i for i in range(len(vocab), vocab_size)})  # fillers: the real vocabulary size
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    config = Qwen3Config(vocab_size=vocab_size, hidden_size=1024, intermediate_size=3072, num_hidden_layers=layers,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                         max_position_embeddings=4096, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(path)
    fast.save_pretrained(path)


def write_problems(path: Path, n: int, prefix: str) -> None:
    rows = [{"problem": f"What is ${a} + {2 * a + 1}$?", "answer": str(3 * a + 1), "subject": "Prealgebra", "level": 1,
             "unique_id": f"{prefix}/{a}.json"} for a in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=28)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="stop training after this many seconds (rl.time_budget_s) and report the steps done")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a further recipe override, e.g. rollout.cuda_graph=true (repeatable)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from rlvr.cli import recipe_path
    from rlvr.config import load_config
    from rlvr.train.rl import train_rl

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build_model(tmp / "model", args.layers)
        write_problems(tmp / "train.jsonl", 200, "train")
        write_problems(tmp / "test.jsonl", 5, "test")
        cfg = load_config(recipe_path("math-qwen3-0.6b"), [
            f"model.name_or_path={tmp / 'model'}", f"task.train_path={tmp / 'train.jsonl'}",
            f"task.eval_path={tmp / 'test.jsonl'}", f"rl.steps={args.steps}", f"rl.max_new_tokens={args.max_new_tokens}",
            f"rl.save_every={args.steps}", f"output_dir={tmp / 'run'}", f"rl.time_budget_s={args.time_budget}",
            # a random model earns no reward, so every advantage is 0 and rlvr would skip the whole
            # update as gradient-free; a real run's groups have spread, so time the update it pays
            "rl.skip_zero_advantage_rows=false", *args.set])
        t0 = time.perf_counter()
        train_rl(cfg, log_fn=lambda *a: None)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    steady = rows[1:] or rows  # the first step includes one-time warm-up (allocations, the output-layer check)
    per_step = sum(r["time_rollout"] + r["time_update"] for r in steady) / len(steady)
    rollout = sum(r["time_rollout"] for r in steady) / len(steady)
    tokens = sum(r["generated_tokens"] for r in steady) / sum(r["time_rollout"] for r in steady)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"chapter-6 shapes on {device}: {args.layers} layers, 8 rollouts x {args.max_new_tokens} tokens, "
          f"{len(rows)} of {args.steps} steps in {wall:.0f} s")
    print(f"  {per_step:.2f} s per step ({rollout:.2f} s rollout, {per_step - rollout:.2f} s update); "
          f"{tokens:.0f} generated tokens/s; 50 steps would take {50 * per_step / 60:.1f} min")
    print(json.dumps({"device": device, "layers": args.layers, "max_new_tokens": args.max_new_tokens,
                      "steps": len(rows), "overrides": args.set, "s_per_step": round(per_step, 3), "rollout_s": round(rollout, 3),
                      "tok_s": round(tokens, 1), "wall_s": round(wall, 1), "minutes_for_50": round(50 * per_step / 60, 2)}))


if __name__ == "__main__":
    main()
