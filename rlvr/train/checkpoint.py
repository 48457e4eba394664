"""Checkpoints: a Hugging Face folder (loads with from_pretrained as it is) + trainer state.

    OUT/checkpoints/step-000050/   config.json, model.safetensors, tokenizer files,
                                   trainer_state.pt (optimizer, scheduler, RNG, data cursor, step),
                                   critic/ (PPO only: the value model, also a HF folder)

A checkpoint is written to `step-N.tmp` and renamed when complete, so a crash or a kill never
leaves a half-written checkpoint under a real name; `latest()` ignores `.tmp` folders.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

STATE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(root: Path, step: int, model, tokenizer, trainer_state: dict[str, Any], keep: int = 2,
         extras: dict[str, Callable[[Path], None]] | None = None,
         weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `step` atomically under root/checkpoints; keep the newest `keep`.
    `extras` maps a sub-folder name to a function that writes into it (e.g. the critic).
    `weights`: the model's whole state dict when the module holds only a shard of it (FSDP)."""
    folder = Path(root) / "checkpoints"
    final = folder / f"step-{step:06d}"
    tmp = folder / f"step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, state_dict=weights)
    tokenizer.save_pretrained(tmp)
    for name, write in (extras or {}).items():
        write(tmp / name)
    torch.save({**trainer_state, "step": step, "rng": rng_state()}, tmp / STATE)
    if final.exists():  # re-saving the same step: the old one goes only once the new one is in place
        old = folder / f"step-{step:06d}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    for old in sorted(folder.glob("step-??????"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def latest(root: Path) -> Path | None:
    done = sorted(p for p in (Path(root) / "checkpoints").glob("step-??????") if (p / STATE).exists())
    return done[-1] if done else None


def load_state(path: Path) -> dict[str, Any]:
    # onto the CPU: a multi-GPU run without FSDP saved its optimizer moments as cuda:0 tensors,
    # which every rank would otherwise load onto GPU 0 (load_state_dict moves them to the params')
    return torch.load(Path(path) / STATE, weights_only=False, map_location="cpu")
