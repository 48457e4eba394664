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


# what a run is: resuming with another value would continue a checkpoint of something else
_IDENTITY = ("model.name_or_path", "model.lora_r", "task.name", "task.train_path", "task.reward", "task.template",
             "rl.advantage", "rl.loss", "rl.group_size", "critic.shared")


def check_resume_config(root: Path, cfg) -> list[str]:
    """Compare the config a resumed run was started with (root/config.yaml) to this one: refuse a
    change of what the run is (its model, task, reward, algorithm), return the other changes
    ("rl.steps: 100 -> 200") for the log. rl.steps, budgets and eval settings may change."""
    import dataclasses

    import yaml

    saved_file = root / "config.yaml"
    if not saved_file.exists():
        return []

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "vllm_args" else {f"{prefix}{k}": v})
        return out

    saved, now = flat(yaml.safe_load(saved_file.read_text()) or {}), flat(dataclasses.asdict(cfg))
    changed = [k for k in now if k in saved and saved[k] != now[k] and k != "output_dir"]
    fixed = [k for k in changed if k in _IDENTITY]
    if fixed:
        raise ValueError(f"--resume: {saved_file} was started with " + ", ".join(f"{k}={saved[k]!r}" for k in fixed)
                         + "; this command has " + ", ".join(f"{k}={now[k]!r}" for k in fixed)
                         + ". A checkpoint continues the run it came from: use the same values, or a new output_dir")
    return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in changed]


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
                                    "correct": bool(scored.correct[i]), "finish_reason": c.finish_reason}) + "\n")


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
