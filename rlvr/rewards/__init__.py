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


def safe_score(reward: Reward, text: str, sample: Sample) -> tuple[float, bool]:
    """(score, ok): the reward's float, or (0.0, False) when it raised or returned a non-number."""
    try:
        return float(reward(text, sample)), True
    except Exception:  # noqa: BLE001 - a reward bug must cost a score of 0, not the run
        return 0.0, False
