"""Rewards are plain callables `(completion_text, sample) -> float`, registered by name.

A recipe names a registered reward (`exact`), the user's own as `module:function`, or a
weighted sum of those (`math + 0.2*format_soft`, see `WeightedSum`). Every reward is wrapped
so it returns a float for every input: an exception scores 0 (and is counted in the metrics),
so one malformed completion never stops a run.
"""

from __future__ import annotations

import difflib
import importlib
import re
from math import isfinite  # not `import math`: the submodule rlvr.rewards.math takes that name here
from typing import Callable

from rlvr.registry import Registry
from rlvr.rewards.guard import WorkerStartError
from rlvr.types import Sample

Reward = Callable[[str, Sample], float]
REWARDS: Registry[Reward] = Registry("reward")

for _module in ("exact", "format", "math"):  # importing a reward module registers its rewards
    importlib.import_module(f"rlvr.rewards.{_module}")

# task.reward grammar:  sum := term (("+" | "-") term)*    term := [weight "*"] name
# weight: an unsigned number (2, 0.2, .5, 1e-3); name: a registered reward or module.path:function
_TERM = re.compile(r"\s*(?:((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\*\s*)?([A-Za-z_][\w.]*(?::[A-Za-z_]\w*)?)\s*")
_SIGN = re.compile(r"\s*([-+])")
_GRAMMAR = ("write a weighted sum such as 'math + 0.2*format_soft': terms [weight*]name joined by + or -, "
            "each name a registered reward or module:function")


class WeightedSum:
    """The reward sum_i weight_i * reward_i(completion, sample) of task.reward = "math + 0.2*format_soft".

    `terms` lists (weight, name, reward) in the order written; `parts` scores each term alone.
    `correctness` is the first term's reward, unweighted. Training and evaluation count a
    response as correct when its task reward is >= 1, which a sum no longer means: with
    "math + 1.0*format_strict" a correct answer in a broken format scores 0, and with
    "0.5*math + 0.5*format_soft" a correct one never passes 1. So write the correctness reward
    first and read correctness from `correctness`.

    >>> from rlvr.rewards.exact import exact
    >>> from rlvr.rewards.format import format_boxed
    >>> r = WeightedSum([(1.0, "exact", exact), (0.2, "format_boxed", format_boxed)])
    >>> r("\\\\boxed{4}", Sample(prompt="2+2", answer="4")), r("\\\\boxed{5}", Sample(prompt="2+2", answer="4"))
    (1.2, 0.2)
    """

    def __init__(self, terms: list[tuple[float, str, Reward]]):
        self.terms = tuple(terms)
        self.correctness: Reward = self.terms[0][2]

    def __call__(self, completion: str, sample: Sample) -> float:
        return sum(weight * float(fn(completion, sample)) for weight, _, fn in self.terms)

    def parts(self, completion: str, sample: Sample) -> dict[str, float]:
        """Each term's own reward (before its weight), by name."""
        return {name: float(fn(completion, sample)) for _, name, fn in self.terms}

    def __repr__(self) -> str:
        return "WeightedSum(" + " + ".join(f"{w:g}*{name}" for w, name, _ in self.terms) + ")"


def parse_reward(spec: str) -> list[tuple[float, str]]:
    """[(weight, name)] of a task.reward value, in the order written.

    >>> parse_reward("math + 0.2*format_soft - 1e-3*my_rewards:length")
    [(1.0, 'math'), (0.2, 'format_soft'), (-0.001, 'my_rewards:length')]
    """
    terms, pos, sign = [], 0, 1.0
    while True:
        term = _TERM.match(spec, pos)
        if term is None:
            bad = spec[pos:].strip()
            what = f"cannot read the term {bad!r}" if bad else "a term is missing at the end"
            raise ValueError(f"task.reward={spec!r}: {what}; {_GRAMMAR}")
        terms.append((sign * float(term.group(1) or 1.0), term.group(2)))
        pos = term.end()
        if pos == len(spec):
            return terms
        joint = _SIGN.match(spec, pos)
        if joint is None:
            raise ValueError(f"task.reward={spec!r}: cannot read {spec[pos:].strip()!r}; {_GRAMMAR}")
        sign, pos = (1.0 if joint.group(1) == "+" else -1.0), joint.end()


def answer_tools(spec: str):
    """(extract, same) for a task.reward: how evaluation pulls the final answer out of a response
    and decides that two answers agree (maj@k). The `math` verifier's own extraction and
    equivalence when the correctness term is `math`; else the last \\boxed{} and string equality."""
    from rlvr.rewards.exact import last_boxed

    first = parse_reward(spec)[0][1]
    if first in ("math", "math_lenient"):
        from rlvr.rewards import math as math_reward

        mode = "lenient" if first == "math_lenient" else "strict"
        return (lambda text: math_reward.extract_answer(text, mode)), math_reward.same_answer
    return last_boxed, None


