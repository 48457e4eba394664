"""Checkpoints as files: on disk before their real name, a damaged one named on --resume, and
each process's own GPU's RNG (no GPU here: torch.cuda is faked)."""

import os

import pytest
import torch

from rlvr.train import checkpoint
from rlvr.train.rl import train_rl
from tests.train.test_rl_plumbing import CALLS, config


def test_a_damaged_latest_checkpoint_is_named_with_the_one_to_resume_from(tiny_llama_dir, tmp_path):
    """A crash left step 4's trainer_state.pt (or weights) empty: --resume raised a raw EOFError
    (SafetensorError) from deep in torch. It now names the damaged folder, the previous usable
    one and the fix, before anything changes; with the damaged one moved aside, it resumes."""
    CALLS.update(n=0, stop_after=None)
    out = tmp_path / "run"
    train_rl(config(tiny_llama_dir, out), log_fn=lambda *_: None)
    step2, step4 = out / "checkpoints" / "step-000002", out / "checkpoints" / "step-000004"
    rows = (out / "metrics.jsonl").read_text()
    for damaged in ("model.safetensors", checkpoint.STATE):
        kept = (step4 / damaged).read_bytes()
        (step4 / damaged).write_bytes(kept[: len(kept) // 3] if damaged == checkpoint.STATE else b"")
        with pytest.raises(ValueError, match=rf"checkpoint {step4} is damaged \({damaged}: .*move it aside "
                                             rf"\(mv {step4} {step4}.damaged\): --resume then continues from {step2}"):
            train_rl(config(tiny_llama_dir, out, rl__steps=6), resume=True, log_fn=lambda *_: None)
        assert (out / "metrics.jsonl").read_text() == rows
        (step4 / damaged).write_bytes(kept)
    assert "no earlier checkpoint reads back whole" in str(checkpoint.DamagedCheckpoint(step2, "cut short"))
    (step4 / checkpoint.STATE).write_bytes(b"")
    with pytest.raises(ValueError, match=f"checkpoint {step4} is damaged"):  # load_state's own guard
        checkpoint.load_state(step4)
    step4.rename(step4.with_name("step-000004.damaged"))
    assert train_rl(config(tiny_llama_dir, out), resume=True, log_fn=lambda *_: None)["steps"] == 4


def test_a_checkpoint_is_on_disk_before_it_is_renamed(tmp_path, monkeypatch):
    """Every file and folder is fsynced before the rename that makes the checkpoint real (a
    power cut after it would otherwise find empty files under the real name), and the parent
    folder after it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlvr.models import build_char_tokenizer

    tok = build_char_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=8, intermediate_size=16,
                                         num_hidden_layers=1, num_attention_heads=2))
    synced, renames = [], []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or fsync(fd))
    rename = type(tmp_path).rename

    def spy(self, target):
        renames.append((str(self), list(synced)))
        return rename(self, target)

    monkeypatch.setattr(type(tmp_path), "rename", spy)
    final = checkpoint.save(tmp_path, 1, model, tok, {"x": 1}, extras={"critic": lambda p: p.mkdir() or
                                                                        (p / "head.pt").write_bytes(b"1")})
    (tmp, before), = renames
    assert tmp.endswith("step-000001.tmp")
    for name in ("model.safetensors", "config.json", "tokenizer.json", checkpoint.STATE, "critic/head.pt", "critic", ""):
        assert str(tmp_path / "checkpoints" / "step-000001.tmp" / name).rstrip("/") in before
    assert synced[-1] == str(final.parent)  # the rename itself


def test_each_process_saves_and_restores_its_own_gpus_rng(monkeypatch):
    """All visible GPUs' states were saved, and restored with set_rng_state_all: an IndexError on
    a machine with fewer GPUs. Now the process's own device's state only; an older checkpoint's
    list gives this device's entry (none, when it was saved with fewer GPUs)."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.tensor([7], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(int(state[0])))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every GPU's state saved"))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("every GPU's state restored"))
    state = checkpoint.rng_state()
    assert torch.equal(state["cuda"], torch.tensor([7], dtype=torch.uint8))
    checkpoint.set_rng_state(state)
    old = [torch.tensor([n], dtype=torch.uint8) for n in (10, 11, 12)]  # saved on 3 GPUs: ours is at index 1
    checkpoint.set_rng_state({**state, "cuda": old})
    checkpoint.set_rng_state({**state, "cuda": old[:1]})  # saved on 1 GPU: this device's generator never ran
    assert restored == [7, 11]
