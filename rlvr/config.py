"""Recipes: YAML files with one section per component, plus `a.b=value` overrides.

Every field is documented once, here. Loading validates names and types here, then values and
their combinations (config_checks.py), before any model is built; errors name the file, the
field and the fix.
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


RECIPES = Path(__file__).parent / "recipes"  # the shipped recipes: a bare name on the command line or in `base:`


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
    # auto (bfloat16 on a GPU with bf16, over float32 weights; else off) | off | bfloat16; a bare YAML
    # `off` arrives as false and means off
    autocast: str | bool = "auto"
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

    def __post_init__(self):
        if self.autocast is False:  # YAML 1.1 reads a bare off as false
            object.__setattr__(self, "autocast", "off")


@dataclass(frozen=True)
class TaskConfig:
    name: str = "arithmetic"  # arithmetic (built in) | jsonl (your files) | math | math500 | gsm8k (tasks/math_data.py)
    reward: str = "exact"  # a registered name, your own "module:function", or a sum: "math + 0.2*format_soft"
    template: str = "auto"  # auto | chat | plain | book | r1zero (prompts.py)
    train_path: str | None = None  # training problems (`solution` for SFT); math, gsm8k: .jsonl/.json/.parquet, else hub
    eval_path: str | None = None  # held-out problems; math, math500: the MATH-500 file (math trains on none of it)
    seed: int = 0  # arithmetic: problem generation; math, gsm8k, jsonl: which training problems check the SFT plateau
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
    micro_batch_size: int = 0  # rows per forward/backward (0: the whole batch); the gradient does not depend on it
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
    # no forward/backward for rows whose gradient is exactly zero (all-zero advantages, no KL or
    # entropy term in the loss, no dropout); they still count in the normaliser, so the gradient
    # is unchanged and only per-token metrics (entropy, clip_frac, ...) are over the rows computed
    skip_zero_advantage_rows: bool = True
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
    """Who samples the RL rollouts, and the periodic evaluations during RL (rl.eval_every); the
    evaluation at the end of a run, and `rlvr eval`, use the HF engine."""

    engine: str = "hf"  # hf (decodes with the policy module) | vllm (in-process vLLM, pip install 'rlvr[vllm]')
    gpu_memory_utilization: float = 0.3  # vllm: device memory share for its weights + KV cache (CPU: of RAM)
    # hf on a GPU: decode steps of fixed shapes, captured once per rollout batch as a CUDA graph and
    # replayed (a small batch's step is kernel launches, not math); finished rows stay to the end
    cuda_graph: bool = False
    # vllm: more keyword arguments for vllm.LLM, e.g. {enforce_eager: true, max_model_len: 4096}
    # (override one with rollout.vllm_args.enforce_eager=true); rlvr sets the model, its dtype,
    # the weights, logprobs, sleep mode and the launcher itself
    vllm_args: dict[str, Any] = field(default_factory=dict)


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
    """The resolved recipe, so a run can be repeated: `rlvr train path/config.yaml output_dir=NEW`
    (`rlvr sft` for an SFT run's; a new folder, as rlvr never writes over the run the file belongs
    to). A demo's says sft.before_rl: true, however the demo was started (demo.py)."""
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


class _Sources:
    """Where each key of a recipe came from: the file that set it (a `base:` recipe or the one
    named on the command line) or a command-line override, so an error names the place to fix;
    and each override's text as typed, for text fields whose value YAML reads as a number."""

    def __init__(self, default: str):
        self.default = default  # the recipe on the command line, for values no one set
        self.origins: dict[str, str] = {}  # "rl.lr" -> "recipes/demo.yaml" or "command-line override `rl.lr=1`"
        self.texts: dict[str, str] = {}  # "output_dir" -> "2024"

    def note(self, mapping: dict, origin: str, prefix: str = "") -> None:
        for key, value in mapping.items():
            self.origins[f"{prefix}{key}"] = origin
            if isinstance(value, dict):
                self.note(value, origin, f"{prefix}{key}.")

    def of(self, name: str) -> str:
        return self.origins.get(name, self.default)


