"""What a run is made of and how it is kept: the Trainer (policy, reference, critic, engine,
optimizers), built from a recipe, saved into a checkpoint and restored from one."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from rlvr.config import Config
from rlvr.rewards import Reward
from rlvr.rollout import make_engine
from rlvr.rollout.hf import HFEngine
from rlvr.train import distributed as dist_utils
from rlvr.train.critic import ValueModel, load_critic
from rlvr.train.sft import cosine_schedule


@dataclass
class Trainer:
    """What one RL step touches. `ref_model` exists when kl_coef > 0 (unless the policy has LoRA
    adapters: then the reference is the policy with them switched off), `critic` when advantage=gae."""

    model: torch.nn.Module
    tokenizer: object
    engine: HFEngine
    optimizer: torch.optim.Optimizer
    scheduler: object
    reward: Reward
    ref_model: torch.nn.Module | None = None
    critic: ValueModel | None = None
    critic_optimizer: torch.optim.Optimizer | None = None


def policy_steps(cfg: Config) -> int:
    """RL steps that update the policy: all of them, less the critic's warm-up (advantage=gae)."""
    return cfg.rl.steps - (cfg.critic.warmup_steps if cfg.rl.advantage == "gae" else 0)


def make_optimizer(model, cfg: Config):
    """AdamW over the trainable parameters, and its schedule over the policy's updates: its warmup
    starts at the first policy update, not during the critic's warm-up (when the policy's lr would
    climb unused and its first step, with fresh moments, would come at nearly the full rate)."""
    rl = cfg.rl
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=rl.lr, weight_decay=rl.weight_decay)
    total = policy_steps(cfg) * rl.inner_epochs
    return opt, cosine_schedule(opt, rl.warmup_steps * rl.inner_epochs, total, rl.min_lr_ratio)


def build_trainer(cfg: Config, start_from: Path | None) -> Trainer:
    """Policy (from the checkpoint when resuming), reference, critic, engine, optimizers.
    With model.fsdp under torchrun, the policy, the reference (as large, though frozen) and a
    separate critic are sharded (FSDP2), and the HF engine decodes with an unsharded copy of the
    policy: generation needs every weight at each step, and each rank decodes its own prompts for
    its own number of steps, which per-layer gathers (collectives) could not follow. rl.py
    refreshes the copy after each update. vLLM holds its own whole copy already, so it is given
    the sharded policy and gathers its weights a tensor at a time when they change."""
    from rlvr.models import add_lora, enable_checkpointing, eos_token_ids, hold_linears_in, load_policy, run_autocast
    from rlvr.rewards import resolve

    reward = resolve(cfg.task.reward)
    lora = cfg.model.lora_r > 0
    fsdp = cfg.model.fsdp and dist_utils.is_distributed()
    m = cfg.model
    autocast = run_autocast(m)  # None: off (a CPU, by default)
    # weights nothing trains have no master copy to keep: under autocast a LoRA base is loaded in
    # its dtype, at half the memory, and not cast again at every forward (autocast caches its casts
    # of trainable weights only); the KL reference holds its linear layers in it (hold_linears_in)
    frozen = m.dtype if autocast is None else str(autocast).removeprefix("torch.")
    model, tokenizer = load_policy(str(m.name_or_path if lora else start_from or m.name_or_path),
                                   seed=m.init_seed, dtype=frozen if lora else m.dtype)
    enable_checkpointing(model, m.gradient_checkpointing)
    if lora:  # adapters on the base; a checkpoint holds the adapters (transformers + peft load it as is)
        model = add_lora(model, m, adapter=str(start_from) if start_from else None)
    decoding, weights = model, None
    if fsdp:
        if cfg.rollout.engine == "hf":  # vLLM keeps its own copy: it is handed the weights a tensor at a time
            decoding = copy.deepcopy(model).requires_grad_(False)
            if autocast is not None:  # the sharded policy computes with bf16 weights (shard): so does its copy
                decoding.to(autocast)  # (in half the memory)
        dist_utils.shard(model, decoder_layers(model), param_dtype=autocast)
        weights = partial(dist_utils.iter_full_state, model)
    engine = make_engine(cfg.rollout, decoding, tokenizer, eos_token_ids(tokenizer, model), autocast=autocast,
                         weights=weights)
    tr = Trainer(model, tokenizer, engine, *make_optimizer(model, cfg), reward)
    if cfg.rl.kl_coef > 0 and not lora:  # with LoRA the reference is the policy with its adapters off
        tr.ref_model, _ = load_policy(m.name_or_path, seed=m.init_seed, dtype=m.dtype)
        if autocast is not None and not fsdp:  # (sharded, it computes with bf16 weights as the policy does)
            hold_linears_in(tr.ref_model, autocast)  # its step-0 logprobs are the policy's, bit for bit
        tr.ref_model.eval().requires_grad_(False)
        if fsdp:
            dist_utils.shard(tr.ref_model, decoder_layers(tr.ref_model), param_dtype=autocast)
    if cfg.rl.advantage == "gae":
        source = start_from / "critic" if start_from else cfg.critic.name_or_path or m.name_or_path
        tr.critic = load_critic(str(source), seed=m.init_seed, dtype=m.dtype, autocast=m.autocast,
                                policy=tr.model if cfg.critic.shared else None)
        if fsdp:  # config_checks.py refuses a shared critic with fsdp: this one has its own backbone
            dist_utils.shard(tr.critic, decoder_layers(tr.critic.lm), param_dtype=autocast)
        tr.critic_optimizer = torch.optim.AdamW(tr.critic.parameters(), lr=cfg.critic.lr,
                                                weight_decay=cfg.critic.weight_decay)
    return tr


