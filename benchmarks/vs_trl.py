"""rlvr against TRL's GRPOTrainer, same model and settings: seconds per GRPO step, or time to accuracy.

    pip install trl            # a benchmark-only dependency (pip install 'rlvr[bench]')
    python benchmarks/vs_trl.py [--model runs/demo/sft/model] [--prompts 64] [--group 8] [--steps 6]
    python benchmarks/vs_trl.py --accuracy --model runs/demo/sft/model [--budget 300] [--eval-every-s 30] [--eval-n 1000]

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

Both update in the same micro-batches: rl.micro_batch_size rollouts a forward and backward (the
demo recipe's 32; --micro-batch), gradients accumulated over the whole batch of P x G. TRL gets
per_device_train_batch_size = micro_batch_size and gradient_accumulation_steps =
steps_per_generation = P x G / micro_batch_size, so its generation batch is still P prompts x G
completions, generated once, and gives ONE optimizer step; its dapo loss divides each
micro-batch's token sum by the token count of the whole generation batch (num_items_in_batch,
which it rescales by gradient_accumulation_steps / steps_per_generation = 1, and Trainer does not
divide again: GRPOTrainer.loss_is_scaled_for_ga), so the accumulated gradient is the token mean
over the batch, as rlvr's: on TRL's own first rollouts (8 prompts x 8, micro-batches of 8),
rlvr's policy_gradients gives the same gradient (same norm, cosine 1.0), and TRL's gradient is
the same at one micro-batch or four. Both sides print these settings. (Earlier versions gave
TRL the whole batch as one micro-batch, 512 rows at the demo's settings: its update took about
2.6 s a step on the 2-core CPU, against about 1.7 s in micro-batches of 32.)

Step time (default): a step is everything from sampling to the optimizer step. The first step
of each is warm-up and is not counted; the figure is the median of the others. The default
model is the embedded one at random init (saved to a temporary folder). EOS is not disabled:
a random-init model samples it by chance too, so responses end before max new tokens (about
two thirds of 96 tokens on average); both sides sample from the same weights at temperature 1,
so their lengths agree in distribution, and the table prints each side's mean response length.

Time to accuracy (--accuracy; --model: an SFT checkpoint, e.g. from `rlvr sft demo`): each side
trains for --budget seconds of training time (sampling + update; saving is not counted). Both
are scored on one grid of training seconds, t = 0, E, 2E, ... up to the budget (E:
--eval-every-s), so neither gets more evaluations, and so more chances to cross a noisy
threshold, for stepping faster: the policy at t is the one after the last step that ended at or
before t (each side keeps a CPU copy of its weights after every step, untimed, and writes it
out only when the next step passes a grid point). Then rlvr's greedy held-out evaluation scores
the start and each grid point's policy on the same --eval-n problems (half with 1-3 digits,
half with 4-5), and the script prints both curves side by side and, for each side, the first
grid time it reaches --target (default: the start's accuracy + 5 points, beyond the +-3-point
95% interval of one evaluation on 1,000 problems, and about half of what the demo's RL gains)
and the first grid time from which it holds it at two consecutive grid points (less sensitive to
one lucky evaluation). A side that does not reach it gets null; nothing is extrapolated (when
only rlvr reaches it, TRL's last grid time over rlvr's time gives a lower bound on the ratio).
Crossing times are grid times, so each is rounded up to a multiple of E on both sides alike.
One evaluation on 1,000 problems is +-3 points, so read the curves, not only the first crossing.

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
    lengths: list[float]  # mean response tokens of each step's rollouts
    grid: Grid | None = None  # --accuracy: the policy at each grid time
    skipped: list[float] = ()  # rlvr: the fraction of rows each update left out as gradient-free


class Grid:
    """The policy at each training time t = every, 2 every, ... <= budget (seconds): the weights
    after the last step that ended at or before t. A step's end is known to be the last before t
    only when the next step ends past t, so after every step (untimed) the weights are copied to
    the CPU, and a copy is written out only when a grid point needs it: at most one folder a grid
    point, however fast a side steps."""

    def __init__(self, every: float, budget: float, start: str, out: Path):
        self.times = [every * k for k in range(1, int(budget / every + 1e-9) + 1)]  # [points] seconds
        self.out, self.start = out, start
        self.prev: tuple[int, float, dict | None] = (0, 0.0, None)  # (step, seconds, weights; None: the start)
        self.points: list[tuple[int, str]] = []  # (step, folder) of each grid time reached so far
        self.model = self.tok = None

    def after_step(self, step: int, elapsed: float, model, tok) -> None:
        self.model, self.tok = model, tok
        while len(self.points) < len(self.times) and elapsed > self.times[len(self.points)]:
            self.points.append(self._write(*self.prev))
        copies = {}  # tied weights stay one tensor, as save_pretrained expects
        weights = {}
        for name, w in model.state_dict().items():
            if w.data_ptr() not in copies:
                copies[w.data_ptr()] = w.detach().to("cpu", copy=True)
            weights[name] = copies[w.data_ptr()]
        self.prev = (step, elapsed, weights)

    def finish(self) -> list[tuple[float, int, str]]:
        """(t, step, folder) of every grid time; those at or past the last step's end get its policy."""
        while len(self.points) < len(self.times):
            self.points.append(self._write(*self.prev))
        self.prev = (0, 0.0, None)
        return [(t, step, folder) for t, (step, folder) in zip(self.times, self.points)]

    def _write(self, step: int, elapsed: float, weights: dict | None) -> tuple[int, str]:
        if weights is None:
            return 0, self.start
        folder = self.out / f"step-{step:06d}"
        if not folder.exists():  # a step can be the last before several grid points
            self.model.save_pretrained(folder, state_dict=weights)
            self.tok.save_pretrained(folder)
        return step, str(folder)


