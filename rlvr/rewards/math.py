"""`math`: the math verifier as a reward, with hard time limits and a batch API.

Extraction is in rewards/math_extract.py, normalisation and equivalence in math_equiv.py; every check
that needs algebra runs there, in worker processes with a hard time limit (rewards/guard.py), so
`verify` never raises and never hangs, from any thread or process.
"""

from __future__ import annotations

from pathlib import Path

from rlvr.rewards import REWARDS
from rlvr.rewards import math_equiv
from rlvr.rewards.math_equiv import equivalent
from rlvr.rewards.math_extract import extract_answer
from rlvr.types import Sample

__all__ = ["equivalent", "extract_answer", "verify", "verify_batch", "same_answer", "math_reward", "math_lenient_reward"]

_plain_number = math_equiv._plain_number
MAX_ANSWER_CHARS = 1000  # a longer "final answer" is no answer (and would make the checks slow)

# ---------------------------------------------------------------- the guarded API and the reward

_POOLS: dict[tuple[int, float], object] = {}


def _pool(workers: int, timeout: float):
    from rlvr.rewards.guard import GuardedPool

    key = (workers, timeout)
    if key not in _POOLS:
        # by file path: the worker imports math_equiv alone, not the rlvr package (and torch)
        _POOLS[key] = GuardedPool(f"{Path(math_equiv.__file__)}:equivalent", workers=workers, timeout=timeout)
    return _POOLS[key]


def _fast(gold: str, answer: str) -> bool | None:
    """Decide cheaply in this process when no algebra is needed (most training rewards)."""
    if len(answer) > MAX_ANSWER_CHARS:
        return False
    verdict, g, a = math_equiv.prefilter(gold, answer)
    if verdict is not None:
        return verdict
    fg, fa = _plain_number(g), _plain_number(a)
    if fg is not None and fa is not None:
        return fg == fa
    return None


class Verdicts(list):
    """verify_batch's booleans, with `failures`: checks that timed out or raised in a worker (each
    scored False). rlvr.rewards.score_many counts them with the reward errors."""

    failures: int = 0


def verify_batch(items: list[tuple[str, str] | tuple[str, str, str | None]], mode: str = "strict",
                 workers: int = 2, timeout: float = 5.0) -> Verdicts:
    """For each (gold, response[, problem]): is the response's final answer correct? Checks that
    need algebra run in `workers` processes, each with a hard `timeout` (a timeout scores False,
    and is counted in the result's `failures`)."""
    out: list[bool | None] = []
    pending, args = [], []
    for item in items:
        gold, response, problem = (*item, None)[:3]
        gold, problem = str(gold), None if problem is None else str(problem)
        try:
            answer = extract_answer(response, mode)
            quick = False if answer is None else _fast(gold, answer)
        except Exception:  # noqa: BLE001 - e.g. a 5,000-digit integer: no answer a verifier can read
            answer, quick = None, False
        out.append(quick)
        if quick is None:
            pending.append(len(out) - 1)
            args.append((gold, answer, problem))
    failures = 0
    if args:
        for i, (value, error) in zip(pending, _pool(workers, timeout).map(args)):
            out[i] = bool(value)
            failures += error is not None
    verdicts = Verdicts(bool(x) for x in out)
    verdicts.failures = failures
    return verdicts


def verify(gold: str, response: str, problem: str | None = None, mode: str = "strict", timeout: float = 5.0) -> bool:
    """Is the final answer of `response` the gold answer? Never raises, never hangs."""
    try:
        return verify_batch([(gold, response, problem)], mode, workers=1, timeout=timeout)[0]
    except Exception:  # noqa: BLE001 - a reward must return
        return False


def same_answer(a: str, b: str, timeout: float = 5.0) -> bool:
    """Are two extracted answers the same object (for maj@k voting)? Guarded like `verify`."""
    try:
        quick = _fast(a, b)
        if quick is not None:
            return quick
        value, _error = _pool(1, timeout).map([(a, b, None)])[0]
        return bool(value)
    except Exception:  # noqa: BLE001
        return False


@REWARDS.register("math")
def math_reward(completion: str, sample: Sample) -> float:
    """1.0 when the boxed (or <answer>) final answer equals `sample.answer` mathematically."""
    return float(verify(sample.answer, completion, sample.prompt))


@REWARDS.register("math_lenient")
def math_lenient_reward(completion: str, sample: Sample) -> float:
    """As `math`, but an unboxed final answer counts too ("the answer is 5", else the last number):
    for evaluating models that were not trained to box (`rlvr eval ... task.reward=math_lenient`);
    train on `math`, which gives a policy no credit for an answer it did not commit to."""
    return float(verify(sample.answer, completion, sample.prompt, mode="lenient"))


def _math_reward_batch(completions: list[str], samples: list[Sample], workers: int = 2,
                       mode: str = "strict") -> Verdicts:
    """The `math` reward for many completions at once, the algebra spread over worker processes;
    its `failures` (timeouts, worker errors) reach the run's reward_errors."""
    verdicts = verify_batch([(s.answer, c, s.prompt) for c, s in zip(completions, samples)], mode, workers=workers)
    scores = Verdicts(float(v) for v in verdicts)
    scores.failures = verdicts.failures
    return scores


math_reward.batch = _math_reward_batch  # rlvr.rewards.score_many uses it when a reward has one
math_lenient_reward.batch = lambda completions, samples: _math_reward_batch(completions, samples, mode="lenient")  # noqa: E731
