"""Tasks give SFT, RL and held-out Samples and name their default reward."""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlvr.config import TaskConfig
from rlvr.types import Sample


@dataclass(frozen=True)
class TaskData:
    sft_train: list[Sample]  # with worked solutions
    sft_val: list[Sample]  # to detect the SFT plateau (never the held-out set)
    rl_train: list[Sample]  # answer-only is enough
    heldout: list[Sample]  # final evaluation, disjoint from all of the above
    description: str


def load_task(cfg: TaskConfig, need: tuple[str, ...] = ("sft", "rl", "heldout")) -> TaskData:
    if cfg.name == "arithmetic":
        return _arithmetic(cfg, need)
    if cfg.name in ("math", "math500", "gsm8k"):
        from rlvr.tasks.math_data import load_math_task

        return load_math_task(cfg, need)
    return _jsonl(cfg, need)


def _arithmetic(cfg: TaskConfig, need) -> TaskData:
    from rlvr.tasks.arithmetic import make_samples

    lo, hi = cfg.sft_max_digits, cfg.rl_max_digits
    sft = []
    if "sft" in need:  # worked solutions: mostly short problems, a few long ones (if sft_long_fraction > 0)
        n = cfg.sft_examples + cfg.sft_val
        n_long = round(n * cfg.sft_long_fraction) if hi > lo else 0
        sft = make_samples(n - n_long, "train", cfg.seed, 1, lo, True)
        sft += make_samples(n_long, "train", cfg.seed, lo + 1, hi, True) if n_long else []
        random.Random(cfg.seed).shuffle(sft)
    rl = make_samples(cfg.rl_problems, "train", cfg.seed + 1, 1, hi, False) if "rl" in need else []
    heldout = []
    if "heldout" in need:
        heldout = [_tag(s, "seen") for s in make_samples(cfg.eval_per_bucket, "heldout", cfg.seed, 1, lo, False)]
        if hi > lo:
            longer = make_samples(cfg.eval_per_bucket, "heldout", cfg.seed, lo + 1, hi, False)
            heldout += [_tag(s, "longer") for s in longer]
    long_part = f" ({100 * cfg.sft_long_fraction:.0f}% with {lo + 1}-{hi})" if cfg.sft_long_fraction and hi > lo else ""
    desc = (f"arithmetic (+, -, *1-digit): SFT on {cfg.sft_examples} worked solutions with 1-{lo} digits{long_part}; "
            f"RL on {cfg.rl_problems} answer-only problems with 1-{hi} digits (uniform)")
    return TaskData(sft[: cfg.sft_examples], sft[cfg.sft_examples :], rl, heldout, desc)


def _tag(s: Sample, bucket: str) -> Sample:
    return Sample(s.prompt, s.answer, s.solution, {**s.meta, "bucket": bucket}, s.id)


def _jsonl(cfg: TaskConfig, need) -> TaskData:
    from rlvr.tasks.jsonl import load_jsonl

    train = load_jsonl(cfg.train_path, need_solution="sft" in need) if cfg.train_path and need != ("heldout",) else []
    heldout = load_jsonl(cfg.eval_path) if cfg.eval_path and "heldout" in need else []
    if "heldout" in need and not heldout and need == ("heldout",):
        raise ValueError("task.eval_path is required to evaluate a jsonl task")
    check_disjoint(train, heldout, cfg.train_path, cfg.eval_path)
    # plateau checks for SFT use a seeded random slice of the training file, never the held-out
    # file: its first lines would be one subject or difficulty in a sorted file
    pool = random.Random(cfg.seed).sample(train, len(train)) if "sft" in need else []
    n_val = min(len(pool) // 10, 200)
    return TaskData(pool[n_val:], pool[:n_val], train, heldout, f"jsonl task {cfg.train_path or cfg.eval_path}")


def check_disjoint(train: list[Sample], heldout: list[Sample], train_name: str, eval_name: str) -> None:
    """Refuse a held-out set that shares problems with the training set: a held-out problem trained
    on is not held out, and its accuracy measures recall."""
    seen = {problem_key(s.prompt) for s in train}
    leaked = [s for s in heldout if problem_key(s.prompt) in seen]
    if leaked:
        raise ValueError(f"{eval_name}: {len(leaked)} of its {len(heldout)} problems are also in "
                         f"{train_name} (same prompt up to whitespace; e.g. {leaked[0].prompt[:60]!r}): "
                         "held-out accuracy would count problems the model trained on; remove them from one of "
                         "the files")


def problem_key(text: str) -> str:
    """A problem's text with its whitespace collapsed: the identity that train / held-out overlap
    checks compare, so a copy that differs only in spaces or line breaks is still the same problem."""
    return " ".join(text.split())


class PromptStream:
    """Endless batches of samples in reshuffled epochs; `state()` / `load()` make resume exact."""

    def __init__(self, samples: list[Sample], seed: int):
        if not samples:
            raise ValueError("no training problems: the task gave an empty RL set")
        self.samples, self.seed = samples, seed
        self.epoch, self.pos = 0, 0
        self._order = self._shuffled(0)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.samples)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next(self, n: int) -> list[Sample]:
        out = []
        while len(out) < n:
            if self.pos == len(self._order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            out.append(self.samples[self._order[self.pos]])
            self.pos += 1
        return out

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order = self._shuffled(self.epoch)