def settings(model_dir: str, args, out: Path, *extra: str):
    """The one configuration of both sides, as an rlvr Config (the demo recipe, overridden);
    `extra`: overrides for rlvr alone that do not change what is computed."""
    from rlvr.cli import recipe_path
    from rlvr.config import load_config

    steps, budget = (1_000_000, args.budget) if args.accuracy else (args.steps, 0)  # --accuracy: the clock stops it
    return load_config(recipe_path("demo"), [
        f"model.name_or_path={model_dir}", f"output_dir={out}", f"rl.steps={steps}", f"rl.time_budget_s={budget}",
        # --accuracy: every step goes to the grid (`ours`), which writes only what it needs
        f"rl.save_every={1 if args.accuracy else steps}", "rl.keep_checkpoints=0",
        *([f"rl.micro_batch_size={args.micro_batch}"] if args.micro_batch else []),  # else the recipe's
        f"rl.prompts_per_step={args.prompts}", f"rl.group_size={args.group}", f"rl.max_new_tokens={args.max_new_tokens}",
        "rl.temperature=1.0", "rl.top_p=1.0", f"rl.lr={args.lr}", f"rl.warmup_steps={args.warmup}",
        "rl.min_lr_ratio=1.0", "rl.weight_decay=0.0", "rl.grad_clip=1.0", "rl.advantage=grpo", "rl.loss=ppo_clip",
        "rl.aggregation=token_mean", "rl.skip_uniform_groups=false", "rl.kl_coef=0", "rl.inner_epochs=1",
        "rl.reward_truncated=false", "rl.mask_truncated=false", "rl.eval_every=0", "rl.log_samples_every=0",
        "model.autocast=off", "task.name=arithmetic", "task.reward=exact", "task.template=plain", "task.rl_max_digits=5",
        f"task.eval_per_bucket={args.eval_n // 2}", *extra])


def micro_batch(rl) -> int:
    """Rollouts a forward/backward on both sides: rl.micro_batch_size (0: the whole batch)."""
    batch = rl.prompts_per_step * rl.group_size
    return min(rl.micro_batch_size or batch, batch)


def ours(cfg, grid: Grid | None = None) -> Run:
    """rlvr's own training loop. With a grid (rl.save_every=1), its checkpoint save, which runs
    after each step's clock has stopped and is handed the clock (elapsed: what
    rl.time_budget_s reads), goes to the grid instead of writing a whole checkpoint."""
    from unittest import mock

    from rlvr.train import state
    from rlvr.train.rl import train_rl

    rl = cfg.rl
    print(f"rlvr: micro_batch_size={micro_batch(cfg.rl)} rollouts of a batch of "
          f"{rl.prompts_per_step} prompts x {rl.group_size} = {rl.prompts_per_step * rl.group_size}, "
          f"aggregation={rl.aggregation} (over the batch), one optimizer step a batch")
    to_grid = mock.patch.object(state, "save", lambda tr, stream, cfg, root, step, elapsed:
                                grid.after_step(step, elapsed, tr.model, tr.tokenizer))
    with to_grid if grid else contextlib.nullcontext():
        train_rl(cfg, log_fn=lambda *a: None)
    out = Path(cfg.output_dir)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return Run([r["time_rollout"] + r["time_update"] for r in rows], [r["time_rollout"] for r in rows],
               [r["length_mean"] for r in rows], grid, [r.get("zero_adv_skipped", 0.0) for r in rows])


