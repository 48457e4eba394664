"""Statistics for comparing two evaluation runs of the same model family on the same problems.

Accuracy on n problems is a binomial proportion, so it gets a Wilson score interval
(Wilson 1927), which keeps close to nominal coverage at small n and near 0 or 1 where the
textbook Wald interval does not. Two greedy runs on the *same* problems are paired data:
only the problems whose outcome flipped carry information about which run is better, so
they are compared with McNemar's exact test and Newcombe's paired-difference interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Sequence


def _z(confidence: float) -> float:
    """Two-sided standard normal quantile, e.g. 1.95996 for confidence 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes / n; n == 0 gives (0.0, 1.0).

    >>> lo, hi = wilson_interval(8, 10)
    >>> round(lo, 4), round(hi, 4)
    (0.4902, 0.9433)
    """
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    z = _z(confidence)
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At 0 or n successes the exact bound is 0 or 1; avoid returning 1e-17 from rounding.
    lo = 0.0 if successes == 0 else center - half
    hi = 1.0 if successes == n else center + half
    return lo, hi


def _binom_half_cdf(k: int, m: int) -> float:
    """P(X <= k) for X ~ Bin(m, 1/2), exact: integer sum of C(m, i), one rounding at the end.

    Python integers are unbounded and int / int is correctly rounded, so this neither
    overflows nor loses precision for m in the many thousands (it underflows to 0.0 only
    below ~1e-308).
    """
    term = total = 1  # C(m, 0)
    for i in range(k):
        term = term * (m - i) // (i + 1)  # C(m, i+1), exact division
        total += term
    return total / (1 << m)


@dataclass(frozen=True)
class McNemarResult:
    """Paired comparison of two runs on the same n problems."""

    n: int  # problems scored by both runs
    before_correct: int  # problems the first run got right
    after_correct: int  # problems the second run got right
    b: int  # lost: right before, wrong after
    c: int  # gained: wrong before, right after
    difference: float  # after accuracy - before accuracy, = (c - b) / n
    ci95: tuple[float, float]  # 95% CI for `difference` (Newcombe 1998, method 10)
    p_value: float  # two-sided McNemar exact p-value


def mcnemar_exact(before: Sequence[bool], after: Sequence[bool]) -> McNemarResult:
    """McNemar's exact test: under H0 each discordant pair is a fair coin, b ~ Bin(b + c, 1/2)."""
    if len(before) != len(after):
        raise ValueError(f"before and after must score the same problems: "
                         f"got {len(before)} and {len(after)} outcomes")
    if len(before) == 0:
        raise ValueError("before and after are empty: nothing to compare")
    n = len(before)
    both = sum(1 for x, y in zip(before, after) if x and y)
    b = sum(1 for x, y in zip(before, after) if x and not y)
    c = sum(1 for x, y in zip(before, after) if y and not x)
    neither = n - both - b - c
    m = b + c
    p_value = 1.0 if m == 0 else min(1.0, 2.0 * _binom_half_cdf(min(b, c), m))

    # Newcombe (Stat Med 1998;17:2635, method 10): combine the Wilson intervals of the two
    # marginal accuracies, with the phi correlation between runs correcting for pairing
    # (phi = 0 when a margin is degenerate, as in the paper).
    p1, p2 = (both + b) / n, (both + c) / n
    l1, u1 = wilson_interval(both + b, n)
    l2, u2 = wilson_interval(both + c, n)
    margins = (both + b) * (c + neither) * (both + c) * (b + neither)
    phi = (both * neither - b * c) / math.sqrt(margins) if margins else 0.0
    d = p2 - p1
    down = math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    up = math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return McNemarResult(n=n, before_correct=both + b, after_correct=both + c, b=b, c=c,
                         difference=d, ci95=(d - down, d + up), p_value=p_value)


def format_p(p: float) -> str:
    """A p-value for a sentence: "p = 0.41", "p = 0.0031", "p = 3.2e-5", "p < 1e-6"."""
    if p < 1e-6:
        return "p < 1e-6"
    if p < 1e-3:
        mantissa, exponent = f"{p:.1e}".split("e")
        return f"p = {mantissa}e{int(exponent)}"
    return f"p = {p:.2g}"


def verdict(result: McNemarResult, alpha: float = 0.01) -> str:
    """One sentence: which run is better (if significant at alpha), by how much, and how sure."""
    if result.p_value < alpha:
        head = "after is better" if result.difference > 0 else "before is better"
    else:
        head = "no significant difference"
    lo, hi = result.ci95
    return (f"{head}: {100 * result.difference:+.1f} points "
            f"(95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), "
            f"McNemar exact {format_p(result.p_value)}, n = {result.n}")
