"""Failure-mode checks over an RL run's metric rows (metrics.jsonl), the ones the RLVR papers
warn about: response-length blow-up, entropy collapse, truncation rising, reward rising while
held-out accuracy falls, and reward hacking (reward up, correctness flat).

Each check is a small pure function over the rows: it returns None or a Flag with the step
where the problem began, judged on a centred rolling mean (WINDOW steps) against the mean of
the first EARLY_STEPS steps. `run_checks` runs them all and says which could not be checked.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from itertools import accumulate
from statistics import fmean
from typing import Callable

WINDOW = 10  # rolling-mean width: one batch's reward jumps ±5-10 points step to step (demo); 10 steps cut that ~3x
EARLY_STEPS = 10  # the baseline every check compares with: the mean of the first 10 logged steps
MIN_STEPS = EARLY_STEPS + WINDOW  # fewer steps than this: too short to tell a trend from noise
# Length: on a fixed task the answer needs no more tokens as training goes on; healthy runs here
# drift by ±10%, the EOS-dropping failure in the README went 55 -> 96 tokens (1.75x).
LENGTH_BLOWUP_RATIO = 1.5
# Entropy: it falls slowly in a healthy run; at a quarter of its start the policy samples
# nearly one answer per prompt and group-relative advantages vanish (DAPO, arXiv 2503.14476 sec. 3.1).
ENTROPY_COLLAPSE_RATIO = 0.25
# Truncation: a truncated response scores 0 whatever it says, so a tenth of the batch lost to the
# cap is a real signal; the 2x-of-early condition keeps a run that always truncated 10% quiet.
TRUNCATION_MIN_RATE = 0.10
TRUNCATION_RATIO = 2.0
# Held-out: 3 points is about two standard errors of an accuracy near 70% on 1,000 problems.
HELDOUT_DROP = 0.03
# Hacking: +0.1 mean reward is a clear gain for a 0/1 task reward; if correctness moved less than
# 2 points meanwhile, the gain came from shaping terms or a loophole in the reward, not from solving.
HACKING_REWARD_RISE = 0.10
HACKING_ACCURACY_RISE = 0.02

LENGTH, ENTROPY, TRUNCATION, HELDOUT, HACKING = (
    "length blow-up", "entropy collapse", "truncation rise", "held-out decline", "reward hacking")


@dataclass(frozen=True)
class Flag:
    name: str  # one of the check names above
    step: int  # the step where the problem began
    message: str  # one sentence with the numbers behind it


# ---------------------------------------------------------------------------- series

def series(rows: list[dict], *keys: str) -> tuple[list[int], list[list[float]]]:
    """Steps and one value list per key, from the rows where every key holds a finite number
    (a PPO warm-up row has no entropy; non-finite values are logged as null).

    >>> series([{"step": 1, "a": 2.0}, {"step": 2}, {"step": 3, "a": None}, {"step": 4, "a": 5}], "a")
    ([1, 4], [[2.0, 5.0]])
    """
    steps, values = [], [[] for _ in keys]
    for i, row in enumerate(rows):
        vals = [row.get(k) for k in keys]
        if all(is_number(v) for v in vals):
            steps.append(row["step"] if is_number(row.get("step")) else i + 1)
            for column, v in zip(values, vals):
                column.append(float(v))
    return steps, values


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def rolling_mean(values: list[float], window: int = WINDOW) -> list[float]:
    """Centred rolling mean, partial windows at the ends: a change shows at the step it happened,
    not half a window later as with a trailing mean.

    >>> rolling_mean([0, 0, 3, 3], window=2)
    [0.0, 1.5, 3.0, 3.0]
    """
    total = [0.0, *accumulate(values)]
    n, out = len(values), []
    for i in range(n):
        lo, hi = max(0, i - (window - 1) // 2), min(n, i + window // 2 + 1)
        out.append((total[hi] - total[lo]) / (hi - lo))
    return out


def _first_step(steps: list[int], hits: list[bool]) -> int | None:
    """The first step after the early baseline where `hits` holds."""
    return next((s for s, h in zip(steps[EARLY_STEPS:], hits[EARLY_STEPS:]) if h), None)


def _onset(rows: list[dict], key: str, hit: Callable[[float, float], bool]) -> tuple[int, float, float] | None:
    """(step, early mean, last rolling value) for the first step after the baseline where
    hit(rolling value, early mean) holds; None if it never does or the run is too short."""
    steps, (values,) = series(rows, key)
    if len(steps) < MIN_STEPS:
        return None
    base, smooth = fmean(values[:EARLY_STEPS]), rolling_mean(values)
    step = _first_step(steps, [hit(v, base) for v in smooth])
    return None if step is None else (step, base, smooth[-1])


def summarize(values: list[float]) -> dict:
    """First and last full-window rolling means (the first/last WINDOW values), min and max."""
    return {"n": len(values), "first": fmean(values[:WINDOW]), "last": fmean(values[-WINDOW:]),
            "min": min(values), "max": max(values)}


# ---------------------------------------------------------------------------- checks

def check_length_blowup(rows: list[dict]) -> Flag | None:
    """Rolling mean response length above LENGTH_BLOWUP_RATIO x its early mean."""
    found = _onset(rows, "length_mean", lambda v, base: v > LENGTH_BLOWUP_RATIO * base)
    if found is None:
        return None
    step, base, end = found
    return Flag(LENGTH, step, f"mean response length passed {LENGTH_BLOWUP_RATIO}x its early {base:.1f} tokens "
                              f"at step {step}; {end:.1f} at the end")


def check_entropy_collapse(rows: list[dict]) -> Flag | None:
    """Rolling mean entropy below ENTROPY_COLLAPSE_RATIO x its early mean."""
    found = _onset(rows, "entropy", lambda v, base: v < ENTROPY_COLLAPSE_RATIO * base)
    if found is None:
        return None
    step, base, end = found
    return Flag(ENTROPY, step, f"policy entropy fell below {ENTROPY_COLLAPSE_RATIO}x its early {base:.3g} "
                               f"at step {step}; {end:.3g} at the end")


def check_truncation_rise(rows: list[dict]) -> Flag | None:
    """Rolling truncation rate above TRUNCATION_MIN_RATE and above TRUNCATION_RATIO x early."""
    found = _onset(rows, "truncated", lambda v, base: v > TRUNCATION_MIN_RATE and v > TRUNCATION_RATIO * base)
    if found is None:
        return None
    step, base, end = found
    return Flag(TRUNCATION, step, f"over {100 * TRUNCATION_MIN_RATE:.0f}% of responses hit the length cap from "
                                  f"step {step} (early {100 * base:.1f}%, {100 * end:.1f}% at the end)")


def check_reward_hacking(rows: list[dict]) -> Flag | None:
    """Rolling reward up by HACKING_REWARD_RISE from early while rolling accuracy (the task reward
    alone) rose less than HACKING_ACCURACY_RISE."""
    steps, (reward, accuracy) = series(rows, "reward", "accuracy")
    if len(steps) < MIN_STEPS:
        return None
    r0, a0 = fmean(reward[:EARLY_STEPS]), fmean(accuracy[:EARLY_STEPS])
    smooth = list(zip(rolling_mean(reward), rolling_mean(accuracy)))
    step = _first_step(steps, [r - r0 >= HACKING_REWARD_RISE and a - a0 < HACKING_ACCURACY_RISE for r, a in smooth])
    if step is None:
        return None
    r, a = smooth[steps.index(step)]
    return Flag(HACKING, step, f"reward rose {r - r0:+.3f} by step {step} while accuracy moved {a - a0:+.3f}: "
                               "the gain is not in correctness")


def check_heldout_decline(rows: list[dict]) -> Flag | None:
    """The last periodic held-out accuracy is HELDOUT_DROP or more below its best while the
    rolling reward is above its value at the best step. The flag's step is the first eval after
    the best where both held."""
    h_steps, (heldout,) = series(rows, "heldout_accuracy")
    r_steps, (reward,) = series(rows, "reward")
    if len(h_steps) < 2 or not r_steps:
        return None
    smooth = dict(zip(r_steps, rolling_mean(reward)))
    best = max(range(len(heldout)), key=heldout.__getitem__)
    ref = smooth.get(h_steps[best], math.inf)

    def declined(i: int) -> bool:
        return heldout[best] - heldout[i] >= HELDOUT_DROP - 1e-9 and smooth.get(h_steps[i], -math.inf) > ref

    if not declined(len(heldout) - 1):
        return None
    i = next(i for i in range(best + 1, len(heldout)) if declined(i))
    return Flag(HELDOUT, h_steps[i], f"held-out accuracy {100 * heldout[-1]:.1f}% at the end, best "
                                     f"{100 * heldout[best]:.1f}% at step {h_steps[best]}, while the training "
                                     f"reward kept rising (down from step {h_steps[i]})")


@dataclass(frozen=True)
class Check:
    name: str
    keys: tuple[str, ...]  # metrics it needs
    min_points: int  # rows holding them, for a verdict
    rule: str  # the threshold, in words, for the report
    fn: Callable[[list[dict]], Flag | None]


CHECKS = [
    Check(LENGTH, ("length_mean",), MIN_STEPS,
          f"rolling mean length > {LENGTH_BLOWUP_RATIO}x its mean over the first {EARLY_STEPS} steps",
          check_length_blowup),
    Check(ENTROPY, ("entropy",), MIN_STEPS, f"rolling mean entropy < {ENTROPY_COLLAPSE_RATIO}x its early mean",
          check_entropy_collapse),
    Check(TRUNCATION, ("truncated",), MIN_STEPS,
          f"rolling truncation rate > {TRUNCATION_MIN_RATE:.0%} and > {TRUNCATION_RATIO:g}x its early rate",
          check_truncation_rise),
    Check(HELDOUT, ("heldout_accuracy",), 2,
          f"last periodic held-out accuracy >= {100 * HELDOUT_DROP:.0f} points below its best while the rolling "
          "reward is above its value at that best step",
          check_heldout_decline),
    Check(HACKING, ("reward", "accuracy"), MIN_STEPS,
          f"rolling reward up >= {HACKING_REWARD_RISE} from early while accuracy up < {HACKING_ACCURACY_RISE}",
          check_reward_hacking),
]


def run_checks(rows: list[dict]) -> list[dict]:
    """Every check's outcome: flagged (with the Flag), none detected, or not checked (and why)."""
    out = []
    for check in CHECKS:
        n = len(series(rows, *check.keys)[0])
        flag = check.fn(rows)
        if flag:
            status, detail = "flagged", flag.message
        elif n >= check.min_points:
            status, detail = "none detected", ""
        else:
            status, detail = "not checked", f"needs {' and '.join(check.keys)} on {check.min_points}+ steps, found {n}"
        out.append({"name": check.name, "rule": check.rule, "status": status, "detail": detail,
                    "flag": asdict(flag) if flag else None})
    return out