def trl(cfg, grid: Grid | None = None) -> Run:
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
        """Times each optimizer step (on_step_begin comes before its first micro-batch, on_step_end
        after the optimizer and schedule step), hands it to the grid (untimed), stops at the budget."""

        def __init__(self):
            self.run, self.t0 = Run([], [], [], grid), 0.0

        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **_):
            self.run.step_times.append(time.perf_counter() - self.t0)
            elapsed = sum(self.run.step_times)
            if grid:
                grid.after_step(state.global_step, elapsed, model, tok)
            control.should_training_stop |= bool(rl.time_budget_s) and elapsed >= rl.time_budget_s

    batch, micro = rl.prompts_per_step * rl.group_size, micro_batch(cfg.rl)  # rollouts a step, a forward/backward
    config = GRPOConfig(
        # one generation batch of P x G rollouts (generation_batch_size = micro x steps_per_generation),
        # split into batch / micro micro-batches whose gradients accumulate into one optimizer step
        output_dir=str(out), max_steps=rl.steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=batch // micro, num_generations=rl.group_size, steps_per_generation=batch // micro,
        num_iterations=rl.inner_epochs, shuffle_dataset=False, max_completion_length=rl.max_new_tokens,
        temperature=rl.temperature, top_p=rl.top_p, max_grad_norm=rl.grad_clip, beta=rl.kl_coef,
        loss_type="dapo", scale_rewards="group", mask_truncated_completions=rl.mask_truncated,  # dapo: token mean
        use_cpu=not torch.cuda.is_available(), bf16=False,  # rlvr's device, float32 like model.autocast=off
        report_to=[], save_strategy="no", logging_steps=10, disable_tqdm=True,  # logs: untimed, after on_step_end
        seed=cfg.seed, log_completions=False,
        # TRL's default recomputes activations in the backward; rlvr's is model.gradient_checkpointing
        # (transformers 5 renamed the field)
        **{"activation_checkpointing" if "activation_checkpointing" in {f.name for f in dataclasses.fields(GRPOConfig)}
           else "gradient_checkpointing": cfg.model.gradient_checkpointing},
    )  # the lr and its schedule are those of the optimizer it is handed
    # one generation of P prompts x G, then ONE optimizer step over it: the old logprobs are the
    # current ones (not recomputed), and dapo's normaliser is the whole batch's token count
    assert config.generation_batch_size == batch and config.steps_per_generation == config.gradient_accumulation_steps
    print(f"TRL: per_device_train_batch_size={config.per_device_train_batch_size} x "
          f"gradient_accumulation_steps={config.gradient_accumulation_steps} "
          f"(steps_per_generation={config.steps_per_generation}), generation_batch_size={config.generation_batch_size} "
          f"= {rl.prompts_per_step} prompts x num_generations={config.num_generations}, loss_type={config.loss_type} "
          f"(token sum / the generation batch's tokens), one optimizer step a generation")
    clock = Clock()
    trainer = GRPOTrainer(model=model, reward_funcs=exact_match, args=config, train_dataset=data, processing_class=tok,
                          callbacks=[clock], optimizers=make_optimizer(model, cfg))
    rollout = trainer._generate_and_score_completions  # sampling + rewards + advantages, as rlvr's time_rollout

    def timed_rollout(*a, **k):
        t0 = time.perf_counter()
        out = rollout(*a, **k)
        clock.run.rollout_times.append(time.perf_counter() - t0)
        clock.run.lengths.append(out["completion_mask"].sum(1).float().mean().item())  # [B] tokens, to EOS
        return out

    trainer._generate_and_score_completions = timed_rollout
    trainer.train()
    return clock.run