def decoder_layers(lm) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face model: the classes it names as never to be split
    across devices (e.g. Qwen3DecoderLayer), one FSDP group each."""
    names = set(lm._no_split_modules or ())
    return [m for m in lm.modules() if type(m).__name__ in names]


def restore(tr: Trainer, stream, start_from: Path, cfg: Config, log_fn=print) -> tuple[int, float]:
    """Optimizer, scheduler, critic optimizer, data cursor and RNG from a checkpoint, with this
    config's learning rates, weight decay and schedule (follow_config): a resume may change them."""
    from rlvr.train import checkpoint

    state = checkpoint.load_state(start_from)
    dist_utils.load_optimizer_state(tr.model, tr.optimizer, state["optimizer"])
    tr.scheduler.load_state_dict(state["scheduler"])
    if "schedule" not in state and policy_steps(cfg) < cfg.rl.steps:
        # saved before the policy's schedule skipped the critic's warm-up (make_optimizer): its
        # count includes those steps; continue the new schedule where this step puts it
        tr.scheduler.last_epoch = max(0, state["step"] - (cfg.rl.steps - policy_steps(cfg))) * cfg.rl.inner_epochs
    if tr.critic_optimizer is not None:
        dist_utils.load_optimizer_state(tr.critic, tr.critic_optimizer, state["critic_optimizer"])
    follow_config(tr, cfg)
    stream.load(state["stream"])
    rngs = state.get("rng_by_rank") or [state["rng"]]
    checkpoint.set_rng_state(rngs[dist_utils.rank()] if dist_utils.rank() < len(rngs) else state["rng"])
    if dist_utils.rank() >= len(rngs):  # more ranks than the run that saved it: a stream of its own
        torch.manual_seed(int(torch.randint(2**31, ())) * 7919 + dist_utils.rank())
    log_fn(f"resumed from {start_from} (step {state['step']})")
    return state["step"], state["elapsed"]


def follow_config(tr: Trainer, cfg: Config) -> None:
    """After a checkpoint's optimizer and scheduler states are loaded: they hold the lr, weight
    decay and base lr the run started with, and the lr its old schedule set for the next step.
    Put this config's in their place, and the lr its schedule (make_optimizer: rl.lr, rl.steps,
    warmup_steps, min_lr_ratio) gives at the restored count, so a resume that changes any of them
    trains with the new values from its first step. Unchanged, every value is the one the
    scheduler itself would set (base * factor(count)): resume stays exact. The critic's AdamW has
    no schedule: critic.lr throughout."""
    rl, sched = cfg.rl, tr.scheduler  # a LambdaLR (cosine_schedule), built from this config
    sched.base_lrs = [rl.lr] * len(tr.optimizer.param_groups)
    for group, factor in zip(tr.optimizer.param_groups, sched.lr_lambdas):
        group.update(initial_lr=rl.lr, lr=rl.lr * factor(sched.last_epoch), weight_decay=rl.weight_decay)
    sched._last_lr = [group["lr"] for group in tr.optimizer.param_groups]
    for group in tr.critic_optimizer.param_groups if tr.critic_optimizer is not None else ():
        group.update(lr=cfg.critic.lr, weight_decay=cfg.critic.weight_decay)


def save(tr: Trainer, stream, cfg: Config, root: Path, step: int, elapsed: float) -> Path | None:
    """A checkpoint, written by rank 0; every rank's RNG goes into it, and sharded weights and
    optimizer states are gathered onto rank 0 first (collectives: every rank calls this)."""
    from rlvr.train import checkpoint

    rngs = dist_utils.gather_objects(checkpoint.rng_state())
    weights = dist_utils.full_state_dict(tr.model, rank0_only=True) if dist_utils.is_sharded(tr.model) else None
    state = {"optimizer": dist_utils.optimizer_state(tr.model, tr.optimizer), "scheduler": tr.scheduler.state_dict(),
             "stream": stream.state(), "elapsed": elapsed, "rng_by_rank": rngs,
             "schedule": "policy-updates"}  # the scheduler counts policy updates only (see restore)
    extras = {}
    if tr.critic is not None:
        state["critic_optimizer"] = dist_utils.optimizer_state(tr.critic, tr.critic_optimizer)
        if dist_utils.is_sharded(tr.critic):
            extras["critic"] = partial(tr.critic.save, weights=dist_utils.full_state_dict(tr.critic, True))
        else:
            extras["critic"] = tr.critic.save
    if dist_utils.rank() != 0:
        return None
    return checkpoint.save(root, step, tr.model, tr.tokenizer, state, keep=cfg.rl.keep_checkpoints, extras=extras,
                           weights=weights)


def check_world(cfg: Config) -> None:
    """What a multi-process run cannot do yet, said before anything is built."""
    world = dist_utils.world_size()
    if world == 1:
        return
    if cfg.rl.prompts_per_step % world:
        raise ValueError(f"rl.prompts_per_step={cfg.rl.prompts_per_step} must be a multiple of the number of "
                         f"processes ({world}): each rank samples whole groups")
