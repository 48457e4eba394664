"""Load a policy (any Hugging Face causal LM) and its tokenizer, or build the embedded default.

The embedded default is a tiny Qwen3ForCausalLM with a character-level tokenizer. It is a real
transformers model: it saves with `save_pretrained` and loads back with `AutoModelForCausalLM`,
so every code path a user's model takes is the path the embedded model takes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()  # per-file load/save bars would drown the training progress bar

EMBEDDED = "embedded"
# Every character a prompt or a worked solution of the built-in tasks can contain, plus some
# headroom (letters) so a user's small JSONL task can reuse the embedded tokenizer.
CHARSET = "0123456789+-*/=()[]{}<>|.,:;!?#$%&_^~'\"@ \n\\abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


@dataclass(frozen=True)
class TinyShape:
    """Shape of the embedded model: 2 layers of width 128, about 0.5 M parameters."""

    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 512


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of CHARSET; unknown characters map to <unk>."""
    vocab = {tok: i for i, tok in enumerate([PAD, EOS, UNK, *CHARSET])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # every character is a word
    core.decoder = decoders.Fuse()  # join characters back without spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK)


def build_embedded(seed: int = 0, shape: TinyShape = TinyShape()):
    """A randomly initialised tiny Qwen3 and its character tokenizer."""
    tokenizer = build_char_tokenizer()
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_attention_heads,
        head_dim=shape.hidden_size // shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_policy(name_or_path: str, *, seed: int = 0, dtype: str = "auto"):
    """Return (model, tokenizer) for a hub id, a local folder, or "embedded", its weights in the
    dtype model.dtype resolves to (resolve_precision: "auto" is float32, the master weights that
    autocast computes from; the embedded model is built in float32, then cast)."""
    torch_dtype = resolve_precision(dtype).weights
    if name_or_path == EMBEDDED:
        model, tokenizer = build_embedded(seed)
        model = model.to(torch_dtype)  # e.g. a bf16 KL reference under autocast (train/state.py)
    else:
        name_or_path = os.path.expanduser(name_or_path)
        looks_local = name_or_path.startswith(("/", ".")) or os.path.isdir(os.path.dirname(name_or_path) or "#")
        if looks_local and not os.path.isdir(name_or_path):
            raise FileNotFoundError(
                f"model.name_or_path={name_or_path!r}: no such folder; give a folder made by save_pretrained, "
                "a hub id (owner/name), or 'embedded'"
            )
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    prepare_tokenizer(tokenizer, model)
    if default_device().type == "cuda":
        avoid_cudnn_attention()
    return model.to(default_device()), tokenizer


def hold_linears_in(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """A frozen float32 model made to compute under autocast exactly what a float32 policy does:
    the weights of its linear layers (nearly all of it) held in `dtype`, which autocast would cast
    them to at every matmul anyway, and everything else (embeddings, norms; an output layer tied
    to the embeddings) kept float32, as the policy's residual stream, norms and RoPE are. Loaded
    wholly in bf16 instead, the KL reference rounded its residual stream too, so it differed from
    the very policy it was copied from: at step 0, per-token k1 up to 0.16 on the demo's SFT model
    under CPU autocast, logprobs 4e-3 apart on the tests' tiny Llama."""
    tied = {id(p) for module in model.modules() if isinstance(module, torch.nn.Embedding) for p in module.parameters()}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in tied:
            module.to(dtype)
    return model


def avoid_cudnn_attention() -> None:
    """Take cuDNN out of scaled_dot_product_attention's backends (process-wide). On H100/H200 its
    backward returns NaN query gradients when an explicit mask is passed (every padded training
    micro-batch passes one), the sequence length is 64 mod 128 and a row's logsumexp is below
    about -88.7 (pytorch/pytorch#196678, a regression from torch 2.11 that torch 2.13 still has;
    Qwen2.5's attention heads reach it, huggingface/trl#7181). SDPA then picks flash or
    memory-efficient attention, which compute the same function. distributed.finite_step skips an
    update whose gradient is not finite all the same."""
    torch.backends.cuda.enable_cudnn_sdp(False)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
AUTOCAST = ("auto", "off", "bfloat16")  # model.autocast's values


@dataclass(frozen=True)
class Precision:
    """What model.dtype and model.autocast mean on this machine (resolve_precision)."""

    weights: torch.dtype  # parameters, their gradients and the AdamW moments
    autocast: torch.dtype | None  # every forward's matmuls run in this dtype (torch.autocast); None: in `weights`


def resolve_precision(dtype: str = "auto", autocast: str = "auto") -> Precision:
    """The usual mixed-precision recipe where it pays, plain float32 elsewhere.

    autocast "auto" is bfloat16 on a GPU that has it (Ampere and newer) when the weights are
    float32, and off otherwise: on a CPU, where bf16 matmuls are slow on most chips, and over
    half-precision weights, whose matmuls are already half. dtype "auto" is float32: the master
    weights and AdamW state an update must not round away (a bf16 weight near 1 cannot take a
    step below 2^-8 of itself). config_checks.py refuses the settings that do not combine.
    """
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"model.dtype={dtype!r}; use one of auto, {', '.join(DTYPES)}")
    if autocast not in AUTOCAST:
        raise ValueError(f"model.autocast={autocast!r}; use one of auto, off, bfloat16")
    weights = DTYPES.get(dtype, torch.float32)
    cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    on = autocast == "bfloat16" or (autocast == "auto" and weights == torch.float32 and cuda_bf16)
    return Precision(weights, torch.bfloat16 if on else None)


def run_autocast(m) -> torch.dtype | None:
    """The dtype every forward of a run computes in under torch.autocast (None: off), from its
    ModelConfig `m`; the weights and AdamW state stay in model.dtype."""
    return resolve_precision(m.dtype, m.autocast).autocast


def under_autocast(dtype: torch.dtype | None, device: torch.device):
    """torch.autocast to `dtype` on `device`'s kind (cuda, cpu); no context at all when dtype is
    None, so a run without autocast computes exactly what it did before the option existed."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """The module in eval mode for the body, then as it was: a forward that only measures (the
    rollout policy's logprobs, the KL reference's, rollout-time values) must not draw dropout
    masks, or the importance ratio of an unchanged policy is not 1."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
    """Make sure EOS and PAD exist: many base models ship without a pad token."""
    if tokenizer.eos_token_id is None:
        eos = model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        if eos is None:
            raise ValueError("the tokenizer and the model's generation config name no EOS token")
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def eos_token_ids(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> list[int]:
    """Every token id that ends a response: the tokenizer's EOS and the generation config's."""
    ids = {tokenizer.eos_token_id}
    extra = model.generation_config.eos_token_id
    ids.update(extra if isinstance(extra, list) else [extra])
    return sorted(i for i in ids if i is not None)


def enable_checkpointing(model: PreTrainedModel, on: bool) -> None:
    """Activation (gradient) checkpointing for training: each decoder layer's activations are
    recomputed in the backward pass instead of stored. Generation (eval mode) is unaffected."""
    if on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def add_lora(model: PreTrainedModel, cfg, adapter: str | None = None):
    """The model with LoRA adapters (peft): new ones from the recipe (model.lora_*), or the
    trained ones saved in `adapter` (a checkpoint folder) when resuming. Only they train."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, adapter, is_trainable=True)
    targets = cfg.lora_targets if cfg.lora_targets == "all-linear" else [t.strip() for t in cfg.lora_targets.split(",")]
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=cfg.lora_dropout,
                        target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
