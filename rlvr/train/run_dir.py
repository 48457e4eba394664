"""The run folder of `rlvr train`: never written over, trimmed on resume, readable samples."""

from __future__ import annotations

import json
from pathlib import Path

from rlvr.train import checkpoint


def prepare_output(root: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None. Refuses to write over an earlier run."""
    last = checkpoint.latest(root)
    other = _other_phase(root)
    if other and last is None:  # --resume would write RL over it, and drop its metrics
        raise FileExistsError(f"{root} holds {other}, not an RL run; train into a new folder with output_dir=... "
                              f"(model.name_or_path={root / 'model'} starts RL from an SFT run's model)")
    if resume:
        if last is not None:
            return last
        if (root / "config.yaml").exists():  # stopped before its first checkpoint: start it again, same folder
            for name in ("metrics.jsonl", "rollouts.jsonl"):
                drop_rows_after(root / name, 0)
            print(f"--resume: {root} has no checkpoint yet; starting its RL from step 0")
            return None
        raise FileNotFoundError(f"--resume: no run under {root} (no checkpoints, no config.yaml); start without --resume")
    if last is not None or (root / "metrics.jsonl").exists():
        raise FileExistsError(
            f"{root} already holds a run; pass --resume to continue it, or set output_dir=... to a new folder"
        )
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty; choose another with output_dir=... "
                              "(rlvr never writes over an earlier run)")
    return None


def _other_phase(root: Path) -> str | None:
    """What else a folder holds, when it is the output of `rlvr sft` or `rlvr demo` (or a
    `train` with sft.before_rl), not of an RL run: its name for an error, else None."""
    if (root / "sft.json").exists():
        return "an SFT run (sft.json)"
    if (root / "summary.json").exists() or (root / "sft").is_dir():
        return "a demo / SFT-then-RL run (its RL is under rl/; continue it with --resume on that recipe)"
    metrics = root / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                phase = json.loads(line).get("phase")
            except (json.JSONDecodeError, AttributeError):
                continue
            if phase not in (None, "rl"):
                return f"a run with {phase!r} metrics"
    return None


def log_rollouts(path: Path, step: int, scored, group_size: int, n: int = 4) -> None:
    """A few groups of completions, so a run can be read as text, not only as curves."""
    with path.open("a", encoding="utf-8") as f:
        for g, sample in enumerate(scored.samples[:n]):
            for i in range(g * group_size, (g + 1) * group_size):
                c = scored.completions[i]
                f.write(json.dumps({"step": step, "prompt": sample.prompt, "answer": sample.answer,
                                    "completion": c.text, "reward": float(scored.rewards[i]),
                                    "finish_reason": c.finish_reason}) + "\n")


def drop_rows_after(path: Path, step: int) -> None:
    """On resume, forget metrics of steps after the checkpoint: they are about to be redone."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if _step(line) <= step]
        tmp = path.with_name(path.name + ".tmp")  # the rows that stay are never only half written
        tmp.write_text("".join(r + "\n" for r in rows))
        tmp.replace(path)


def _step(line: str) -> float:
    """A row's step; a line cut short by a crash mid-write counts as after every checkpoint."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return float("inf")
