"""Supervised fine-tuning on worked solutions, until held-out-from-training accuracy plateaus.

Worked solutions are the scarce resource (a teacher's or a human's), so SFT trains on the set it
is given for as many epochs as help: every `eval_every` steps it decodes a validation slice
greedily, keeps the best weights, and stops after `patience` checks without a new best. The
budget (examples, steps, epochs, seconds) and the plateau curve are printed and returned.

The loss is the mean negative logprob of the solution and EOS tokens, computed as RL's update
computes logprobs (train/forward.py: the output layer chunk by chunk), so no [B, T, V] logits
tensor exists: for Qwen3's 151,936-token vocabulary at 64 x 512 tokens it would be 10 GB in
bf16, and Hugging Face's loss adds a 20 GB float32 copy, then their gradients. sft.micro_batch_size
splits a batch further (gradient accumulation over the whole batch's token count).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field

import torch

from rlvr.config import SFTConfig
from rlvr.eval.evaluate import evaluate
from rlvr.logging import MetricsLog, progress
from rlvr.prompts import prompt_ids
from rlvr.rewards import Reward
from rlvr.train.distributed import finite_step
from rlvr.train.forward import token_stats
from rlvr.types import RolloutBatch, Sample


@dataclass
class SFTResult:
    steps: int
    best_step: int
    best_val_accuracy: float
    examples: int
    epochs: float
    seconds: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation accuracy)
    stopped_because: str = ""
    # per check, as `curve`: the share of validation responses cut at sft.max_new_tokens (a
    # truncated response scores 0, so a high rate means the checks measure the limit, not the model)
    val_truncated: list[float] = field(default_factory=list)


def encode(samples: list[Sample], tokenizer, template: str) -> list[tuple[list[int], int]]:
    """(prompt + solution + EOS token ids, prompt length) for each sample."""
    out = []
    for s in samples:
        p = prompt_ids(s.prompt, template, tokenizer)
        r = tokenizer(s.solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p + r, len(p)))
    return out


def collate(rows: list[tuple[list[int], int]], pad_id: int, device) -> tuple[torch.Tensor, ...]:
    """Right-padded input_ids [B,T], attention_mask [B,T], labels [B,T] (-100 off-response)."""
    T = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (ids, p) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, p : len(ids)] = input_ids[i, p : len(ids)]
        mask[i, : len(ids)] = 1
    return input_ids.to(device), mask.to(device), labels.to(device)


def sft_gradients(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                  micro_batch_size: int = 0, autocast: torch.dtype | None = None) -> torch.Tensor:
    """Accumulate into .grad the gradient of the batch's SFT loss, and return the loss (a 0-dim
    tensor, no grad): the mean negative logprob over the labelled tokens (labels != -100; the
    solution and EOS) of the whole batch, which is Hugging Face's model(..., labels=...).loss.
    input_ids, attention_mask, labels [B,T], right-padded (collate).

    The rows go through the model `micro_batch_size` at a time (0: all at once); each
    micro-batch's sum is divided by the whole batch's token count, so the gradient does not
    depend on the split. Logprobs come from forward.token_stats, as in RL's update: the output
    layer chunk by chunk, never a [b, t, V] logits tensor nor its float32 copy or gradient."""
    labelled = labels != -100  # [B,T]
    labelled[:, 0] = False  # token 0 has no prediction (HF's loss shifts it away as well)
    n_tokens = labelled.sum()  # of the whole batch: every micro-batch divides by it
    # token_stats reads only the tokens and masks; the rollout fields are placeholders
    zeros = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    batch = RolloutBatch(input_ids, attention_mask.bool(), labelled, zeros, zeros[:, 0], zeros[:, 0],
                         torch.arange(len(input_ids), device=input_ids.device))
    size = micro_batch_size or len(batch)
    total = torch.zeros((), device=model.device)
    for s in range(0, len(batch), size):
        mb = batch.select(slice(s, s + size))
        lp, _ = token_stats(model, mb, 1.0, autocast=autocast)  # [b, t] float32, t = the longest row
        loss = -(lp * mb.response_mask[:, : lp.shape[1]]).sum() / n_tokens
        loss.backward()
        total += loss.detach()
    return total


def cosine_schedule(optimizer, warmup: int, total: int, min_ratio: float):
    """Linear warmup to the base lr, then cosine decay to base * min_ratio at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress_))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_sft(model, tokenizer, engine, train: list[Sample], val: list[Sample], reward: Reward, template: str,
              cfg: SFTConfig, log: MetricsLog, seed: int = 0, autocast: torch.dtype | None = None,
              eval_batch_size: int = 512) -> SFTResult:
    """Train in place; on return the model holds the weights of the best validation check, or
    the final weights when no check scored above 0 or there is no validation set (then there
    are no checks at all: SFT runs to sft.max_steps or its time budget).
    `autocast` (models.resolve_precision): the forward runs under torch.autocast to it; the
    logprobs are float32 from its logits, and the backward and AdamW act on the weights in
    their own dtype. `eval_batch_size` (eval.batch_size): completions decoded together in a check."""
    if not train:
        raise ValueError("SFT needs samples with worked solutions (field 'solution')")
    data = encode(train, tokenizer, template)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = cosine_schedule(opt, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    order: list[int] = []
    # A check that scores 0 is no evidence of a plateau: a model that has not learned the format
    # yet, or whose solutions are all cut at sft.max_new_tokens, scores 0 while its loss still
    # falls. Only once some check has scored above 0 does a check without a new best count.
    best, best_step, best_state, bad_checks = 0.0, 0, None, 0
    result = SFTResult(0, 0, 0.0, len(train), 0.0, 0.0)
    used = 0  # examples trained on: a batch is smaller than batch_size when the data is
    t0 = time.perf_counter()
    bar = progress(cfg.max_steps, 0, "sft")
    model.train()
    for step in range(1, cfg.max_steps + 1):
        if len(order) < cfg.batch_size:  # reshuffled epochs; length bucketing was tried and learned worse
            fresh = list(range(len(data)))
            rng.shuffle(fresh)
            order += fresh
        batch, order = [data[i] for i in order[: cfg.batch_size]], order[cfg.batch_size :]
        input_ids, mask, labels = collate(batch, tokenizer.pad_token_id, model.device)
        lr = sched.get_last_lr()[0]  # the rate this step trains at; sched.step() below sets the next one's
        opt.zero_grad(set_to_none=True)
        loss = sft_gradients(model, input_ids, mask, labels, cfg.micro_batch_size, autocast).item()
        stepped = finite_step(opt, torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        sched.step()
        used += len(batch)
        bar.update(1)
        row = {"phase": "sft", "step": step, "loss": loss, "lr": lr, **stepped}
        out_of_time = cfg.time_budget_s > 0 and time.perf_counter() - t0 > cfg.time_budget_s
        last = step == cfg.max_steps or out_of_time
        if val and (step % cfg.eval_every == 0 or last):
            score = evaluate(engine, tokenizer, val, reward, template, cfg.max_new_tokens,
                             batch_size=eval_batch_size).overall
            model.train()
            row["val_accuracy"], row["val_truncated"] = score.accuracy, score.truncated
            result.curve.append((step, score.accuracy))
            result.val_truncated.append(score.truncated)
            if score.accuracy > best:
                best, best_step, bad_checks = score.accuracy, step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif best > 0:
                bad_checks += 1
            bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{score.accuracy:.3f}", truncated=f"{score.truncated:.2f}",
                            best=f"{best:.3f}@{best_step}", refresh=False)
        result.stopped_because = ("plateau" if bad_checks >= cfg.patience else
                                  "time budget" if out_of_time else "max_steps" if last else "")
        log.log(row)
        if result.stopped_because:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:  # the final weights stay: without a score above 0 there is nothing to prefer an earlier step by
        best_step = step
        result.stopped_because += (" (no validation set: no plateau checks; the final weights are kept)" if not val else
                                   f" (every check scored 0, the last with {100 * result.val_truncated[-1]:.0f}% of "
                                   "its responses cut at sft.max_new_tokens; the final weights are kept)")
    result.steps, result.best_step, result.best_val_accuracy = step, best_step, best
    result.epochs = used / len(data)
    result.seconds = time.perf_counter() - t0
    return result