def held_out_accuracy(folders: list[str], cfg, done: dict[str, float] | None = None) -> list[float]:
    """`rlvr eval` of each model (the recipe's eval: section, greedy, the same problems), its tables
    unprinted; `done`: accuracies by folder already measured (greedy: the same again), updated."""
    from rlvr.cli import eval_model

    done = {} if done is None else done
    with contextlib.redirect_stdout(io.StringIO()):
        for folder in folders:
            if folder not in done:
                done[folder] = eval_model(folder, cfg, None).overall.accuracy
    return [done[folder] for folder in folders]


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
    print(f"{'':16}{'s per step':>11}{'rollout':>9}{'update':>8}{'tokens':>8}   all steps")
    for name, run in runs.items():
        t, r = step[name], roll[name]
        print(f"{name:<16}{t:>11.2f}{r:>9.2f}{t - r:>8.2f}{statistics.mean(run.lengths):>8.1f}   "
              f"{', '.join(f'{x:.2f}' for x in run.step_times)}")
    print(f"  tokens: mean response length, all steps (max {args.max_new_tokens}; EOS ends a response on both sides)")
    a, a_all, b = step["rlvr"], step["rlvr, every row"], step["TRL"]
    ra, rb = roll["rlvr"], roll["TRL"]
    print(f"  rlvr is {b / a:.1f}x faster a step (target >= 3x): {rb / ra:.1f}x at rollout, {(b - rb) / (a - ra):.1f}x at "
          f"update, where it left out {100 * skipped:.0f}% of the rows as gradient-free (zero advantage)")
    print(f"  computing every row as TRL does, rlvr is {b / a_all:.1f}x faster a step")
    print(json.dumps({"ours_s_per_step": round(a, 3), "trl_s_per_step": round(b, 3), "ratio": round(b / a, 2),
                      "ours_rollout_s": round(ra, 3), "trl_rollout_s": round(rb, 3),
                      "zero_adv_skipped": round(skipped, 3), "ours_every_row_s_per_step": round(a_all, 3),
                      "ratio_every_row": round(b / a_all, 2),
                      "ours_tokens": round(statistics.mean(runs["rlvr"].lengths), 1),
                      "trl_tokens": round(statistics.mean(runs["TRL"].lengths), 1),
                      "micro_batch": micro_batch(settings(model_dir, args, tmp).rl),
                      "prompts": args.prompts, "group": args.group, "max_new_tokens": args.max_new_tokens}))


def first_at(curve: list[tuple[float, int, float]], target: float, times: int) -> float | None:
    """The first grid time from which accuracy is >= target at `times` consecutive grid points."""
    hits = [acc >= target for *_, acc in curve]
    return next((t for i, (t, *_) in enumerate(curve) if all(hits[i:i + times]) and i + times <= len(hits)), None)


