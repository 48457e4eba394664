"""`math`: the math verifier as a reward, with hard time limits and a batch API.

Extraction is in rewards/math_extract.py, normalisation and equivalence in math_equiv.py; every check
that needs algebra runs there, in worker processes with a hard time limit (rewards/guard.py), so
`verify` never hangs, from any thread or process, and raises only when those workers cannot start
at all (guard.WorkerStartError: a broken install would otherwise score every answer 0).
"""

from __future__ import annotations

from pathlib import Path

from rlvr.rewards import REWARDS
from rlvr.rewards import math_equiv
from rlvr.rewards.guard import GuardedPool, WorkerStartError
from rlvr.rewards.math_equiv import equivalent
from rlvr.rewards.math_extract import extract_answer
from rlvr.types import Sample

__all__ = ["equivalent", "extract_answer", "verify", "verify_batch", "same_answer", "math_reward", "math_lenient_reward"]

_plain_number = math_equiv._plain_number
MAX_ANSWER_CHARS = 1000  # a longer "final answer" is no answer (and would make the checks slow)

# ---------------------------------------------------------------- the guarded API and the reward

_POOLS: dict[tuple[int, float], GuardedPool] = {}


def _pool(workers: int, timeout: float) -> GuardedPool:
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
    """verify_batch's booleans, with `failures`: checks that timed out, raised in a worker, or never
    ran because the workers broke mid-run (each scored False). rlvr.rewards.score_many counts them
    with the reward errors."""

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
        try:
            results = _pool(workers, timeout).map(args)
        except WorkerStartError:
            raise
        except Exception as e:  # noqa: BLE001 - the pool broke mid-call (a reply it could not read): each item failed
            results = [(None, f"error: {type(e).__name__}: {e}")] * len(args)
        for i, (value, error) in zip(pending, results):
            out[i] = bool(value)
            failures += error is not None
    verdicts = Verdicts(bool(x) for x in out)
    verdicts.failures = failures
    return verdicts


def verify(gold: str, response: str, problem: str | None = None, mode: str = "strict", timeout: float = 5.0) -> bool:
    """Is the final answer of `response` the gold answer? Never hangs; raises only WorkerStartError
    (the verifier cannot run at all)."""
    try:
        return verify_batch([(gold, response, problem)], mode, workers=1, timeout=timeout)[0]
    except WorkerStartError:
        raise
    except Exception:  # noqa: BLE001 - a reward must return
        return False


def same_answer(a: str, b: str, timeout: float = 5.0) -> bool:
    """Are two extracted answers the same object (for maj@k voting)? Guarded like `verify`.

    Each must match the other as the gold: maj@k groups answers, and a one-way match would make the
    groups depend on the order the answers come in; the gold-only leniencies (the gold's "5\\%" is 5,
    its trailing words a unit) do not apply between two answers."""
    try:
        pairs = [(a, b, None), (b, a, None)]
        quick = [_fast(x, y) for x, y, _ in pairs]
        if False in quick:
            return False
        slow = [pair for pair, q in zip(pairs, quick) if q is None]
        return all(bool(value) for value, _error in (_pool(1, timeout).map(slow) if slow else []))
    except WorkerStartError:
        raise
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
