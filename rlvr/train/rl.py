"""The RL loop (GRPO by default), top to bottom. One step:

  Stage 1  sample prompts, G rollouts each (rollout engine)
  Stage 2  score each rollout with the task's reward
  Stage 3  group-relative advantages; optionally drop groups whose rewards are all equal
  Stage 4  token logprobs of the rollouts under the policy (and the reference, if kl_coef > 0)
  Stage 5  per-token PPO-clip objective -> aggregation with a global normaliser -> backward
  Stage 6  clip gradients, AdamW step, lr schedule; log, checkpoint, evaluate

Departures from the book's chapter-6 loop (which we also support through its recipe): several
prompts per step instead of one; token-level ratio and clipping as in PPO/GRPO (arXiv
2402.03300 eq. 3) rather than a summed sequence logprob, which is the on-policy special case
(inner_epochs=1 makes ratio = 1 and the gradient identical to the plain policy gradient).
With inner_epochs=1 the "old" logprobs are the current ones detached, saving a forward pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rlvr.algorithms import advantages as adv_fns
from rlvr.algorithms import aggregation, losses
from rlvr.algorithms.logprobs import token_entropy, token_logprobs
from rlvr.config import Config
from rlvr.prompts import prompt_ids
from rlvr.rewards import Reward, score_completion
from rlvr.rollout.hf import HFEngine, SamplingParams
from rlvr.train.sft import cosine_schedule
from rlvr.types import Completion, RolloutBatch, Sample


@dataclass
class Scored:
    completions: list[Completion]  # [B] flattened, prompt i's group at rows i*G .. i*G+G-1
    prompts: list[list[int]]  # [B] prompt token ids per row
    rewards: torch.Tensor  # [B]
    group_ids: torch.Tensor  # [B]
    reward_errors: int


def rollout_and_score(engine: HFEngine, tokenizer, samples: list[Sample], reward: Reward, cfg: Config) -> Scored:
    """Stages 1-2."""
    rl = cfg.rl
    ids = [prompt_ids(s.prompt, cfg.task.template, tokenizer) for s in samples]
    params = SamplingParams(rl.max_new_tokens, rl.temperature, rl.top_p)
    groups = engine.generate(ids, rl.group_size, params)
    completions, prompts, rewards, group_ids, errors = [], [], [], [], 0
    for g, (sample, group) in enumerate(zip(samples, groups)):
        for c in group:
            r, ok = score_completion(reward, c, sample, rl.reward_truncated)
            completions.append(c)
            prompts.append(ids[g])
            rewards.append(r)
            group_ids.append(g)
            errors += not ok
    return Scored(completions, prompts, torch.tensor(rewards), torch.tensor(group_ids), errors)


def build_batch(scored: Scored, advantages: torch.Tensor, keep: torch.Tensor, pad_id: int) -> RolloutBatch:
    """Right-padded prompt+response rows for the rollouts in `keep` ([K] indices)."""
    rows = [scored.prompts[i] + scored.completions[i].token_ids for i in keep.tolist()]
    T = max(len(r) for r in rows)
    K = len(rows)
    input_ids = torch.full((K, T), pad_id, dtype=torch.long)
    attention = torch.zeros((K, T), dtype=torch.bool)
    response = torch.zeros((K, T), dtype=torch.bool)
    sampled_lp = torch.zeros((K, T))  # engine's logprobs, to measure trainer/engine mismatch
    for k, i in enumerate(keep.tolist()):
        p, c = len(scored.prompts[i]), scored.completions[i]
        input_ids[k, : p + len(c.token_ids)] = torch.tensor(rows[k])
        attention[k, : p + len(c.token_ids)] = True
        response[k, p : p + len(c.token_ids)] = True
        sampled_lp[k, p : p + len(c.token_ids)] = torch.tensor(c.logprobs)
    return RolloutBatch(input_ids, attention, response, sampled_lp, advantages[keep], scored.rewards[keep],
                        scored.group_ids[keep])


def policy_logits(model, batch: RolloutBatch) -> torch.Tensor:
    """Logits [b, t, V] for a micro-batch, trimmed to its longest row."""
    t = int(batch.attention_mask.sum(1).max())
    device = model.device
    return model(input_ids=batch.input_ids[:, :t].to(device), attention_mask=batch.attention_mask[:, :t].to(device)).logits


@torch.no_grad()
def frozen_logprobs(ref_model, batch: RolloutBatch, cfg: Config) -> torch.Tensor:
    out = torch.zeros_like(batch.old_logprobs)
    for s in range(0, len(batch), cfg.rl.micro_batch_size):
        mb = batch.select(slice(s, s + cfg.rl.micro_batch_size))
        lp = token_logprobs(policy_logits(ref_model, mb), mb.input_ids[:, : mb.attention_mask.sum(1).max()].to(ref_model.device),
                            cfg.rl.temperature)
        out[s : s + len(mb), : lp.shape[1]] = lp.cpu()
    return out


def update(model, optimizer, scheduler, batch: RolloutBatch, cfg: Config, on_policy: bool) -> dict[str, float]:
    """Stages 4-6 for one optimizer step over the whole batch, in micro-batches.

    The normaliser is computed once for the whole batch, so the gradient is the same whatever
    the micro-batch size (see tests/algorithms/test_aggregation.py).
    """
    rl = cfg.rl
    norm = aggregation.normalizer(rl.aggregation, batch.response_mask)
    n_tokens = batch.response_mask.sum().clamp(min=1)
    sums = {"clip_frac": 0.0, "entropy": 0.0, "kl": 0.0, "logprob_mismatch": 0.0, "ratio_max": 1.0}
    optimizer.zero_grad(set_to_none=True)
    loss_total = 0.0
    for s in range(0, len(batch), rl.micro_batch_size):
        mb = batch.select(slice(s, s + rl.micro_batch_size))
        logits = policy_logits(model, mb)  # [b, t, V]
        t = logits.shape[1]
        ids, mask = mb.input_ids[:, :t].to(model.device), mb.response_mask[:, :t].to(model.device)
        lp = token_logprobs(logits, ids, rl.temperature)  # [b, t]
        old = lp.detach() if on_policy else mb.old_logprobs[:, :t].to(lp.device)
        ref = None if mb.ref_logprobs is None else mb.ref_logprobs[:, :t].to(lp.device)
        out = losses.policy_loss(rl.loss, losses.LossInputs(lp, old, mb.advantages.to(lp.device), mask, ref),
                                 clip_low=rl.clip_low, clip_high=rl.clip_high, kl_coef=rl.kl_coef)
        loss = aggregation.aggregate(rl.aggregation, out.per_token, mask, norm)
        loss.backward()
        loss_total += loss.item()
        m = mask.float()
        sums["clip_frac"] += (out.clipped.float() * m).sum().item()
        sums["entropy"] += (token_entropy(logits.detach(), temperature=rl.temperature) * m).sum().item()
        sums["kl"] += 0.0 if out.kl is None else (out.kl * m).sum().item()
        if on_policy:  # the engine's sampling logprobs vs the trainer's, same weights
            sums["logprob_mismatch"] += ((mb.old_logprobs[:, :t].to(lp.device) - lp.detach()).abs() * m).sum().item()
        sums["ratio_max"] = max(sums["ratio_max"], float((out.ratio * m).max()))
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), rl.grad_clip)
    optimizer.step()
    scheduler.step()
    per_token = {k: v / float(n_tokens) for k, v in sums.items() if k != "ratio_max"}
    return {"loss": loss_total, "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0],
            "ratio_max": sums["ratio_max"], **per_token}


def keep_rows(scored: Scored, skip_uniform: bool) -> torch.Tensor:
    """Indices of rollouts whose group has any reward spread (or all, if not skipping)."""
    if not skip_uniform:
        return torch.arange(len(scored.rewards))
    g = scored.group_ids
    n = int(g.max()) + 1
    hi = torch.full((n,), -float("inf")).scatter_reduce(0, g, scored.rewards, "amax")
    lo = torch.full((n,), float("inf")).scatter_reduce(0, g, scored.rewards, "amin")
    return ((hi - lo)[g] > 0).nonzero().squeeze(1)


def rl_step(model, ref_model, engine, tokenizer, optimizer, scheduler, samples, reward, cfg: Config):
    """One full RL step (stages 1-6); returns the step's metrics and the scored rollouts."""
    t0 = time.perf_counter()
    scored = rollout_and_score(engine, tokenizer, samples, reward, cfg)
    t1 = time.perf_counter()
    advantages = adv_fns.compute(cfg.rl.advantage, adv_fns.AdvantageInputs(scored.rewards, scored.group_ids))
    lengths = torch.tensor([len(c.token_ids) for c in scored.completions], dtype=torch.float)  # [B]
    keep = keep_rows(scored, cfg.rl.skip_uniform_groups)
    keep = keep[torch.argsort(lengths[keep], stable=True)]  # micro-batches of similar length pad less
    metrics = {
        "reward": scored.rewards.mean().item(), "reward_std": scored.rewards.std().item(),
        "accuracy": (scored.rewards >= 1).float().mean().item(),
        "length_mean": lengths.mean().item(), "length_max": lengths.max().item(),
        "truncated": sum(c.finish_reason == "length" for c in scored.completions) / len(scored.completions),
        "kept_rollouts": len(keep), "reward_errors": scored.reward_errors,
        "generated_tokens": int(lengths.sum()),
    }
    if len(keep):
        batch = build_batch(scored, advantages, keep, tokenizer.pad_token_id)
        if ref_model is not None:
            batch.ref_logprobs = frozen_logprobs(ref_model, batch, cfg)
        model.train()
        for epoch in range(cfg.rl.inner_epochs):
            if epoch == 0 and cfg.rl.inner_epochs > 1:  # freeze the rollout policy's logprobs
                batch.old_logprobs = frozen_logprobs(model, batch, cfg)
            metrics.update(update(model, optimizer, scheduler, batch, cfg, on_policy=cfg.rl.inner_epochs == 1))
    t2 = time.perf_counter()
    metrics.update({"time_rollout": t1 - t0, "time_update": t2 - t1, "tokens_per_s": metrics["generated_tokens"] / (t1 - t0)})
    return metrics, scored