def time_to_accuracy(args, tmp: Path) -> None:
    import torch

    runs = {}
    for name, train in (("rlvr", ours), ("TRL", trl)):
        torch.manual_seed(0)
        runs[name] = train(settings(args.model, args, tmp / name), Grid(args.eval_every_s, args.budget, args.model,
                                                                          tmp / name / "grid"))
    cfg = settings(args.model, args, tmp / "eval")
    t0 = time.perf_counter()
    done: dict[str, float] = {}
    start = held_out_accuracy([args.model], cfg, done)[0]
    # rounded: start + 0.05 in floating point can land a hair above the k / n it means
    target = round(start + 0.05, 6) if args.target is None else args.target
    curves = {}  # name: [(grid seconds, step, accuracy)], from t = 0
    for name, run in runs.items():
        points = run.grid.finish()
        accuracies = held_out_accuracy([folder for *_, folder in points], cfg, done)
        curves[name] = [(0.0, 0, start)] + [(t, step, acc) for (t, step, _), acc in zip(points, accuracies)]
    first = {name: first_at(curve, target, 1) for name, curve in curves.items()}
    twice = {name: first_at(curve, target, 2) for name, curve in curves.items()}
    trained = {name: sum(run.step_times) for name, run in runs.items()}
    n_grid = len(curves["rlvr"]) - 1
    print(f"\n{args.prompts} prompts x {args.group} rollouts, {args.max_new_tokens} new tokens, lr {args.lr:g}, "
          f"warmup {args.warmup}; budget {args.budget:g} s of training each, from {args.model}")
    print(f"greedy held-out accuracy on n = {2 * (args.eval_n // 2)} problems at the start and every "
          f"{args.eval_every_s:g} s of training, {n_grid} grid points a side (evaluations took "
          f"{time.perf_counter() - t0:.0f} s); target {100 * target:.1f}%")
    print(f"{'train s':>8}{'rlvr step':>11}{'accuracy':>10}{'TRL step':>11}{'accuracy':>10}")
    for (t, s_a, acc_a), (_, s_b, acc_b) in zip(curves["rlvr"], curves["TRL"]):
        print(f"{t:>8g}{s_a:>11}{100 * acc_a:>9.1f}%{s_b:>11}{100 * acc_b:>9.1f}%")
    print(f"  (step: the last one ended at or before that time; trained {trained['rlvr']:.0f} s, "
          f"{len(runs['rlvr'].step_times)} steps (rlvr), {trained['TRL']:.0f} s, {len(runs['TRL'].step_times)} steps (TRL))")
    for name in curves:
        when = f"at {first[name]:g} s" if first[name] is not None else f"not by {curves[name][-1][0]:g} s"
        held = f"from {twice[name]:g} s" if twice[name] is not None else "never"
        print(f"  {name} reaches {100 * target:.1f}% {when}; at two consecutive grid points {held}")
    last = curves["TRL"][-1][0]

    def ratios(a, b):  # rlvr's and TRL's grid times: the ratio when both reached it after the start, or,
        # when only rlvr did, the lower bound TRL's last grid time gives
        return (b / a if a and b else None), (last / a if a and b is None else None)

    ratio, at_least = ratios(first["rlvr"], first["TRL"])
    ratio2, at_least2 = ratios(twice["rlvr"], twice["TRL"])
    for what, r, lo in (("first reaching", ratio, at_least), ("holding (two grid points)", ratio2, at_least2)):
        if r:
            print(f"  {what} the target, rlvr is {r:.1f}x faster")
        elif lo:
            print(f"  {what} the target, rlvr is at least {lo:.1f}x faster (TRL not by {last:g} s)")
    r1 = lambda x: None if x is None else round(x, 2)  # noqa: E731
    print(json.dumps({"mode": "accuracy", "start_accuracy": start, "target": round(target, 4), "budget_s": args.budget,
                      "eval_every_s": args.eval_every_s,
                      "ours_s_to_target": first["rlvr"], "trl_s_to_target": first["TRL"],
                      "ratio": r1(ratio), "ratio_at_least": r1(at_least),
                      # the first grid time from which the target holds at two consecutive grid points
                      "ours_s_to_target_twice": twice["rlvr"], "trl_s_to_target_twice": twice["TRL"],
                      "ratio_twice": r1(ratio2), "ratio_twice_at_least": r1(at_least2),
                      "ours_steps": len(runs["rlvr"].step_times), "trl_steps": len(runs["TRL"].step_times),
                      "ours_curve": [[t, step, acc] for t, step, acc in curves["rlvr"]],  # grid s, step, accuracy
                      "trl_curve": [[t, step, acc] for t, step, acc in curves["TRL"]],
                      "micro_batch": micro_batch(cfg.rl),
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
    ap.add_argument("--micro-batch", type=int, help="rollouts a forward/backward, both sides (default: the "
                    "demo recipe's rl.micro_batch_size, 32); must divide --prompts x --group")
    ap.add_argument("--eval-every-s", type=float, default=30.0,
                    help="--accuracy: seconds of training between the grid points scored, both sides")
    ap.add_argument("--eval-n", type=int, default=1000, help="--accuracy: held-out problems, half per bucket")
    ap.add_argument("--target", type=float, help="--accuracy: accuracy to reach, 0-1 (default: start + 0.05)")
    args = ap.parse_args()
    if args.accuracy and args.model is None:
        ap.error("--accuracy needs --model (an SFT checkpoint folder, e.g. runs/demo/sft/model)")
    if args.accuracy and not 0 < args.eval_every_s <= args.budget:
        ap.error("--eval-every-s must be > 0 and at most --budget")
    sys.path.insert(0, str(ROOT))
    rl = settings(args.model or "embedded", args, Path("unused")).rl  # checked before either side trains
    if (args.prompts * args.group) % micro_batch(rl):
        ap.error(f"--prompts x --group ({args.prompts * args.group}) must be a multiple of the micro-batch "
                 f"({micro_batch(rl)}; --micro-batch), which TRL needs to split its batch into rlvr's micro-batches")

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
