"""Rewards are plain callables `(completion_text, sample) -> float`, registered by name.

A recipe names a registered reward (`exact`) or the user's own as `module:function`. Every
reward is wrapped so it returns a float for every input: an exception scores 0 (and is counted
in the metrics), so one malformed completion never stops a run.
"""

from __future__ import annotations

import importlib
from typing import Callable

from rlvr.registry import Registry
from rlvr.types import Sample

Reward = Callable[[str, Sample], float]
REWARDS: Registry[Reward] = Registry("reward")

from rlvr.rewards import exact as _exact  # noqa: E402,F401  (registers "exact")


def resolve(name: str) -> Reward:
    """A registered reward by name, or `package.module:function` imported from the user's code."""
    if ":" not in name:
        return REWARDS.get(name)
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(
            f"task.reward={name!r}: cannot import module {module_name!r} ({e}); "
            "make it importable (run from its folder or add it to PYTHONPATH)"
        ) from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"task.reward={name!r}: module {module_name!r} has no function {attr!r}")
    return fn


def score_completion(reward: Reward, completion, sample: Sample, reward_truncated: bool = False) -> tuple[float, bool]:
    """(score, ok) for a Completion. A response cut at max_new_tokens never finished its answer,
    so it scores 0 unless `reward_truncated`: otherwise a policy that stops emitting EOS after its
    answer keeps full reward and drifts into max-length responses (seen in the demo: 55 -> 96
    tokens within 20 steps). Training and evaluation use this one rule."""
    score, ok = safe_score(reward, completion.text, sample)
    if completion.finish_reason == "length" and not reward_truncated:
        score = 0.0
    return score, ok


def safe_score(reward: Reward, text: str, sample: Sample) -> tuple[float, bool]:
    """(score, ok): the reward's float, or (0.0, False) when it raised or returned a non-number."""
    try:
        return float(reward(text, sample)), True
    except Exception:  # noqa: BLE001 - a reward bug must cost a score of 0, not the run
        return 0.0, False
