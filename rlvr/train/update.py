"""Stages 4-6 of an RL step for the policy: its token logprobs, the per-token objective, the
aggregation over a global normaliser, the backward, and the optimizer step (rl.py runs the loop).

The gradient does not depend on how the batch is cut (micro-batches, ranks:
tests/train/test_invariance.py), and rows whose gradient is exactly zero are not computed at
all (rl.skip_zero_advantage_rows; tests/train/test_zero_advantage.py).
"""

from __future__ import annotations

import torch

from rlvr.algorithms import aggregation, losses
from rlvr.algorithms import kl as kl_fns
from rlvr.config import Config
from rlvr.models import eval_mode, run_autocast
from rlvr.train import distributed as dist_utils
from rlvr.train.distributed import finite_step, global_sum, sum_gradients
from rlvr.train.forward import token_stats
from rlvr.train.state import Trainer
from rlvr.types import RolloutBatch


@torch.no_grad()
def frozen_logprobs(model, batch: RolloutBatch, cfg: Config, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Token logprobs [B,T] under `model` (the reference, or the policy before an update), no grad;
    only for `rows` [n] when given (the others stay 0)."""
    # filled on the model's device and copied back once: a copy per micro-batch would make a GPU
    # wait for each micro-batch's forward before queueing the next
    out = torch.zeros(batch.old_logprobs.shape, device=model.device)  # [B, T]
    rows = torch.arange(len(batch)) if rows is None else rows
    part = batch if len(rows) == len(batch) else batch.select(rows)  # rows are in order: all of them is the batch
    autocast = run_autocast(cfg.model)
    with eval_mode(model):  # no dropout: these logprobs are a fixed reference, not a sample
        for s, mb in dist_utils.micro_batches(part, cfg.rl.micro_batch_size, model):
            lp, _ = token_stats(model, mb, cfg.rl.temperature, autocast=autocast)
            if s is not None:  # None: a blank micro-batch that keeps a sharded model's ranks in step
                out[rows[s : s + len(mb)].to(out.device), : lp.shape[1]] = lp.float()
    out = out.cpu()
    return torch.where(batch.response_mask, out, torch.zeros_like(out))


def gradient_rows(model, batch: RolloutBatch, cfg: Config) -> torch.Tensor:
    """Indices [n] of the rows the policy update computes: all of them, or with
    rl.skip_zero_advantage_rows only those whose gradient can be nonzero (losses.rows_with_gradient).
    Not with dropout active in training: the rows computed would then draw different masks from
    the random stream, so the update would be the same only in distribution, not exactly."""
    rl = cfg.rl
    if not rl.skip_zero_advantage_rows or _has_dropout(model):
        return torch.arange(len(batch))
    live = losses.rows_with_gradient(rl.loss, batch.advantages, batch.response_mask, kl_coef=_loss_kl_coef(cfg),
                                     entropy_coef=rl.entropy_coef)
    return live.nonzero().squeeze(1).cpu()


def _loss_kl_coef(cfg: Config) -> float:
    """The KL weight in the loss: 0 when the KL goes into the reward instead (rl.kl_in_reward)."""
    return 0.0 if cfg.rl.kl_in_reward else cfg.rl.kl_coef


def _has_dropout(model) -> bool:
    """Does a forward in training mode drop anything: a dropout module (LoRA's lora_dropout) or a
    dropout rate in the model's config (HF attention's attention_dropout, GPT-2's resid_pdrop, ...)?"""
    if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    rates = config.to_dict().items() if hasattr(config, "to_dict") else ()
    return any(("dropout" in k or "pdrop" in k) and isinstance(v, float) and v > 0 for k, v in rates)


def policy_gradients(model, batch: RolloutBatch, cfg: Config, on_policy: bool) -> dict[str, float]:
    """Stages 4-5: accumulate the gradient of the whole batch (this rank's share of it) into
    .grad, micro-batch by micro-batch, then sum it over ranks. The normaliser is global, so the
    gradient does not depend on micro_batch_size or world size (tests/train/test_invariance.py).

    Rows whose gradient is exactly zero (losses.rows_with_gradient: all-zero advantages and no
    KL or entropy term) get no forward or backward when rl.skip_zero_advantage_rows; they still
    count in the normaliser, so the gradient is the same, and the per-token metrics are then
    over the rows computed (None when there are none)."""
    rl = cfg.rl
    kl_coef = _loss_kl_coef(cfg)
    norm = global_sum(aggregation.normalizer(rl.aggregation, batch.response_mask, rl.max_new_tokens))
    rows = len(batch)
    keep = gradient_rows(model, batch, cfg)
    if len(keep) < rows:
        batch = batch.select(keep)
    names = ("loss", "clip_frac", "entropy", "kl", "approx_kl", "logprob_mismatch", "ratio_mean")
    # the metrics' sums stay on the model's device until the end: reading one per micro-batch
    # (.item()) would make a GPU wait for every micro-batch's kernels before queueing the next
    sums = torch.zeros(len(names), dtype=torch.float64, device=model.device)  # [metrics] in `names` order
    # the ratio's range over the tokens computed (1.0 need not be among them): [max, -min]
    extremes = torch.full((2,), float("-inf"), device=model.device)
    autocast = run_autocast(cfg.model)
    for _, mb in dist_utils.micro_batches(batch, rl.micro_batch_size, model):
        # [b, t] each, float32; the forward under autocast, the loss and backward below outside it
        lp, ent = token_stats(model, mb, rl.temperature, entropy_grad=rl.entropy_coef > 0, autocast=autocast)
        t = lp.shape[1]
        mask = mb.response_mask[:, :t].to(model.device)
        old = lp.detach() if on_policy else mb.old_logprobs[:, :t].to(lp.device)
        ref = None if mb.ref_logprobs is None else mb.ref_logprobs[:, :t].to(lp.device)
        adv = mb.advantages if mb.advantages.dim() == 1 else mb.advantages[:, :t]
        out = losses.policy_loss(
            rl.loss, losses.LossInputs(lp, old, adv.to(lp.device), mask, ref, entropy=ent),
            clip_low=rl.clip_low, clip_high=rl.clip_high, clip_ratio_c=rl.clip_ratio_c,
            kl_coef=kl_coef, kl_estimator=rl.kl_estimator, entropy_coef=rl.entropy_coef)
        loss = aggregation.aggregate(rl.aggregation, out.per_token, mask, norm)
        loss.backward()
        m = mask.float()
        zero = torch.zeros((), device=lp.device)
        mismatch = zero  # on-policy: the engine's sampling logprobs vs the trainer's, same weights; with
        # top_p < 1 the engine's are renormalised over the nucleus, so they differ by design (not computed)
        if on_policy and rl.top_p >= 1.0:
            mismatch = ((mb.old_logprobs[:, :t].to(lp.device) - lp.detach()).abs() * m).sum()
        sums += torch.stack([
            loss.detach(), (out.clipped.float() * m).sum(), (ent.detach() * m).sum(),
            zero if out.kl is None else (out.kl * m).sum(),
            (kl_fns.k3(old, lp.detach()) * m).sum(),  # KL(old || new), k3
            mismatch, (out.ratio * m).sum()]).double()
        ratio = out.ratio.detach().float()
        extremes = torch.maximum(extremes, torch.stack([torch.where(mask, ratio, -torch.inf).max(),
                                                        torch.where(mask, -ratio, -torch.inf).max()]))
    computed, total = global_sum(torch.tensor([len(batch), rows], dtype=torch.float64)).tolist()
    if computed == 0:  # every gradient is zero: AdamW still steps (momentum, weight decay) as it would
        for p in model.parameters():
            if p.requires_grad and p.grad is None:
                p.grad = torch.zeros_like(p)
    sum_gradients(model.parameters())
    # per-token metrics are this rank's share of the global token mean: reduce_metrics sums them
    n_tokens = float(global_sum(batch.response_mask.sum()))
    sums = dict(zip(names, sums.tolist()))  # the one wait for the device
    ratio_max, neg_min = extremes.tolist()
    ratio_min = -neg_min
    loss = sums.pop("loss")
    per_token = {k: v / n_tokens if n_tokens else float("nan") for k, v in sums.items()}  # nan: logged as null
    if not on_policy or rl.top_p < 1.0:
        per_token["logprob_mismatch"] = float("nan")  # not measured (above)
    # the rows left out as gradient-free: this rank's share of the batch's fraction (summed too)
    skipped = (rows - len(batch)) / max(total, 1.0)
    if not n_tokens:  # no token computed: the ratio's range is unknown too
        ratio_max = ratio_min = float("nan")
    return {"loss": loss, **per_token, "ratio_max": ratio_max, "ratio_min": ratio_min, "zero_adv_skipped": skipped}


def update(tr: Trainer, batch: RolloutBatch, cfg: Config, on_policy: bool) -> dict[str, float]:
    """Stages 4-6 for one optimizer step of the policy over the whole batch."""
    tr.optimizer.zero_grad(set_to_none=True)
    metrics = policy_gradients(tr.model, batch, cfg, on_policy)
    grad_norm = torch.nn.utils.clip_grad_norm_(tr.model.parameters(), cfg.rl.grad_clip)
    return {**metrics, **finite_step(tr.optimizer, grad_norm)}

