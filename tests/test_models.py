"""What model.dtype and model.autocast resolve to (models.resolve_precision), on this CPU and on a
GPU as the resolution sees one (torch.cuda's answers replaced)."""

import pytest
import torch

from rlvr.models import Precision, load_policy, resolve_precision


@pytest.fixture
def gpu(monkeypatch):
    """A machine whose torch.cuda reports a device, with bf16 unless the test says otherwise."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    return monkeypatch


def test_a_cpu_stays_float32_without_autocast_unless_asked():
    assert resolve_precision() == Precision(torch.float32, None)
    assert resolve_precision("auto", "off") == Precision(torch.float32, None)
    assert resolve_precision("auto", "bfloat16") == Precision(torch.float32, torch.bfloat16)  # what the tests force
    assert resolve_precision("bfloat16", "auto") == Precision(torch.bfloat16, None)


def test_a_gpu_gets_float32_master_weights_under_bf16_autocast(gpu):
    assert resolve_precision() == Precision(torch.float32, torch.bfloat16)
    assert resolve_precision("float32", "auto") == Precision(torch.float32, torch.bfloat16)
    assert resolve_precision("auto", "off") == Precision(torch.float32, None)
    # pure half weights: their matmuls are already half, autocast stays off
    assert resolve_precision("bfloat16", "auto") == Precision(torch.bfloat16, None)
    assert resolve_precision("float16", "auto") == Precision(torch.float16, None)
    gpu.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_precision() == Precision(torch.float32, None)  # a V100 or T4: plain float32, not emulated bf16


def test_a_gpu_without_bf16_refuses_forced_bf16_autocast_at_config_time(gpu):
    from rlvr.config import ConfigError, load_config

    gpu.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(ConfigError, match="model.autocast=bfloat16 needs a GPU with bfloat16"):
        load_config(None, ["model.autocast=bfloat16"])


def test_loaded_weights_follow_the_resolved_dtype(tiny_llama_dir):
    model, _ = load_policy(str(tiny_llama_dir), dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights, whatever autocast does
    model, _ = load_policy(str(tiny_llama_dir), dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model, _ = load_policy("embedded", dtype="bfloat16")  # built in float32, then cast
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    model, _ = load_policy("embedded")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
