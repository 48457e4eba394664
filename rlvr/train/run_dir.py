"""The run folder of `rlvr train`: never written over, trimmed on resume, its settings and
evaluations kept across resumes, readable samples."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rlvr.logging import write_text_atomic
from rlvr.train import checkpoint


def prepare_output(root: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or None. Refuses to write over an earlier run, and a damaged
    latest checkpoint (naming the one to continue from instead). Changes nothing: rows of steps
    about to be redone are dropped by the caller, once every input has been checked."""
    last = checkpoint.latest(root)
    other = _other_phase(root)
    if other and last is None:  # --resume would write RL over it, and drop its metrics
        raise FileExistsError(f"{root} holds {other}")
    if resume:
        if last is not None:
            problem = checkpoint.damage(last)
            if problem:
                raise checkpoint.DamagedCheckpoint(last, problem)
            return last
        if (root / "config.yaml").exists():  # stopped before its first checkpoint: start it again, same folder
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
    """Compare the settings a resumed run last went on with (root/config.yaml, record_config) to
    this config: refuse a change of what the run is (its model, task, reward, algorithm), return
    the other changes ("rl.steps: 100 -> 200") for the log. rl.steps, lr, budgets and eval
    settings may change."""
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


def record_config(root: Path, cfg, step: int) -> None:
    """OUT/config.yaml holds the settings the run goes on with: those it started with, then those
    of each resume that changed any (check_resume_config compares the next resume with these, and
    `rlvr train OUT/config.yaml --resume` continues with them). The settings a resume replaces,
    which trained the steps up to `step` (its checkpoint), stay as config.until-step-000050.yaml.
    None are kept for settings that trained no step that remains (a resume from step 0, or a
    second change from the same checkpoint: the steps after it were dropped)."""
    from rlvr.config import save_config

    path = root / "config.yaml"
    kept = root / f"config.until-step-{step:06d}.yaml"
    if path.exists() and step > 0 and not kept.exists():
        shutil.copyfile(path, kept)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / "config.yaml.tmp"  # a crash mid-write leaves the previous settings whole
    save_config(cfg, tmp)
    tmp.replace(path)


def free_name(path: Path) -> Path:
    """`path`, or path-2, path-3... (before the suffix): the first name not taken, for what a
    resume moves aside rather than write over."""
    n, free = 2, path
    while free.exists():
        free, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
    return free


def keep_earlier_eval(out: Path) -> Path | None:
    """Before a run's final evaluation is written into `out` (OUT/eval, a demo's sft/eval and
    rl/eval), an earlier one there, from before a --resume, moves to a sibling folder named for
    the model it scored (eval.json says which): eval-step-000002/, never written over. One stopped
    before its eval.json was written becomes eval-unfinished/. Returns where it went."""
    if not ((out / "eval.json").exists() or (out / "samples.jsonl").exists()):
        return None
    try:
        model = json.loads((out / "eval.json").read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError):  # no eval.json: stopped during the evaluation
        model = None
    dest = free_name(out.with_name(f"{out.name}-{Path(str(model)).name}" if model else f"{out.name}-unfinished"))
    out.rename(dest)
    print(f"kept the earlier evaluation in {out} ({model or 'unfinished'}) as {dest}")
    return dest


def _other_phase(root: Path) -> str | None:
    """What else a folder holds, when it is the output of `rlvr sft` or `rlvr demo` (or a
    `train` with sft.before_rl), not of an RL run: its name and what to do, for an error; else None."""
    if (root / "sft.json").exists():
        return (f"an SFT run (sft.json), not an RL run; train into a new folder with output_dir=... "
                f"(model.name_or_path={root / 'model'} starts RL from its model)")
    if (root / "summary.json").exists() or (root / "sft").is_dir():
        return (f"a demo / SFT-then-RL run (its RL is under rl/), not an RL run alone: continue it with "
                f"`rlvr train {root / 'config.yaml'} --resume`, or start RL from its SFT model in a new folder "
                f"with model.name_or_path={root / 'sft' / 'model'} output_dir=...")
    metrics = root / "metrics.jsonl"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                phase = json.loads(line).get("phase")
            except (json.JSONDecodeError, AttributeError):
                continue
            if phase not in (None, "rl"):
                return f"a run with {phase!r} metrics, not an RL run; train into a new folder with output_dir=..."
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
        write_text_atomic(path, "".join(r + "\n" for r in rows))  # the rows that stay, never half written


def _step(line: str) -> float:
    """A row's step; a line cut short by a crash mid-write counts as after every checkpoint."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return float("inf")
