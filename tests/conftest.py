"""Shared fixtures: tiny random checkpoints the tests build and save themselves.

The suite runs on the CPU, also on a machine with GPUs: its tolerances are float32's, and its
multi-process tests run gloo ranks side by side on one machine, as CI does. GPUs are hidden before
anything starts CUDA (subprocesses inherit it). RLVR_TEST_GPU=1 leaves them visible, for the GPU
checks in tests/gpu (`make gpu-test`), which are skipped without one.
"""

import os

if os.environ.get("RLVR_TEST_GPU") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from rlvr.models import build_char_tokenizer  # noqa: E402

CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A random 2-layer Llama with GQA and a chat template, saved as a user's checkpoint would be."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tok = build_char_tokenizer()
    tok.chat_template = CHAT
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path
