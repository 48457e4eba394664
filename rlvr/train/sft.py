"""Supervised fine-tuning on worked solutions, until held-out-from-training accuracy plateaus.

Worked solutions are the scarce resource (a teacher's or a human's), so SFT trains on the set it
is given for as many epochs as help: every `eval_every` steps it decodes a validation slice
greedily, keeps the best weights, and stops after `patience` checks without a new best. The
budget (examples, steps, epochs, seconds) and the plateau curve are printed and returned.
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
from rlvr.models import under_autocast
from rlvr.prompts import prompt_ids
from rlvr.rewards import Reward
from rlvr.types import Sample


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


def cosine_schedule(optimizer, warmup: int, total: int, min_ratio: float):
    """Linear warmup to the base lr, then cosine decay to base * min_ratio at `total` steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress_ = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress_))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_sft(model, tokenizer, engine, train: list[Sample], val: list[Sample], reward: Reward, template: str,
              cfg: SFTConfig, log: MetricsLog, seed: int = 0, autocast: torch.dtype | None = None) -> SFTResult:
    """Train in place; on return the model holds the weights of the best validation check.
    `autocast` (models.resolve_precision): the forward runs under torch.autocast to it; the
    model's loss upcasts the logits to float32, and the backward and AdamW act on the weights
    in their own dtype."""
    if not train:
        raise ValueError("SFT needs samples with worked solutions (field 'solution')")
    data = encode(train, tokenizer, template)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = cosine_schedule(opt, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
    order: list[int] = []
    best, best_step, best_state, bad_checks = -1.0, 0, None, 0
    result = SFTResult(0, 0, 0.0, len(train), 0.0, 0.0)
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
        with under_autocast(autocast, model.device):
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        bar.update(1)
        row = {"phase": "sft", "step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0]}
        out_of_time = cfg.time_budget_s > 0 and time.perf_counter() - t0 > cfg.time_budget_s
        if step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time:
            acc = evaluate(engine, tokenizer, val, reward, template, cfg.max_new_tokens).overall.accuracy if val else 0.0
            model.train()
            row["val_accuracy"] = acc
            result.curve.append((step, acc))
            if acc > best:
                best, best_step, bad_checks = acc, step, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad_checks += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", val_acc=f"{acc:.3f}", best=f"{best:.3f}@{best_step}", refresh=False)
            result.stopped_because = ("plateau" if bad_checks >= cfg.patience else
                                      "time budget" if out_of_time else "max_steps" if step == cfg.max_steps else "")
        log.log(row)
        if result.stopped_because:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    result.steps, result.best_step, result.best_val_accuracy = step, best_step, max(best, 0.0)
    result.epochs = step * cfg.batch_size / len(data)
    result.seconds = time.perf_counter() - t0
    return result
