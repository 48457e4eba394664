"""One GRPO step of rlvr against TRL's GRPOTrainer, side by side, same model and settings.

    pip install trl            # a benchmark-only dependency (pip install 'rlvr[bench]')
    python benchmarks/vs_trl.py [--model runs/demo/sft/model] [--prompts 16] [--group 8] [--steps 6]

Both train the same checkpoint (default: the embedded model at random init, saved to a temporary
folder; a random model never stops early, so both generate every token) on the same arithmetic
prompts with: G rollouts per prompt, the same prompts per step and max new tokens, temperature
1, group-normalised advantages (mean and std), token-mean loss over the batch, one policy
update per rollout batch, no KL term, AdamW at the same lr with gradient clipping at 1.0. A step
is everything from sampling to the optimizer step. The first step of each is warm-up and is not
counted; the figure is the median of the others. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ours(model_dir: str, args, out: Path) -> list[float]:
    from rlvr.cli import recipe_path
    from rlvr.config import load_config
    from rlvr.train.rl import train_rl

    cfg = load_config(recipe_path("demo"), [
        f"model.name_or_path={model_dir}", f"output_dir={out}", f"rl.steps={args.steps}",
        f"rl.prompts_per_step={args.prompts}", f"rl.group_size={args.group}", f"rl.max_new_tokens={args.max_new_tokens}",
        "rl.temperature=1.0", f"rl.lr={args.lr}", "rl.warmup_steps=0", "rl.min_lr_ratio=1.0", "rl.weight_decay=0.0",
        "rl.skip_uniform_groups=false", "rl.aggregation=token_mean", "rl.advantage=grpo", "rl.kl_coef=0",
        "rl.inner_epochs=1", "rl.time_budget_s=0", f"rl.save_every={args.steps}", "rl.log_samples_every=0",
        "task.reward=exact", "task.template=plain"])
    train_rl(cfg, log_fn=lambda *a: None)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["time_rollout"] + r["time_update"] for r in rows]


def trl(model_dir: str, args, out: Path) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.rewards.exact import last_boxed
    from rlvr.tasks.arithmetic import make_samples

    samples = make_samples(args.prompts * (args.steps + 1), "train", 1, 1, 5, False)
    data = Dataset.from_list([{"prompt": s.prompt + "\n", "answer": s.answer} for s in samples])

    def exact(completions, answer, **_):
        return [float((last_boxed(c) or "").strip() == a) for c, a in zip(completions, answer)]

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.t0 = [], 0.0

        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.t0)

    config = GRPOConfig(
        output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1, num_generations=args.group, steps_per_generation=1,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, learning_rate=args.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, beta=0.0, num_iterations=1,
        loss_type="dapo", scale_rewards="group", use_cpu=True, bf16=False, report_to=[], save_strategy="no",
        logging_steps=1, disable_tqdm=True, seed=0, mask_truncated_completions=False, log_completions=False,
    )
    clock = Clock()
    tok = AutoTokenizer.from_pretrained(model_dir)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), reward_funcs=exact, args=config,
                          train_dataset=data, processing_class=tok, callbacks=[clock])
    trainer.train()
    return clock.times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint folder (default: the embedded model at random init)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--lr", type=float, default=3e-4)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = args.model
        if model_dir is None:
            from rlvr.models import build_embedded

            model, tok = build_embedded(0)
            model.save_pretrained(tmp / "model")
            tok.save_pretrained(tmp / "model")
            model_dir = str(tmp / "model")
        torch.manual_seed(0)
        t_ours = ours(model_dir, args, tmp / "ours")
        torch.manual_seed(0)
        t_trl = trl(model_dir, args, tmp / "trl")
    a, b = statistics.median(t_ours[1:]), statistics.median(t_trl[1:])
    print(f"{args.prompts} prompts x {args.group} rollouts, {args.max_new_tokens} new tokens, "
          f"{args.steps} steps ({'random init' if args.model is None else args.model}); median of steps 2..{args.steps}")
    print(f"  rlvr  {a:6.2f} s per step   (all: {', '.join(f'{t:.2f}' for t in t_ours)})")
    print(f"  TRL   {b:6.2f} s per step   (all: {', '.join(f'{t:.2f}' for t in t_trl)})")
    print(f"  rlvr is {b / a:.1f}x faster (target >= 3x)")
    print(json.dumps({"ours_s_per_step": round(a, 3), "trl_s_per_step": round(b, 3), "ratio": round(b / a, 2),
                      "prompts": args.prompts, "group": args.group, "max_new_tokens": args.max_new_tokens}))


if __name__ == "__main__":
    main()
