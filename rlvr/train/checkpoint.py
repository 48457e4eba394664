"""Checkpoints: a Hugging Face folder (loads with from_pretrained as it is) + trainer state.

    OUT/checkpoints/step-000050/   config.json, model.safetensors, tokenizer files,
                                   trainer_state.pt (optimizer, scheduler, RNG, data cursor, step),
                                   critic/ (PPO only: the value model, also a HF folder)

A checkpoint is written to `step-N.tmp`, flushed to disk (fsync) and renamed when complete, so a
crash, a kill or a power cut never leaves a half-written checkpoint under a real name; `latest()`
ignores `.tmp` folders. One damaged anyway (a disk that lied, a copy cut short) is named on
--resume with the previous usable one (`damage`, `load_state`), not met as a raw EOFError.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

STATE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    """This process's RNG states. On a GPU, only its own device's generator (the one torchrun's
    LOCAL_RANK selected): every process sampled on that one alone, and a list of every visible
    GPU's state could not be restored on a machine with fewer of them."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, (list, tuple)):  # an older checkpoint: every visible GPU's state; ours is at our index
            device = torch.cuda.current_device()
            cuda = cuda[device] if device < len(cuda) else None  # saved with fewer GPUs: ours was never used
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)


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
    _sync(tmp)  # on disk before its real name is: a crash after the rename finds whole files
    if final.exists():  # re-saving the same step: the old one goes only once the new one is in place
        old = folder / f"step-{step:06d}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    _sync_dir(folder)  # the rename itself
    for old in sorted(folder.glob("step-??????"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def _sync(tree: Path) -> None:
    """fsync every file under `tree`, then every folder: the data, then the names."""
    for path in sorted(tree.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
        elif path.is_dir():
            _sync_dir(path)
    _sync_dir(tree)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def latest(root: Path) -> Path | None:
    done = sorted(p for p in (Path(root) / "checkpoints").glob("step-??????") if (p / STATE).exists())
    return done[-1] if done else None


def load_state(path: Path) -> dict[str, Any]:
    # onto the CPU: a multi-GPU run without FSDP saved its optimizer moments as cuda:0 tensors,
    # which every rank would otherwise load onto GPU 0 (load_state_dict moves them to the params')
    try:
        return torch.load(Path(path) / STATE, weights_only=False, map_location="cpu")
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError) as e:  # what a truncated file raises
        raise DamagedCheckpoint(Path(path), f"{STATE}: {e}") from None


class DamagedCheckpoint(ValueError):
    """A checkpoint whose files do not read back whole; names it and the newest one that does."""

    def __init__(self, path: Path, problem: str):
        earlier = [p for p in sorted(path.parent.glob("step-??????")) if p.name < path.name and (p / STATE).exists()]
        usable = next((p for p in reversed(earlier) if damage(p) is None), None)
        then = (f"--resume then continues from {usable}" if usable else
                "no earlier checkpoint reads back whole: start the run again in a new output_dir")
        super().__init__(f"checkpoint {path} is damaged ({problem}), e.g. by a crash or a full disk while it was "
                         f"written; move it aside (mv {path} {path}.damaged): {then}")


def damage(path: Path) -> str | None:
    """What is wrong with a checkpoint's files, or None: each weights file's header and length
    (safetensors), each torch.save archive's index (at its end: a cut file has none), each JSON
    file. Reads headers only, not the tensors."""
    from safetensors import safe_open

    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        try:
            if file.suffix == ".safetensors":
                with safe_open(str(file), "pt"):
                    pass
            elif file.suffix in (".pt", ".bin"):
                zipfile.ZipFile(file).close()
            elif file.suffix == ".json":
                json.loads(file.read_text(encoding="utf-8"))
        except Exception as e:  # whatever the reader raises, the file does not read back
            return f"{file.relative_to(path)}: {e}"
    return None