def check_reward(spec: str) -> None:
    """Fail early, without importing user code, on a task.reward that cannot be resolved."""
    terms = parse_reward(spec)
    if len(terms) > 1 and terms[0][1].startswith("format_"):
        raise ValueError(f"task.reward={spec!r}: the first term is the correctness reward (accuracy, dynamic "
                         f"sampling and evaluation read it), not a format reward; write it first, e.g. "
                         f"'math + 0.2*{terms[0][1]}'")
    for _, name in terms:
        if ":" not in name and name not in REWARDS:
            close = difflib.get_close_matches(name, REWARDS.names(), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ValueError(f"task.reward={spec!r}: unknown reward {name!r}; {hint}registered: "
                             f"{', '.join(REWARDS.names())}, or your own as module:function")


def resolve(spec: str) -> Reward:
    """A registered reward by name, `package.module:function` imported from the user's code, or a
    `WeightedSum` of those ("math + 0.2*format_soft"). A single name gives the function itself."""
    terms = parse_reward(spec)
    if len(terms) == 1 and "*" not in spec:
        try:
            return _resolve_one(terms[0][1])
        except ValueError as e:
            raise ValueError(f"task.reward={spec!r}: {e}") from e.__cause__
    parts = []
    for weight, name in terms:
        try:
            parts.append((weight, name, _resolve_one(name)))
        except (KeyError, ValueError) as e:
            raise ValueError(f"task.reward={spec!r}: term {name!r}: {e.args[0]}") from None
    return WeightedSum(parts)


def _resolve_one(name: str) -> Reward:
    if ":" not in name:
        return REWARDS.get(name)
    module_name, _, attr = name.partition(":")
    import os
    import sys

    if os.getcwd() not in sys.path and "" not in sys.path:  # the `rlvr` command does not put it there
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r} ({e}); "
                         "make it importable (run from its folder or add it to PYTHONPATH)") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ValueError(f"module {module_name!r} has no function {attr!r}")
    return fn


def score_many(reward: Reward, completions, samples: list[Sample], reward_truncated: bool = False):
    """Score Completions: (rewards, correct, errors) -- the reward each one trains on, whether its
    correctness reward (a WeightedSum's first term, else the reward itself) is >= 1, and how many
    reward calls raised (each scores 0).

    A response cut at max_new_tokens never finished its answer, so its correctness term scores 0
    and it is not correct unless `reward_truncated`: otherwise a policy that stops emitting EOS
    after its answer keeps full reward and drifts into max-length responses (seen in the demo:
    55 -> 96 tokens within 20 steps). The other terms of a sum still count, so a format penalty
    is not escaped by running out of tokens. Training and evaluation use this one rule. A reward
    function with a `.batch` attribute (the `math` verifier) scores the whole list in one call,
    in parallel."""
    texts = [c.text for c in completions]
    terms = reward.terms if isinstance(reward, WeightedSum) else ((1.0, "", reward),)
    cut = [c.finish_reason == "length" and not reward_truncated for c in completions]
    total, correct, errors = [0.0] * len(texts), [False] * len(texts), 0
    for t, (weight, _, fn) in enumerate(terms):
        values, bad = _score_list(fn, texts, samples)
        errors += bad
        if t == 0:  # the correctness term
            values = [0.0 if c else v for v, c in zip(values, cut)]
            correct = [v >= 1 for v in values]
        total = [x + weight * v for x, v in zip(total, values)]
    return total, correct, errors


def _score_list(fn: Reward, texts: list[str], samples: list[Sample]) -> tuple[list[float], int]:
    batch = getattr(fn, "batch", None)
    if batch is not None:
        try:
            got = batch(texts, samples)
            values = [float(v) for v in got]
            if len(values) == len(texts):
                bad = [not isfinite(v) for v in values]
                values = [0.0 if b else v for v, b in zip(values, bad)]
                # checks that timed out or failed in a worker scored 0: counted like a reward that raised
                return values, sum(bad) + getattr(got, "failures", 0)
        except Exception:  # noqa: BLE001 - fall back to one call each, which isolates the bad input
            pass
    scored = [safe_score(fn, t, s) for t, s in zip(texts, samples)]
    return [v for v, _ in scored], sum(not ok for _, ok in scored)


def safe_score(reward: Reward, text: str, sample: Sample) -> tuple[float, bool]:
    """(score, ok): the reward's float, or (0.0, False) when it raised or returned a non-number
    (NaN and infinities included: they would poison every advantage of the batch). A verifier
    whose workers cannot start (WorkerStartError) is no bad input: it raises."""
    try:
        value = float(reward(text, sample))
    except WorkerStartError:
        raise
    except Exception:  # noqa: BLE001 - a reward bug must cost a score of 0, not the run
        return 0.0, False
    return (value, True) if isfinite(value) else (0.0, False)