def make_optimizer(model, cfg: Config):
    rl = cfg.rl
    opt = torch.optim.AdamW(model.parameters(), lr=rl.lr, weight_decay=rl.weight_decay)
    total = rl.steps * rl.inner_epochs
    return opt, cosine_schedule(opt, rl.warmup_steps * rl.inner_epochs, total, rl.min_lr_ratio)


def prepare_output(root: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None. Refuses to write over an earlier run."""
    from rlvr.train import checkpoint

    last = checkpoint.latest(root)
    if resume:
        if last is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {root}/checkpoints; start without --resume")
        return last
    if last is not None or (root / "metrics.jsonl").exists():
        raise FileExistsError(
            f"{root} already holds a run; pass --resume to continue it, or set output_dir=... to a new folder"
        )
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty; choose another with output_dir=... "
                              "(rlvr never writes over an earlier run)")
    return None


def train_rl(cfg: Config, resume: bool = False, log_fn=print) -> dict:
    """Run RL as the recipe says; returns the final metrics row. Writes under cfg.output_dir."""
    from rlvr.logging import MetricsLog, progress
    from rlvr.models import eos_token_ids, load_policy
    from rlvr.rewards import resolve
    from rlvr.tasks import PromptStream, load_task
    from rlvr.train import checkpoint

    root = Path(cfg.output_dir)
    start_from = prepare_output(root, resume)
    reward = resolve(cfg.task.reward)
    data = load_task(cfg.task, need=("rl", "heldout"))
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_policy(str(start_from or cfg.model.name_or_path), seed=cfg.model.init_seed,
                                   dtype=cfg.model.dtype)
    ref_model = None
    if cfg.rl.kl_coef > 0:
        ref_model, _ = load_policy(cfg.model.name_or_path, seed=cfg.model.init_seed, dtype=cfg.model.dtype)
        ref_model.eval().requires_grad_(False)
    engine = HFEngine(model, tokenizer, eos_token_ids(tokenizer, model))
    optimizer, scheduler = make_optimizer(model, cfg)
    stream = PromptStream(data.rl_train, cfg.seed)
    step, elapsed = 0, 0.0
    if start_from is not None:
        state = checkpoint.load_state(start_from)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.load(state["stream"])
        checkpoint.set_rng_state(state["rng"])
        step, elapsed = state["step"], state["elapsed"]
        log_fn(f"resumed from {start_from} (step {step})")
        for name in ("metrics.jsonl", "rollouts.jsonl"):
            drop_rows_after(root / name, step)
    if start_from is None:  # every input has been checked: only now create the run folder
        from rlvr.config import save_config

        root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, root / "config.yaml")
    log = MetricsLog(root / "metrics.jsonl")

    def save() -> Path:
        return checkpoint.save(root, step, model, tokenizer, {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "stream": stream.state(),
            "elapsed": elapsed}, keep=cfg.rl.keep_checkpoints)

    bar = progress(cfg.rl.steps, step, "rl")
    row: dict = {}
    try:
        while step < cfg.rl.steps and not (cfg.rl.time_budget_s and elapsed >= cfg.rl.time_budget_s):
            t0 = time.perf_counter()
            samples = stream.next(cfg.rl.prompts_per_step)
            row, scored = rl_step(model, ref_model, engine, tokenizer, optimizer, scheduler, samples, reward, cfg)
            step += 1
            elapsed += time.perf_counter() - t0
            row = {"phase": "rl", "step": step, "elapsed_s": elapsed, **row}
            if cfg.rl.eval_every and step % cfg.rl.eval_every == 0 and data.heldout:
                row["heldout_accuracy"] = periodic_eval(engine, tokenizer, data.heldout, reward, cfg)
            log.log(row)
            bar.set_postfix(reward=f"{row['reward']:.2f}", acc=f"{row['accuracy']:.2f}", len=f"{row['length_mean']:.0f}",
                            refresh=False)
            bar.update(1)
            if cfg.rl.log_samples_every and (step == 1 or step % cfg.rl.log_samples_every == 0):
                log_rollouts(root / "rollouts.jsonl", step, samples, scored, cfg.rl.group_size)
            if step % cfg.rl.save_every == 0:
                save()
    except KeyboardInterrupt:  # a half-done step is not saved: resume from the last whole checkpoint
        bar.close()
        log_fn(f"\nstopped during step {step + 1}; last checkpoint: {checkpoint.latest(root)}; continue with --resume")
        raise
    bar.close()
    log.close()
    final = save()
    log_fn(f"saved {final}")
    return {"checkpoint": str(final), "steps": step, "rl_seconds": elapsed, **row}


def log_rollouts(path: Path, step: int, samples: list[Sample], scored: Scored, group_size: int, n: int = 4) -> None:
    """A few groups of completions, so a run can be read as text, not only as curves."""
    import json

    with path.open("a", encoding="utf-8") as f:
        for g, sample in enumerate(samples[:n]):
            for i in range(g * group_size, (g + 1) * group_size):
                c = scored.completions[i]
                f.write(json.dumps({"step": step, "prompt": sample.prompt, "answer": sample.answer,
                                    "completion": c.text, "reward": float(scored.rewards[i]),
                                    "finish_reason": c.finish_reason}) + "\n")


def periodic_eval(engine, tokenizer, heldout, reward, cfg: Config) -> float:
    from rlvr.eval.evaluate import evaluate

    return evaluate(engine, tokenizer, heldout, reward, cfg.task.template, cfg.eval.max_new_tokens,
                    cfg.eval.batch_size).overall.accuracy


def drop_rows_after(path: Path, step: int) -> None:
    """On resume, forget metrics of steps after the checkpoint: they are about to be redone."""
    import json

    if path.exists():
        rows = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
        path.write_text("".join(r + "\n" for r in rows))
