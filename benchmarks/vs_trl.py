"""rlvr against TRL's GRPOTrainer, same model and settings: seconds per GRPO step, or time to accuracy.

    pip install trl            # a benchmark-only dependency (pip install 'rlvr[bench]')
    python benchmarks/vs_trl.py [--model runs/demo/sft/model] [--prompts 64] [--group 8] [--steps 6]
    python benchmarks/vs_trl.py --accuracy --model runs/demo/sft/model [--budget 300] [--eval-n 1000]

Both sides run one configuration, built once by `settings` (rlvr reads it, `trl` translates it
field by field): the same checkpoint; the same prompts in the same order (rlvr's arithmetic RL
problems, 1-5 digits, in its stream order, plain template, so the same token ids); G rollouts
per prompt, the same prompts per step and max new tokens, temperature 1; rlvr's exact-match
reward on the boxed answer, 0 for a response cut at max new tokens; group-normalised advantages
(mean and std); token-mean loss over the batch; one update per rollout batch; no KL; and the
very same AdamW and lr schedule (TRL is handed rlvr's: linear warmup, then constant), gradients
clipped at 1.0; neither side recomputes activations in the backward (TRL's default does,
as rlvr's model.gradient_checkpointing=true would). Uniform groups are trained on (zero advantage, but their tokens count in the
token mean, as in TRL).

Step time (default): a step is everything from sampling to the optimizer step. The first step
of each is warm-up and is not counted; the figure is the median of the others. The default
model is the embedded one at random init (saved to a temporary folder): it never stops early,
so both generate every token.

Time to accuracy (--accuracy; --model: an SFT checkpoint, e.g. from `rlvr sft demo`): each side
trains for --budget seconds of training time (sampling + update; saving is not counted) and
saves its policy every --save-every steps and at the end. Then the start and every checkpoint
are scored by rlvr's greedy held-out evaluation on the same --eval-n problems (half with 1-3
digits, half with 4-5), and the script prints accuracy against training seconds and when each
side first reaches --target (default: the start's accuracy + 5 points, beyond the +-3-point
95% interval of one evaluation on 1,000 problems, and about half of what the demo's RL gains).
A side that does not reach it within the budget gets null; nothing is extrapolated (when
only rlvr reaches it, TRL's whole training time over rlvr's time gives a lower bound on the
ratio). One evaluation on 1,000 problems is +-3 points, so read the curves, not only the first
crossing.

Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    step_times: list[float]  # seconds of each training step (sampling + update)
    rollout_times: list[float]  # the sampling and scoring part of each step
    checkpoints: list[tuple[int, float, str]]  # (step, training seconds when saved, folder)
    skipped: list[float] = ()  # rlvr: the fraction of rows each update left out as gradient-free


def settings(model_dir: str, args, out: Path, *extra: str):
    """The one configuration of both sides, as an rlvr Config (the demo recipe, overridden);
    `extra`: overrides for rlvr alone that do not change what is computed."""
    from rlvr.cli import recipe_path
    from rlvr.config import load_config

    steps, budget = (1_000_000, args.budget) if args.accuracy else (args.steps, 0)  # --accuracy: the clock stops it
    return load_config(recipe_path("demo"), [
        f"model.name_or_path={model_dir}", f"output_dir={out}", f"rl.steps={steps}", f"rl.time_budget_s={budget}",
        f"rl.save_every={args.save_every if args.accuracy else steps}", "rl.keep_checkpoints=0",
        f"rl.prompts_per_step={args.prompts}", f"rl.group_size={args.group}", f"rl.max_new_tokens={args.max_new_tokens}",
        "rl.temperature=1.0", "rl.top_p=1.0", f"rl.lr={args.lr}", f"rl.warmup_steps={args.warmup}",
        "rl.min_lr_ratio=1.0", "rl.weight_decay=0.0", "rl.grad_clip=1.0", "rl.advantage=grpo", "rl.loss=ppo_clip",
        "rl.aggregation=token_mean", "rl.skip_uniform_groups=false", "rl.kl_coef=0", "rl.inner_epochs=1",
        "rl.reward_truncated=false", "rl.mask_truncated=false", "rl.eval_every=0", "rl.log_samples_every=0",
        "model.autocast=off", "task.name=arithmetic", "task.reward=exact", "task.template=plain", "task.rl_max_digits=5",
        f"task.eval_per_bucket={args.eval_n // 2}", *extra])


def ours(cfg) -> Run:
    from rlvr.train.rl import train_rl

    train_rl(cfg, log_fn=lambda *a: None)
    out = Path(cfg.output_dir)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = {r["step"]: r["elapsed_s"] for r in rows}  # the clock rl.time_budget_s reads
    steps = sorted(int(f.name.removeprefix("step-")) for f in (out / "checkpoints").glob("step-??????"))
    return Run([r["time_rollout"] + r["time_update"] for r in rows], [r["time_rollout"] for r in rows],
               [(s, elapsed[s], str(out / "checkpoints" / f"step-{s:06d}")) for s in steps],
               [r.get("zero_adv_skipped", 0.0) for r in rows])


def trl(cfg) -> Run:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.models import eos_token_ids, load_policy
    from rlvr.prompts import TEMPLATES
    from rlvr.rewards import resolve
    from rlvr.tasks import PromptStream, load_task
    from rlvr.train.state import make_optimizer
    from rlvr.types import Sample

    rl, out = cfg.rl, Path(cfg.output_dir)
    model, tok = load_policy(cfg.model.name_or_path, dtype=cfg.model.dtype)
    # rlvr's stream order; TRL, not shuffling, takes P prompts per step from it as rlvr does. TRL
    # tokenizes a text prompt as tokenizer(text), as rlvr's prompt_ids does for this template
    problems = load_task(cfg.task, need=("rl",)).rl_train
    data = Dataset.from_list([{"prompt": TEMPLATES[cfg.task.template].format(prompt=s.prompt), "answer": s.answer}
                              for s in PromptStream(problems, cfg.seed).next(len(problems))])
    reward, eos = resolve(cfg.task.reward), eos_token_ids(tok, model)

    def exact_match(completions, completion_ids, answer, **_):
        # rlvr's reward; without EOS the response was cut at max_new_tokens: 0, as rlvr scores it
        return [reward(c, Sample("", a)) if ids and ids[-1] in eos else 0.0
                for c, ids, a in zip(completions, completion_ids, answer)]

    class Clock(TrainerCallback):
        """Times each step, saves every save_every steps and at the end (untimed), stops at the budget."""

        def __init__(self):
            self.run, self.t0 = Run([], [], []), 0.0

        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **_):
            self.run.step_times.append(time.perf_counter() - self.t0)
            elapsed = sum(self.run.step_times)
            over = bool(rl.time_budget_s) and elapsed >= rl.time_budget_s
            if over or state.global_step % rl.save_every == 0 or state.global_step == rl.steps:
                folder = out / "checkpoints" / f"step-{state.global_step:06d}"
                model.save_pretrained(folder)
                tok.save_pretrained(folder)
                self.run.checkpoints.append((state.global_step, elapsed, str(folder)))
            control.should_training_stop |= over

    config = GRPOConfig(
        output_dir=str(out), max_steps=rl.steps, per_device_train_batch_size=rl.prompts_per_step * rl.group_size,
        gradient_accumulation_steps=1, num_generations=rl.group_size, steps_per_generation=1,
        num_iterations=rl.inner_epochs, shuffle_dataset=False, max_completion_length=rl.max_new_tokens,
        temperature=rl.temperature, top_p=rl.top_p, max_grad_norm=rl.grad_clip, beta=rl.kl_coef,
        loss_type="dapo", scale_rewards="group", mask_truncated_completions=rl.mask_truncated,  # dapo: token mean
        use_cpu=not torch.cuda.is_available(), bf16=False,  # rlvr's device, float32 like model.autocast=off
        report_to=[], save_strategy="no", logging_steps=rl.save_every, disable_tqdm=True,
        seed=cfg.seed, log_completions=False,
        # TRL's default recomputes activations in the backward; rlvr's is model.gradient_checkpointing
        # (transformers 5 renamed the field)
        **{"activation_checkpointing" if "activation_checkpointing" in {f.name for f in dataclasses.fields(GRPOConfig)}
           else "gradient_checkpointing": cfg.model.gradient_checkpointing},
    )  # the lr and its schedule are those of the optimizer it is handed
    clock = Clock()
    trainer = GRPOTrainer(model=model, reward_funcs=exact_match, args=config, train_dataset=data, processing_class=tok,
                          callbacks=[clock], optimizers=make_optimizer(model, cfg))
    rollout = trainer._generate_and_score_completions  # sampling + rewards + advantages, as rlvr's time_rollout

    def timed_rollout(*a, **k):
        t0 = time.perf_counter()
        out = rollout(*a, **k)
        clock.run.rollout_times.append(time.perf_counter() - t0)
        return out

    trainer._generate_and_score_completions = timed_rollout
    trainer.train()
    return clock.run


def held_out_accuracy(folders: list[str], cfg) -> list[float]:
    """`rlvr eval` of each model (the recipe's eval: section, greedy, the same problems), its tables unprinted."""
    from rlvr.cli import eval_model

    with contextlib.redirect_stdout(io.StringIO()):
        return [eval_model(folder, cfg, None).overall.accuracy for folder in folders]


def step_time(args, model_dir: str, tmp: Path) -> None:
    import torch

    runs = {}
    # rlvr as it runs by default, then computing every row as TRL does: uniform groups (all
    # rewards equal) have advantage exactly 0 and so an exactly zero gradient; rlvr leaves them
    # out of the forward and backward (rl.skip_zero_advantage_rows), with the same update
    for name, extra in (("rlvr", ()), ("rlvr, every row", ("rl.skip_zero_advantage_rows=false",))):
        torch.manual_seed(0)
        runs[name] = ours(settings(model_dir, args, tmp / f"ours{len(runs)}", *extra))
    torch.manual_seed(0)
    runs["TRL"] = trl(settings(model_dir, args, tmp / "trl"))
    # the split: sampling and scoring, then the rest of the step (the loss's forward and backward, the optimizer)
    step = {name: statistics.median(run.step_times[1:]) for name, run in runs.items()}
    roll = {name: statistics.median(run.rollout_times[1:]) for name, run in runs.items()}
    skipped = statistics.mean(runs["rlvr"].skipped[1:])
    print(f"{args.prompts} prompts x {args.group} rollouts, {args.max_new_tokens} new tokens, "
          f"{args.steps} steps ({'random init' if args.model is None else args.model}); median of steps 2..{args.steps}")
    print(f"{'':16}{'s per step':>11}{'rollout':>9}{'update':>8}   all steps")
    for name, run in runs.items():
        t, r = step[name], roll[name]
        print(f"{name:<16}{t:>11.2f}{r:>9.2f}{t - r:>8.2f}   {', '.join(f'{x:.2f}' for x in run.step_times)}")
    a, a_all, b = step["rlvr"], step["rlvr, every row"], step["TRL"]
    ra, rb = roll["rlvr"], roll["TRL"]
    print(f"  rlvr is {b / a:.1f}x faster a step (target >= 3x): {rb / ra:.1f}x at rollout, {(b - rb) / (a - ra):.1f}x at "
          f"update, where it left out {100 * skipped:.0f}% of the rows as gradient-free (zero advantage)")
    print(f"  computing every row as TRL does, rlvr is {b / a_all:.1f}x faster a step")
    print(json.dumps({"ours_s_per_step": round(a, 3), "trl_s_per_step": round(b, 3), "ratio": round(b / a, 2),
                      "ours_rollout_s": round(ra, 3), "trl_rollout_s": round(rb, 3),
                      "zero_adv_skipped": round(skipped, 3), "ours_every_row_s_per_step": round(a_all, 3),
                      "ratio_every_row": round(b / a_all, 2),
                      "prompts": args.prompts, "group": args.group, "max_new_tokens": args.max_new_tokens}))


def time_to_accuracy(args, tmp: Path) -> None:
    import torch

    runs = {}
    for name, train in (("rlvr", ours), ("TRL", trl)):
        torch.manual_seed(0)
        runs[name] = train(settings(args.model, args, tmp / name))
    cfg = settings(args.model, args, tmp / "eval")
    t0 = time.perf_counter()
    start = held_out_accuracy([args.model], cfg)[0]
    # rounded: start + 0.05 in floating point can land a hair above the k / n it means
    target = round(start + 0.05, 6) if args.target is None else args.target
    curves, reached = {}, {}
    for name, run in runs.items():
        accuracies = held_out_accuracy([folder for *_, folder in run.checkpoints], cfg)
        curves[name] = [(0, 0.0, start)] + [(step, s, acc) for (step, s, _), acc in zip(run.checkpoints, accuracies)]
        reached[name] = next(((step, s) for step, s, acc in curves[name] if acc >= target), None)
    print(f"\n{args.prompts} prompts x {args.group} rollouts, {args.max_new_tokens} new tokens, lr {args.lr:g}, "
          f"warmup {args.warmup}; budget {args.budget:g} s of training each, from {args.model}")
    print(f"greedy held-out accuracy on n = {2 * (args.eval_n // 2)} problems "
          f"(evaluations took {time.perf_counter() - t0:.0f} s); target {100 * target:.1f}%")
    print(f"{'':6}{'step':>6}{'train s':>9}{'accuracy':>10}")
    for name, curve in curves.items():
        for step, s, acc in curve:
            print(f"{name:<6}{step:>6}{s:>9.1f}{100 * acc:>9.1f}%")
    for name, hit in reached.items():
        when = f"at {hit[1]:.1f} s (step {hit[0]})" if hit else f"not within {curves[name][-1][1]:.0f} s"
        print(f"  {name} reaches {100 * target:.1f}% {when}")
    a, b = (reached[n][1] if reached[n] else None for n in ("rlvr", "TRL"))
    ratio = b / a if a and b else None  # both reached it after the start
    # only rlvr reached it: TRL's whole training time is a lower bound on its time to the target
    at_least = curves["TRL"][-1][1] / a if a and not b else None
    if ratio:
        print(f"  rlvr is {ratio:.1f}x faster to the target")
    elif at_least:
        print(f"  rlvr is more than {at_least:.1f}x faster to the target (TRL trained {curves['TRL'][-1][1]:.0f} s without it)")
    print(json.dumps({"mode": "accuracy", "start_accuracy": start, "target": round(target, 4), "budget_s": args.budget,
                      "ours_s_to_target": a and round(a, 1), "trl_s_to_target": b and round(b, 1),
                      "ratio": ratio and round(ratio, 2), "ratio_at_least": at_least and round(at_least, 2),
                      "ours_curve": [[step, round(s, 1), acc] for step, s, acc in curves["rlvr"]],  # step, s, acc
                      "trl_curve": [[step, round(s, 1), acc] for step, s, acc in curves["TRL"]],
                      "prompts": args.prompts, "group": args.group, "eval_n": 2 * (args.eval_n // 2)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint folder (default: the embedded model at random init)")
    ap.add_argument("--prompts", type=int, default=64, help="per step (default: the demo recipe's 64)")
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--warmup", type=int, default=10, help="steps of linear lr warmup, then constant")
    ap.add_argument("--steps", type=int, default=6, help="steps to time")
    ap.add_argument("--accuracy", action="store_true", help="time to accuracy instead of step time (needs --model)")
    ap.add_argument("--budget", type=float, default=300.0, help="--accuracy: seconds of training per side")
    ap.add_argument("--save-every", type=int, default=10, help="--accuracy: steps between checkpoints")
    ap.add_argument("--eval-n", type=int, default=1000, help="--accuracy: held-out problems, half per bucket")
    ap.add_argument("--target", type=float, help="--accuracy: accuracy to reach, 0-1 (default: start + 0.05)")
    args = ap.parse_args()
    if args.accuracy and args.model is None:
        ap.error("--accuracy needs --model (an SFT checkpoint folder, e.g. runs/demo/sft/model)")
    sys.path.insert(0, str(ROOT))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.accuracy:
            return time_to_accuracy(args, tmp)
        model_dir = args.model
        if model_dir is None:
            from rlvr.models import build_embedded

            model, tok = build_embedded(0)
            model.save_pretrained(tmp / "model")
            tok.save_pretrained(tmp / "model")
            model_dir = str(tmp / "model")
        step_time(args, model_dir, tmp)


if __name__ == "__main__":
    main()