def _read_recipe(path: Path, sources: _Sources, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A recipe's raw mapping. `base: other.yaml` is read first and this recipe is merged over it
    (_merge); `sources` learns which file each key came from."""
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
        sources.note(raw, str(path))
        return raw
    base_path = _base_path(path, str(base))
    if base_path in seen:
        raise ConfigError(f"{path}: base: {base} makes a cycle of recipes")
    merged = _read_recipe(base_path, sources, (*seen, base_path))
    sources.note(raw, str(path))  # after the base's keys: this recipe's win
    _merge(merged, raw)
    return merged


def _base_path(path: Path, base: str) -> Path:
    """`base:` is a path relative to the recipe; a bare name that is no file there (demo.yaml, demo)
    is the shipped recipe of that name, so a recipe in a folder of your own can start from one."""
    local = (path.parent / base).resolve()
    if local.is_file():
        return local
    shipped = RECIPES / (base if base.endswith((".yaml", ".yml")) else f"{base}.yaml")
    if Path(base).name == base and shipped.is_file():
        return shipped.resolve()
    names = ", ".join(sorted(q.stem for q in RECIPES.glob("*.yaml")))
    looked = f"{local}" + (f" and {shipped}" if Path(base).name == base else "")
    raise ConfigError(f"{path}: base: {base} not found (looked for {looked}); give a path relative to this recipe "
                      f"or the name of a shipped recipe: {names}")


def _merge(base: dict, child: dict) -> None:
    """Merge `child` into `base` in place, mappings key by key at every depth: a child that sets
    rollout.vllm_args.b keeps the base's rollout.vllm_args.a. A mapping whose entries are all
    commented out (YAML reads `critic:` alone as null) changes nothing."""
    for key, value in child.items():
        if isinstance(base.get(key), dict) and (value is None or isinstance(value, dict)):
            _merge(base[key], value or {})
        else:
            base[key] = value


def _apply_override(raw: dict, item: str, sources: _Sources) -> None:
    """`a.b=value`: the value parsed as YAML, merged into `raw` as one more recipe would be."""
    key, eq, text = item.partition("=")
    origin = f"command-line override `{item}`"
    if not eq or not key:
        raise ConfigError(f"{origin}: write it as section.field=value, e.g. rl.lr=1e-4")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        raise ConfigError(f"{origin}: {text!r} is not a YAML value; quote it on the command line, "
                          f"e.g. {key}='\"{text}\"'") from None
    node, parts = raw, key.split(".")
    for n, part in enumerate(parts[:-1]):
        if node.get(part) is None:  # absent, or a section whose fields are all commented out
            node[part] = {}
            sources.origins.setdefault(".".join(parts[: n + 1]), origin)
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"{origin}: {part!r} is not a section")
    if value is None or value == {}:  # an override sets its field: `rollout.vllm_args={}` clears a recipe's
        node[parts[-1]] = value
    else:
        _merge(node, {parts[-1]: value})
    sources.origins[key] = origin
    sources.texts = {k: t for k, t in sources.texts.items() if not k.startswith(f"{key}.")}
    sources.texts[key] = text
    if isinstance(value, dict):
        sources.note(value, origin, f"{key}.")


def load_config(path: str | Path | None, overrides: list[str] = (), for_eval: bool = False) -> Config:
    """Read a recipe, apply `a.b=value` overrides (values parsed as YAML), validate. An error names
    where the value came from: the recipe, a `base:` recipe, or the override. `for_eval`: the
    config is read to evaluate a model, so RL option combinations are not checked."""
    sources = _Sources(str(path) if path else "<defaults>")
    raw: dict[str, Any] = _read_recipe(Path(path), sources, (Path(path).resolve(),)) if path else {}
    for item in overrides:
        _apply_override(raw, item, sources)
    cfg = _build(Config, raw, sources, "")
    from rlvr.config_checks import check  # it imports this module's types

    check(cfg, sources.default, sources.origins, rl_combinations=not for_eval)
    return cfg


def _build(cls, raw: Any, sources: _Sources, prefix: str):
    section = prefix.rstrip(".")
    if raw is None:  # a section whose fields are all commented out: YAML reads `critic:` alone as null
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{sources.of(section)}: {section or 'recipe'} must be a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        where = sources.of(f"{prefix}{key}")
        if key not in fields:
            close = [ALIASES[key]] if ALIASES.get(key) in fields else difflib.get_close_matches(key, fields, n=1)
            close = close or [ALIASES[a] for a in difflib.get_close_matches(key, ALIASES, n=1) if ALIASES[a] in fields]
            hint = f"; did you mean {prefix}{close[0]}?" if close else f"; valid fields: {', '.join(fields)}"
            raise ConfigError(f"{where}: unknown field {prefix}{key}{hint}")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value, sources, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, kind, where, f"{prefix}{key}", sources.texts.get(f"{prefix}{key}"))
    return cls(**kwargs)


def _coerce(value: Any, kind, source: str, name: str, text: str | None = None):
    """`value` as a field of type `kind`. `text`: the override's text as typed, if one set it."""
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in allowed:
        return None
    if value is None and str in allowed:  # `eval.by=` (nothing after the =): the empty string
        return ""
    if value is None and any(typing.get_origin(t) is dict for t in allowed):  # `vllm_args:`, entries commented out
        return {}
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
        if typing.get_origin(t) is dict and isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return dict(value)
    if str in allowed and text is not None and not isinstance(value, (dict, list)):
        return text  # an override of a text field: what was typed (`output_dir=2024`, `=2024-06-01`)
    if str in allowed and isinstance(value, (int, float)):  # bool is an int: `yes` too
        # from a file, YAML's reading may have changed the digits (010 is 8, 1.10 is 1.1): no guessing
        read = "a boolean" if isinstance(value, bool) else "a number"
        raise ConfigError(f"{source}: {name} is text, but YAML reads {value!r} as {read}; put the value in quotes "
                          f"({name.rsplit('.', 1)[-1]}: \"...\")")
    names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
    raise ConfigError(f"{source}: {name} must be {names}, got {value!r}")
