"""The RL loop (GRPO by default), top to bottom. One step:

  Stage 1  sample prompts, G rollouts each (rollout engine); with DAPO's dynamic sampling,
           more prompts until enough groups have reward spread
  Stage 2  score each rollout with the task's reward (+ overlong shaping)
  Stage 3  advantages (grpo, dr_grpo, rloo, reinforce_pp, or gae with a critic), after the
           reference model's logprobs (KL in the loss or in the reward) and critic values;
           choose the rollouts to train on (groups with spread, truncated ones masked)
  Stage 4  token logprobs of the rollouts under the policy
  Stage 5  per-token objective (PPO-clip / GSPO) -> aggregation with a global normaliser -> backward
  Stage 6  critic step (PPO), clip gradients, AdamW step, lr schedule; log, checkpoint, evaluate

Departures from the book's chapter-6 loop (which we also support through its recipe): several
prompts per step instead of one; token-level ratio and clipping as in PPO/GRPO (arXiv
2402.03300 eq. 3) rather than a summed sequence logprob, which is the on-policy special case
(inner_epochs=1 makes ratio = 1 and the gradient identical to the plain policy gradient).
With inner_epochs=1 the "old" logprobs are the current ones detached, saving a forward pass.

Precision (model.autocast, models.resolve_precision): on a GPU every forward (rollouts, reference,
critic, policy) runs under bf16 autocast over float32 weights; logprobs, values, the losses,
gradients and AdamW are float32.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from rlvr.algorithms import advantages as adv_fns
from rlvr.config import TOKEN_LEVEL_ADVANTAGES, Config
from rlvr.prompts import prompt_ids
from rlvr.rewards import score_many
from rlvr.rewards.length import overlong_penalty
from rlvr.rollout.hf import SamplingParams
from rlvr.train import distributed as dist_utils
from rlvr.train import run_dir, state
from rlvr.train.critic import critic_values, update_critic
from rlvr.train.distributed import global_sum
from rlvr.train.state import Trainer
from rlvr.train.update import frozen_logprobs, gradient_rows, update
from rlvr.types import Completion, RolloutBatch, Sample


@dataclass
class Scored:
    completions: list[Completion]  # [B] flattened, a prompt's group in consecutive rows
    prompts: list[list[int]]  # [B] prompt token ids per row
    rewards: torch.Tensor  # [B] what the policy is trained on (task reward + shaping)
    task_rewards: torch.Tensor  # [B] the task reward alone (which groups are informative)
    correct: torch.Tensor  # [B] bool, the task reward alone says correct (>= 1)
    group_ids: torch.Tensor  # [B]
    reward_errors: int
    samples: list[Sample]  # [B / G] the problem of each group, in row order

    @staticmethod
    def concat(parts: list["Scored"]) -> "Scored":
        return Scored(sum((p.completions for p in parts), []), sum((p.prompts for p in parts), []),
                      torch.cat([p.rewards for p in parts]), torch.cat([p.task_rewards for p in parts]),
                      torch.cat([p.correct for p in parts]),
                      torch.cat([p.group_ids for p in parts]), sum(p.reward_errors for p in parts),
                      sum((p.samples for p in parts), []))


def rollout_and_score(tr: Trainer, samples: list[Sample], cfg: Config, first_group: int = 0) -> Scored:
    """Stages 1-2 for one set of prompts: G rollouts each, task reward plus overlong shaping."""
    rl = cfg.rl
    ids = [prompt_ids(s.prompt, cfg.task.template, tr.tokenizer) for s in samples]
    groups = tr.engine.generate(ids, rl.group_size, SamplingParams(rl.max_new_tokens, rl.temperature, rl.top_p))
    completions = [c for group in groups for c in group]
    row_samples = [s for s, group in zip(samples, groups) for _ in group]
    task_rewards, correct, errors = score_many(tr.reward, completions, row_samples, rl.reward_truncated)
    shaping = [overlong_penalty(len(c.token_ids), rl.max_new_tokens, rl.overlong_buffer, rl.overlong_penalty)
               for c in completions]
    prompts = [ids[g] for g, group in enumerate(groups) for _ in group]
    group_ids = [first_group + g for g, group in enumerate(groups) for _ in group]
    return Scored(completions, prompts, torch.tensor([r + p for r, p in zip(task_rewards, shaping)], dtype=torch.float),
                  torch.tensor(task_rewards, dtype=torch.float), torch.tensor(correct), torch.tensor(group_ids), errors,
                  list(samples))


def has_spread(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """[B] bool: the row's group has rewards that are not all equal (a non-zero GRPO signal).
    Called on the task reward, not the shaped one: DAPO's filter (arXiv 2503.14476 eq. 11) keeps
    groups whose accuracy is strictly between 0 and 1; a length penalty alone is no signal."""
    n = int(group_ids.max()) + 1
    hi = torch.full((n,), -float("inf")).scatter_reduce(0, group_ids, rewards, "amax")
    lo = torch.full((n,), float("inf")).scatter_reduce(0, group_ids, rewards, "amin")
    return (hi - lo)[group_ids] > 0


def sample_groups(tr: Trainer, stream, cfg: Config) -> tuple[Scored, int]:
    """Stages 1-2, and DAPO's dynamic sampling (arXiv 2503.14476 sec. 3.2) when asked: sample
    more prompts until prompts_per_step groups have reward spread, or max_sampling_rounds.
    Under torchrun each rank needs its own share (P / world) of them, so sampling goes on until
    the rank with the fewest has enough; every rank sees the same minimum and they stop together."""
    P, rank, world = cfg.rl.prompts_per_step, dist_utils.rank(), dist_utils.world_size()
    # every rank draws the same prompts and keeps its own share: groups never straddle ranks
    parts = [rollout_and_score(tr, stream.next(P)[rank::world], cfg)]
    while cfg.rl.dynamic_sampling and len(parts) < cfg.rl.max_sampling_rounds:
        local = sum(int(has_spread(p.task_rewards, p.group_ids).sum()) for p in parts) // cfg.rl.group_size
        if dist_utils.global_min(float(local)) >= P // world:
            break
        parts.append(rollout_and_score(tr, stream.next(P)[rank::world], cfg, first_group=len(parts) * P))
    return Scored.concat(parts), len(parts)


def rows_to_train(scored: Scored, cfg: Config) -> torch.Tensor:
    """Indices of the rollouts the update sees: groups with spread (when skipping uniform groups
    or sampling dynamically, at most prompts_per_step of them), minus truncated ones if masked."""
    rl = cfg.rl
    keep = torch.ones(len(scored.rewards), dtype=torch.bool)
    if rl.skip_uniform_groups or rl.dynamic_sampling:
        keep &= has_spread(scored.task_rewards, scored.group_ids)
    if rl.dynamic_sampling:  # a full batch is exactly prompts_per_step groups (this rank's share of them)
        kept_groups = scored.group_ids[keep].unique()[: rl.prompts_per_step // dist_utils.world_size()]
        keep &= torch.isin(scored.group_ids, kept_groups)
    if rl.mask_truncated:  # DAPO's overlong filtering: the group still sets the baseline
        keep &= torch.tensor([c.finish_reason != "length" for c in scored.completions])
    return keep.nonzero().squeeze(1)


def build_batch(scored: Scored, pad_id: int) -> RolloutBatch:
    """Right-padded prompt+response rows for every rollout; advantages are filled in later."""
    rows = [p + c.token_ids for p, c in zip(scored.prompts, scored.completions)]
    B, T = len(rows), max(len(r) for r in rows)
    input_ids = torch.full((B, T), pad_id, dtype=torch.long)
    attention = torch.zeros((B, T), dtype=torch.bool)
    response = torch.zeros((B, T), dtype=torch.bool)
    sampled_lp = torch.zeros((B, T))  # the engine's logprobs: "old" when on-policy, and a mismatch check
    for i, (p, c) in enumerate(zip(scored.prompts, scored.completions)):
        n, L = len(p), len(c.token_ids)
        input_ids[i, : n + L] = torch.tensor(rows[i])
        attention[i, : n + L] = True
        response[i, n : n + L] = True
        sampled_lp[i, n : n + L] = torch.tensor(c.logprobs)
    return RolloutBatch(input_ids, attention, response, sampled_lp, torch.zeros(B), scored.rewards.clone(),
                        scored.group_ids.clone())


def add_advantages(tr: Trainer, batch: RolloutBatch, cfg: Config, trained: torch.Tensor | None = None) -> None:
    """Stage 3 on the full batch: reference logprobs, KL-in-reward, critic values, advantages.
    `trained` [B] bool: the rows the update will see (None: all). Group baselines use every row;
    batch whitening takes its mean and std from the trained rows alone, so that the advantages
    trained on have std 1 whatever share of the batch is left out."""
    rl, mask = cfg.rl, batch.response_mask
    token_level = rl.advantage in TOKEN_LEVEL_ADVANTAGES
    # the rows whose forwards (reference, critic) the trained advantages read: every row when a
    # KL penalty in the reward moves its group's baseline; otherwise a row's KL and values reach
    # its own advantage alone (GAE is per row), so rows left out are not computed (they stay 0)
    rows = None if trained is None or (rl.kl_in_reward and not token_level) else trained.nonzero().squeeze(1)
    if tr.ref_model is not None:
        batch.ref_logprobs = frozen_logprobs(tr.ref_model, batch, cfg, rows)
    elif rl.kl_coef > 0 and hasattr(tr.model, "disable_adapter"):  # LoRA: the base model is the reference
        with tr.model.disable_adapter():
            batch.ref_logprobs = frozen_logprobs(tr.model, batch, cfg, rows)
    token_rewards = None
    if rl.kl_in_reward:  # -beta * k1 at each sampled token, with the policy's own logprobs: the
        # engine's are those of the nucleus-truncated distribution when top_p < 1 (and may come
        # from another numeric path, e.g. vLLM), which would bias the penalty
        policy_lp = frozen_logprobs(tr.model, batch, cfg, rows)
        token_rewards = torch.where(mask, -rl.kl_coef * (policy_lp - batch.ref_logprobs), 0.0)
    if tr.critic is not None:
        batch.old_values = critic_values(tr.critic, batch, rl.micro_batch_size, rows)
    rewards = batch.rewards
    if token_rewards is not None and not token_level:  # a sequence-level estimator sees the summed KL
        rewards = rewards + token_rewards.sum(-1)
    inputs = adv_fns.AdvantageInputs(rewards, batch.group_ids, response_mask=mask, values=batch.old_values,
                                     token_rewards=token_rewards if token_level else None, gamma=rl.gamma, lam=rl.lam,
                                     reduce=global_sum, whiten_rows=trained)  # batch whitening over all ranks' rows
    adv = adv_fns.compute(rl.advantage, inputs)
    if tr.critic is not None:  # the critic regresses on returns from the raw advantages
        batch.returns = adv_fns.returns_from_advantages(adv, batch.old_values, mask)
    if rl.whiten_advantages:
        adv = adv_fns.whiten(adv, mask if adv.dim() == 2 else torch.ones_like(adv, dtype=torch.bool),
                             reduce=global_sum, rows=trained)
    batch.advantages = adv


def rl_step(tr: Trainer, stream, cfg: Config, step: int):
    """One full RL step (stages 1-6); returns the step's metrics and the scored rollouts.
    `step` counts finished steps: during critic warm-up only the critic learns."""
    t0 = time.perf_counter()
    scored, rounds = sample_groups(tr, stream, cfg)
    t1 = time.perf_counter()
    lengths = torch.tensor([len(c.token_ids) for c in scored.completions], dtype=torch.float)  # [B]
    keep = rows_to_train(scored, cfg)
    # every pass over the batch (reference, critic, policy) goes in micro-batches of similar length,
    # which pad less; advantages and the loss's global normaliser do not depend on row order
    order = torch.argsort(lengths, stable=True)  # [B]
    n = global_sum(torch.tensor([len(scored.rewards), scored.rewards.sum(), scored.rewards.square().sum()],
                                dtype=torch.float64))
    metrics = {
        "reward": scored.rewards.mean().item(), "reward_std": _std(*n.tolist()),
        "accuracy": scored.correct.float().mean().item(),
        "length_mean": lengths.mean().item(), "length_max": lengths.max().item(),
        "truncated": sum(c.finish_reason == "length" for c in scored.completions) / len(scored.completions),
        "kept_rollouts": len(keep), "sampling_rounds": rounds, "reward_errors": scored.reward_errors,
        "generated_tokens": int(lengths.sum()),
    }
    updates_policy = tr.critic is None or step >= cfg.critic.warmup_steps
    metrics["lr"] = tr.scheduler.get_last_lr()[0] if updates_policy else 0.0  # what this step's update uses
    # decided on the global count: a rank whose own share is empty still joins every collective
    if int(global_sum(torch.tensor(len(keep)))) > 0:
        batch = build_batch(scored, tr.tokenizer.pad_token_id).select(order)
        trained = torch.isin(order, keep)  # [B] in the batch's (sorted) order
        add_advantages(tr, batch, cfg, trained)
        batch = batch.select(trained.nonzero().squeeze(1))
        if tr.critic is not None:
            # the value loss is fit more tightly than one step allows
            metrics.update(over_epochs([update_critic(tr.critic, tr.critic_optimizer, batch, cfg)
                                        for _ in range(cfg.critic.epochs)]))
        if updates_policy:
            tr.model.train()
            epochs = []
            for epoch in range(cfg.rl.inner_epochs):
                if epoch == 0 and cfg.rl.inner_epochs > 1:  # freeze the rollout policy's logprobs
                    # (only where the update will read them: gradient_rows, as in policy_gradients)
                    batch.old_logprobs = frozen_logprobs(tr.model, batch, cfg, rows=gradient_rows(tr.model, batch, cfg))
                epochs.append(update(tr, batch, cfg, on_policy=cfg.rl.inner_epochs == 1))
            metrics.update(over_epochs(epochs))
            if dist_utils.is_sharded(tr.model) and tr.engine.model is not tr.model:  # a whole copy (state.py): refresh it
                tr.engine.load_weights(dist_utils.iter_full_state(tr.model))  # gathered a tensor at a time
    # the schedule follows the policy's RL steps, updated or not (a skipped batch), from the end of
    # the critic's warm-up (state.make_optimizer): it always reaches its floor at rl.steps
    if updates_policy:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" in a skipped first step
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(cfg.rl.inner_epochs):
                tr.scheduler.step()
    t2 = time.perf_counter()
    metrics.update({"time_rollout": t1 - t0, "time_update": t2 - t1, "tokens_per_s": metrics["generated_tokens"] / (t1 - t0)})
    return metrics, scored


def over_epochs(rows: list[dict[str, float]]) -> dict[str, float]:
    """One step's metrics from its optimizer steps over the same batch (rl.inner_epochs,
    critic.epochs): the mean of each (the loss, clip fraction and KL of every epoch, not only the
    last's), the range of the ratio over all of them, and the count of skipped non-finite steps."""
    if len(rows) == 1:
        return rows[0]
    out = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        values = [row[key] for row in rows if key in row]
        if key == "ratio_max":
            out[key] = max(values)
        elif key == "ratio_min":
            out[key] = min(values)
        elif key.endswith("_nonfinite"):
            out[key] = sum(values)
        else:
            out[key] = sum(values) / len(values)
    return out


def _std(n: float, total: float, squares: float) -> float:
    """Sample standard deviation from a count, sum and sum of squares (numbers summed over ranks)."""
    if n < 2:
        return 0.0
    return max(squares - total * total / n, 0.0) ** 0.5 / (n - 1) ** 0.5


def train_rl(cfg: Config, resume: bool = False, log_fn=print, resume_command: str | None = None) -> dict:
    """Run RL as the recipe says; returns the final metrics row. Writes under cfg.output_dir.
    Under torchrun every rank samples its share of the prompts; rank 0 writes everything.
    `resume_command`: what a stop or a failure prints to continue the run (a demo gives its own;
    by default `rlvr train OUT/config.yaml --resume`, which holds the settings it ran with)."""
    from rlvr.logging import MetricsLog, progress
    from rlvr.train import checkpoint

    owns_group = dist_utils.init_from_env()
    main = dist_utils.rank() == 0
    log_fn = log_fn if main else (lambda *a, **k: None)
    root = Path(cfg.output_dir)
    data, tr, stream, step, elapsed = _start(cfg, root, resume, log_fn)
    saved = step if resume and step else None  # the step the newest checkpoint holds
    if resume_command is None:
        resume_command = f"rlvr train {root / 'config.yaml'} --resume"
        if dist_utils.world_size() > 1:
            resume_command = f"torchrun (as before) -m {resume_command}"
    log = MetricsLog(root / "metrics.jsonl") if main else None
    bar = progress(cfg.rl.steps, step, "rl", disable=not main)
    row: dict = {}
    doing = "the start"  # what the run was doing, for the message if it stops
    try:
        while step < cfg.rl.steps and not (cfg.rl.time_budget_s and elapsed >= cfg.rl.time_budget_s):
            t0 = time.perf_counter()
            doing = f"step {step + 1}"
            row, scored = rl_step(tr, stream, cfg, step)
            row = dist_utils.reduce_metrics(row)
            row["tokens_per_s"] = row["generated_tokens"] / max(row["time_rollout"], 1e-9)
            step += 1
            elapsed += dist_utils.global_max(time.perf_counter() - t0)
            row = {"phase": "rl", "step": step, "elapsed_s": elapsed, **row}
            if cfg.rl.eval_every and step % cfg.rl.eval_every == 0 and data.heldout:  # every rank takes part
                row["heldout_accuracy"] = periodic_eval(tr.engine, tr.tokenizer, data.heldout, tr.reward, cfg)
            if main:
                log.log(row)
                bar.set_postfix(reward=f"{row['reward']:.2f}", acc=f"{row['accuracy']:.2f}",
                                len=f"{row['length_mean']:.0f}", refresh=False)
                bar.update(1)
                if cfg.rl.log_samples_every and (step == 1 or step % cfg.rl.log_samples_every == 0):
                    run_dir.log_rollouts(root / "rollouts.jsonl", step, scored, cfg.rl.group_size)
            if step % cfg.rl.save_every == 0:
                doing = f"the checkpoint of step {step}"
                state.save(tr, stream, cfg, root, step, elapsed)
                saved = step
        bar.close()
        if log:
            log.close()
        doing = f"the final checkpoint (step {step})"
        # the same value on every rank (state.save holds collectives)
        final = state.save(tr, stream, cfg, root, step, elapsed) if saved != step else checkpoint.latest(root)
    except (KeyboardInterrupt, Exception) as e:  # Ctrl-C, a full disk, a folder not writable: where the run stands
        # (a half-done step is not saved: resume continues from the last whole checkpoint)
        bar.close()
        last = checkpoint.latest(root) if main else None
        how = "stopped" if isinstance(e, KeyboardInterrupt) else f"failed ({type(e).__name__}: {e})"
        log_fn(f"\n{how} during {doing}; last checkpoint: {last or 'none yet (--resume starts RL from step 0)'}; "
               f"continue with: {resume_command}")
        raise
    dist_utils.check_replicas_equal(tr.model)
    tr.engine.close()  # vLLM: frees its memory; under torchrun its shutdown also ends the process group
    if owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    log_fn(f"saved {final}")
    return {"checkpoint": str(final or checkpoint.latest(root)), "steps": step, "rl_seconds": elapsed, **row}


def _start(cfg: Config, root: Path, resume: bool, log_fn):
    """Everything before the first step, checked before the run folder changes: the output folder
    and (on --resume) its checkpoint and settings, the task, the eval fields, the trainer, the
    prompt stream; then the folder's metrics trimmed and its config recorded.
    -> (task data, trainer, prompt stream, steps done, training seconds so far)."""
    from rlvr.tasks import PromptStream, load_task

    state.check_world(cfg)
    start_from = dist_utils.from_rank0(lambda: run_dir.prepare_output(root, resume))
    changes = dist_utils.from_rank0(lambda: run_dir.check_resume_config(root, cfg)) if resume else []
    for change in changes:
        log_fn(f"--resume with a changed setting: {change}")
    data = load_task(cfg.task, need=("rl", "heldout"))
    if data.heldout:  # the evaluations' breakdown fields, checked before training rather than at its end
        from rlvr.eval.evaluate import check_by, eval_kwargs, eval_problems

        check_by(eval_problems(data.heldout, cfg.eval), eval_kwargs(cfg.eval)["by"])
    torch.manual_seed(cfg.seed)  # every rank builds the same random weights (LoRA adapters, a critic's head)
    tr = state.build_trainer(cfg, start_from)
    if dist_utils.rank() > 0:
        torch.manual_seed(cfg.seed + 7919 * dist_utils.rank())  # ranks sample differently
    dist_utils.check_replicas_equal(tr.model, "after building the model")
    stream = PromptStream(data.rl_train, cfg.seed)  # the same prompt order on every rank
    step, elapsed = state.restore(tr, stream, start_from, cfg, log_fn) if start_from is not None else (0, 0.0)
    if dist_utils.rank() == 0:  # every input has been checked: only now does the run folder change
        if resume:  # rows of the steps after the checkpoint: they are about to be redone
            for name in ("metrics.jsonl", "rollouts.jsonl"):
                run_dir.drop_rows_after(root / name, step)
        if not resume or changes:
            run_dir.record_config(root, cfg, step)
    if cfg.rl.time_budget_s and elapsed >= cfg.rl.time_budget_s and step < cfg.rl.steps:
        log_fn(f"rl.time_budget_s={cfg.rl.time_budget_s:g} is spent already ({elapsed:.0f} s trained): no step "
               f"runs; resume with a larger rl.time_budget_s= (or 0: no limit) to train on to rl.steps={cfg.rl.steps}")
    return data, tr, stream, step, elapsed


def periodic_eval(engine, tokenizer, heldout, reward, cfg: Config) -> float:
    """Held-out accuracy mid-run, measured as `rlvr eval` measures it (the recipe's eval:), on the
    same problems. Under torchrun each rank scores every world-th problem and the accuracy is over
    all of them: N times faster, and no rank waits at its next collective for a long evaluation on
    rank 0 (a collective times out, after 10 minutes with NCCL)."""
    from rlvr.eval.evaluate import eval_kwargs, eval_problems, evaluate

    mine = eval_problems(heldout, cfg.eval)[dist_utils.rank() :: dist_utils.world_size()]
    accuracy = 0.0
    if mine:
        accuracy = evaluate(engine, tokenizer, mine, reward, cfg.task.template, cfg.eval.max_new_tokens,
                            cfg.eval.batch_size, **eval_kwargs(cfg.eval, cfg.task.reward)).overall.accuracy
    shares = dist_utils.gather_objects((len(mine), accuracy))  # every problem weighs the same
    return sum(n * a for n, a in shares) / max(1, sum(n for n, _ in shares))
