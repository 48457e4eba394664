"""PPO's critic: a transformer with a scalar value head (InstructGPT's RLHF step 3, and
Open-Reasoner-Zero's PPO, arXiv 2503.24290).

The critic is a separate model from the policy: a causal LM loaded the same way (so a user's
model, a checkpoint folder or the embedded default all work) whose last hidden state feeds a
linear head. The head starts at zero, so the first values are 0 and the first advantages are
the plain returns; `critic.warmup_steps` lets it learn before the policy moves.

A checkpoint of the critic is a Hugging Face folder (the backbone with its LM head and the
tokenizer, which from_pretrained loads as it is) plus `value_head.pt`.

`critic.shared: true` puts the head on the policy instead: it reads the policy's own last hidden
states, detached, so there is no second model in memory and the value loss trains the head alone
(the policy's weights move only with the policy loss). Its checkpoint is `value_head.pt` alone.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import Tensor, nn

from rlvr.algorithms.losses import value_loss
from rlvr.models import eval_mode, under_autocast
from rlvr.train.distributed import finite_step, global_sum, micro_batches, sum_gradients
from rlvr.types import RolloutBatch

HEAD = "value_head.pt"


class ValueModel(nn.Module):
    def __init__(self, lm, tokenizer, shared: bool = False, autocast: torch.dtype | None = None):
        super().__init__()
        self.shared = shared
        self.autocast = autocast  # the backbone's forward runs under torch.autocast to it (None: off)
        if shared:  # the policy itself, not registered: its parameters are not the critic's
            object.__setattr__(self, "lm", lm)
        else:
            self.lm = lm  # a causal LM; only its decoder (get_decoder) runs
        self.tokenizer = tokenizer  # saved alongside, so the critic folder loads on its own
        # in the dtype of the weights that train (float32 adapters over a bf16 LoRA base: lm.dtype
        # would be bf16, and AdamW on bf16 weights loses small updates)
        trained = next((q.dtype for q in lm.parameters() if q.requires_grad), lm.dtype)
        self.head = nn.Linear(lm.config.hidden_size, 1, dtype=trained, device=lm.device)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def device(self) -> torch.device:
        return self.lm.device

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """values [B,T] float32: entry t is V of the state before token t (the prefix up to t-1),
        read from the hidden state at t-1, like token_logprobs' entry t; entry 0 is 0. The value
        head runs outside autocast, in its own dtype (float32 with mixed precision)."""
        grad = torch.is_grad_enabled() and not self.shared
        # get_decoder: the transformer without its LM head, also through a peft wrapper (whose
        # base_model is the whole LoRA-wrapped causal LM). A shared backbone is the policy, in
        # whatever mode the policy update left it: its detached features are read without
        # dropout, as measuring forwards are (the critic's own train()/eval() does not reach it)
        backbone = self.lm.get_decoder()
        with (torch.set_grad_enabled(grad), under_autocast(self.autocast, self.device),
              eval_mode(self.lm) if self.shared else contextlib.nullcontext()):
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B,T,H]
        v = self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).float()  # [B,T], value after token t
        return torch.cat([torch.zeros_like(v[:, :1]), v[:, :-1]], dim=1)

    def save(self, folder: Path, weights: dict[str, Tensor] | None = None) -> None:
        """`weights`: the whole state dict when this module holds only a shard of it (FSDP)."""
        Path(folder).mkdir(parents=True, exist_ok=True)

        def part(prefix: str, module) -> dict[str, Tensor]:
            sd = module.state_dict() if weights is None else weights
            return {k.removeprefix(prefix): v for k, v in sd.items() if weights is None or k.startswith(prefix)}

        if not self.shared:  # a shared head's backbone is the policy, saved as the checkpoint itself
            self.lm.save_pretrained(folder, state_dict=None if weights is None else part("lm.", self.lm))
            self.tokenizer.save_pretrained(folder)
        torch.save(part("head.", self.head), Path(folder) / HEAD)


def load_critic(name_or_path: str, seed: int = 0, dtype: str = "auto", autocast: str = "auto",
                policy=None) -> ValueModel:
    """A critic from a policy (zero head) or from a saved critic folder (its trained head). With
    `policy`, a head on that model's own hidden states (critic.shared); name_or_path then only
    says where a trained head may be. dtype / autocast: model.dtype / model.autocast."""
    from rlvr.models import load_policy, resolve_precision

    mixed = resolve_precision(dtype, autocast).autocast
    if policy is not None:
        critic = ValueModel(policy, None, shared=True, autocast=mixed)
    else:
        lm, tokenizer = load_policy(name_or_path, seed=seed, dtype=dtype)
        critic = ValueModel(lm, tokenizer, autocast=mixed)
    head = Path(name_or_path) / HEAD
    if head.exists():
        critic.head.load_state_dict(torch.load(head, weights_only=True, map_location="cpu"))
    return critic


def _rows(batch: RolloutBatch, device) -> tuple[int, Tensor, Tensor]:
    t = int(batch.attention_mask.sum(1).max())
    return t, batch.input_ids[:, :t].to(device), batch.attention_mask[:, :t].to(device)


@torch.no_grad()
def critic_values(critic: ValueModel, batch: RolloutBatch, micro_batch_size: int,
                  rows: Tensor | None = None) -> Tensor:
    """Rollout-time values [B,T], 0 off the response; only for `rows` [n] when given (the others stay 0)."""
    out = torch.zeros(batch.response_mask.shape, device=critic.device)  # [B, T] copied back once, at the end
    rows = torch.arange(len(batch)) if rows is None else rows
    part = batch if len(rows) == len(batch) else batch.select(rows)
    with eval_mode(critic):  # V_old, the clipped value loss's anchor: no dropout
        for s, mb in micro_batches(part, micro_batch_size, critic):
            t, ids, attn = _rows(mb, critic.device)
            values = critic(ids, attn).float()
            if s is not None:  # None: a blank micro-batch that keeps a sharded critic's ranks in step
                out[rows[s : s + len(mb)].to(out.device), :t] = values
    out = out.cpu()
    return torch.where(batch.response_mask, out, torch.zeros_like(out))


def update_critic(critic: ValueModel, optimizer, batch: RolloutBatch, cfg) -> dict[str, float]:
    """One optimizer step of the clipped value loss, token-mean over the whole batch (all ranks)."""
    norm = global_sum(batch.response_mask.sum().float()).clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    sums = torch.zeros(2, dtype=torch.float64, device=critic.device)  # [loss, clipped tokens]: read once, at the end
    critic.train()
    for _, mb in micro_batches(batch, cfg.rl.micro_batch_size, critic):  # blank ones add nothing: no response tokens
        t, ids, attn = _rows(mb, critic.device)
        mask = mb.response_mask[:, :t].to(critic.device)
        per_token, was_clipped = value_loss(critic(ids, attn), mb.old_values[:, :t].to(critic.device),
                                            mb.returns[:, :t].to(critic.device), mask, cfg.critic.value_clip)
        loss = per_token.sum() / norm
        loss.backward()
        sums += torch.stack([loss.detach().double(), was_clipped.sum().double()])
    loss_total, clipped = sums.tolist()
    sum_gradients(critic.parameters())
    grad_norm = torch.nn.utils.clip_grad_norm_(critic.parameters(), cfg.critic.grad_clip)
    return {"value_loss": loss_total, "value_clip_frac": clipped / float(norm),
            **finite_step(optimizer, grad_norm, "critic_grad_norm"),
            "value_explained_var": explained_variance(batch.old_values, batch.returns, batch.response_mask)}


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the response tokens of the whole batch (all ranks), with the
    rollout-time values: how much of the return the critic predicted before it saw it. 1 is a
    perfect critic, 0 no better than one constant, below 0 a baseline that adds variance. A
    PPO run whose critic stays near or below 0 is REINFORCE with extra noise."""
    m = mask.double()
    r, e = returns.double() * m, (returns.double() - values.double()) * m
    n, sr, sr2, se, se2 = global_sum(torch.stack([m.sum(), r.sum(), r.square().sum(), e.sum(), e.square().sum()])).tolist()
    if n < 2:
        return 0.0
    var_r, var_e = sr2 / n - (sr / n) ** 2, se2 / n - (se / n) ** 2
    # returns constant to ~1e-4 (every rollout the same outcome, gamma = lam = 1): what is left of
    # var_r is float32 rounding, and a ratio over it would be noise of any size
    return 1.0 - var_e / var_r if var_r > 1e-8 * sr2 / n else 0.0
