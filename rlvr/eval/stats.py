"""Statistics for comparing two evaluation runs of the same model family on the same problems.

Accuracy on n problems is a binomial proportion, so it gets a Wilson score interval
(Wilson 1927), which keeps close to nominal coverage at small n and near 0 or 1 where the
textbook Wald interval does not. Two greedy runs on the *same* problems are paired data:
only the problems whose outcome flipped carry information about which run is better, so
they are compared with McNemar's exact test and Newcombe's paired-difference interval.

Sampled evaluation (k samples per problem, several training seeds) adds the estimators of
Chen et al. 2021 (pass@k), avg@k and maj@k, a two-level bootstrap over seeds and problems,
and a paired bootstrap / sign-flip permutation comparison of two runs on the same problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np


def _z(confidence: float) -> float:
    """Two-sided standard normal quantile, e.g. 1.95996 for confidence 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes / n; n == 0 gives (0.0, 1.0).

    successes may be fractional: the sum of n scores in [0, 1] (e.g. avg@k). The interval only
    uses the variance p(1 - p) / n of the mean, and a [0, 1] score of mean p has variance at most
    p(1 - p), the Bernoulli's, so for such scores it is conservative (exact form for 0/1 ones).

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


_P_LEVELS = (0.1, 0.05, 0.01, 0.001)  # the levels a reader compares a p-value with


def format_p(p: float) -> str:
    """A p-value for a sentence: "p = 0.41", "p = 0.0031", "p = 3.2e-5", "p < 1e-6".

    Two significant digits, or more where two would round across a level in _P_LEVELS: 0.0498
    prints "p = 0.0498", not "p = 0.050" (which reads as not significant at 0.05), and 0.00999
    "p = 0.00999"; 0.01006 stays "p = 0.010", on the same side of 0.01 as p.

    >>> format_p(0.0498), format_p(0.00999), format_p(0.41)
    ('p = 0.0498', 'p = 0.00999', 'p = 0.41')
    """
    if p < 1e-6:
        return "p < 1e-6"
    for digits in range(2, 18):
        if p < 1e-3:
            mantissa, exponent = f"{p:.{digits - 1}e}".split("e")
            text = f"{mantissa}e{int(exponent)}"
        else:
            text = f"{p:#.{digits}g}"  # "#": keep trailing zeros, 0.01006 -> "0.010", not "0.01"
        shown = float(text)
        if all((shown < level) == (p < level) for level in _P_LEVELS):
            return f"p = {text}"
    return f"p = {text}"  # 17 significant digits: float(text) == p, so this is never reached


def _head(difference: float, ci95: tuple[float, float], p_value: float, alpha: float,
          first: str, second: str) -> str:
    """The start of a verdict: a run is better only when the test (p < alpha) and the 95% CI
    (excluding 0) both say so. The test and the interval are different procedures (McNemar's
    exact test vs Newcombe's interval; a sign-flip test vs a percentile bootstrap), so near the
    edge one can reject while the other does not; the sentence then says which, instead of
    printing a headline that its own CI contradicts."""
    ahead = second if difference > 0 else first
    by_test = p_value < alpha
    by_ci = ci95[0] > 0 or ci95[1] < 0
    if by_test and by_ci:
        return f"{ahead} is better"
    if by_ci:
        return f"borderline, {ahead} ahead (the 95% CI excludes 0 but p >= {alpha:g})"
    if by_test:
        return f"borderline, {ahead} ahead (p < {alpha:g} but the 95% CI includes 0)"
    return "no significant difference"


def verdict(result: McNemarResult, alpha: float = 0.05, before: str = "before", after: str = "after") -> str:
    """One sentence: which run is better, by how much, and how sure.

    "AFTER is better" (or "BEFORE is better") only when McNemar's p < alpha and the 95% CI
    printed beside it excludes 0; "borderline, X ahead (...)" when only one of them does;
    otherwise "no significant difference". alpha = 0.05 is the level of that 95% CI.
    """
    head = _head(result.difference, result.ci95, result.p_value, alpha, before, after)
    lo, hi = result.ci95
    return (f"{head}: {100 * result.difference:+.1f} points "
            f"(95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), "
            f"McNemar exact {format_p(result.p_value)}, n = {result.n}")


# --------------------------------------------------------------------------------------
# Sampled evaluation: k samples per problem.


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, arXiv 2107.03374).

    pass@k = 1 - C(n-c, k) / C(n, k): one minus the chance that k samples drawn without
    replacement from the n are all wrong. The ratio of binomials is evaluated as the product
    prod_{i=n-c+1..n} (1 - k / i), every factor in (0, 1), so nothing overflows for n in the
    thousands (C(10000, 5000) has ~3000 digits). It is 1.0 when fewer than k samples are wrong.

    >>> pass_at_k(5, 2, 2)  # 1 - C(3, 2) / C(5, 2) = 1 - 3/10
    0.7
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def avg_at_k(correct: Sequence[bool]) -> float:
    """avg@k of one problem: the fraction of its k samples that are correct, i.e. mean pass@1.

    Equal to pass_at_k(k, sum(correct), 1); averaged over problems it is the expected
    accuracy of one sample, with less variance than scoring a single sample per problem.
    """
    if len(correct) == 0:
        raise ValueError("correct is empty: no samples to average")
    return sum(1 for x in correct if x) / len(correct)


def _strip_equal(x: str, y: str) -> bool:
    """Default answer equivalence: equal after stripping surrounding whitespace."""
    return x.strip() == y.strip()


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool],
                  same: Callable[[str, str], bool] | None = None) -> tuple[str | None, bool]:
    """maj@k of one problem (self-consistency voting, Wang et al. 2022, arXiv 2203.11171).

    answers[i] is the answer extracted from sample i (None when nothing could be extracted:
    such samples never vote) and correct[i] its verdict. Answers are grouped with the
    `same` predicate (default: equal after .strip()), not by hashing, so an equivalence
    such as "0.5" ~ "1/2" can group answers whose strings differ. Each answer joins the
    first group whose representative (its earliest member, kept verbatim) satisfies
    same(representative, answer); otherwise it opens a new group. The largest group wins,
    ties going to the group that appeared first. Returns (representative, correct flag of
    that representative); (None, False) when no sample has an answer.

    >>> majority_vote(["4", None, " 5", "5"], [False, False, True, True])
    (' 5', True)
    """
    if len(answers) != len(correct):
        raise ValueError(f"answers and correct must describe the same samples: "
                         f"got {len(answers)} and {len(correct)}")
    same = _strip_equal if same is None else same
    groups: list[list] = []  # [representative, its correct flag, votes], by first occurrence
    for answer, ok in zip(answers, correct):
        if answer is None:
            continue
        for group in groups:
            if same(group[0], answer):
                group[2] += 1
                break
        else:
            groups.append([answer, bool(ok), 1])
    if not groups:
        return None, False
    best = groups[0]
    for group in groups[1:]:
        if group[2] > best[2]:  # strict: an equal count keeps the earlier group
            best = group
    return best[0], best[1]


# --------------------------------------------------------------------------------------
# Bootstrap over seeds and problems.


def _as_seeds_by_problems(scores, name: str) -> np.ndarray:
    """scores as a float [seeds, problems] matrix; a 1-D array is one seed."""
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name} must be [problems] or [seeds, problems], got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty: need at least one seed and one problem")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has NaN or infinite entries")
    return x


def _resampled_means(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot means of x [S, P] after resampling its columns and, independently, its rows.

    Columns are drawn first, so with S == 1 the draws (and results) are exactly those of the
    ordinary one-level bootstrap of x[0]. The mean of the resampled S x P matrix x[r][:, c]
    is mean_j m[c_j] with m[j] = mean_i x[r_i, j], and m is the row-count-weighted mean of
    x, so nothing of size n_boot x S x P is built.
    """
    s, p = x.shape
    cols = rng.integers(0, p, size=(n_boot, p))  # [B, P]
    if s == 1:
        return x[0][cols].mean(axis=1)  # [B]
    rows = rng.integers(0, s, size=(n_boot, s))  # [B, S]
    offsets = s * np.arange(n_boot)[:, None]  # [B, 1]
    counts = np.bincount((rows + offsets).ravel(), minlength=n_boot * s).reshape(n_boot, s)
    col_means = counts @ x / s  # [B, P]: column means over the resampled seeds
    return np.take_along_axis(col_means, cols, axis=1).mean(axis=1)  # [B]


def _check_boot(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def bootstrap_ci(scores: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean score with a percentile bootstrap interval over both seeds and problems.

    scores: [seeds, problems] per-problem scores (e.g. avg@k, in [0, 1]) of the same problems
    under independent training or sampling seeds; a 1-D [problems] array is one seed.
    Returns (mean, low, high), mean being scores.mean().

    A reported accuracy is uncertain for two separate reasons. The problems are a sample
    from the task distribution, so a different benchmark draw would score differently; and
    a run is one draw of seed-dependent training and decoding, which "A Sober Look at
    Progress in LM Reasoning" (Hochlehnert et al. 2025, arXiv 2504.07086) finds moves
    accuracy on small benchmarks by several points from seed to seed. Resampling only problems ignores the
    second; resampling only seeds the first. Each replicate therefore resamples problems
    (columns) and seeds (rows) independently with replacement and takes the mean of the
    resampled matrix: the pigeonhole bootstrap of Owen (Ann. Appl. Stat. 2007;1:386), mildly
    conservative for crossed random effects. With one seed it is the ordinary problem
    bootstrap, draw for draw. With few seeds (2-3) the seed part is itself poorly estimated.
    """
    _check_boot(n_boot, confidence)
    x = _as_seeds_by_problems(scores, "scores")
    means = _resampled_means(x, n_boot, np.random.default_rng(seed))  # [B]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(x.mean()), float(low), float(high)


@dataclass(frozen=True)
class PairedResult:
    """Comparison of runs A and B on the same problems (and the same number of seeds)."""

    difference: float  # mean(B) - mean(A), in score units (x 100 = points for accuracy)
    ci95: tuple[float, float]  # paired bootstrap 95% percentile CI for `difference`
    p_value: float  # two-sided paired sign-flip permutation p-value
    n_problems: int
    n_seeds: int
    test: str  # "exact paired permutation" (all 2^n flips) or "paired permutation" (random)


_EXACT_FLIPS_MAX = 16  # enumerate all 2^n sign flips up to n = 16 problems (65,536 rows)


def _sign_flip_p(d: np.ndarray, n_perm: int, rng: np.random.Generator) -> tuple[float, bool]:
    """Two-sided sign-flip p-value for mean(d) == 0; returns (p, exact).

    Under H0 (A and B exchangeable on each problem) every per-problem difference is as
    likely to have either sign. n <= 16: all 2^n flips, p = #{|flipped sum| >= |sum|} / 2^n
    (the identity is one of them). Otherwise n_perm random flips and
    p = (1 + #{...}) / (1 + n_perm), which is never 0 (Phipson & Smyth, SAGMB 2010;9:39).
    A relative slack of 1e-9 counts flips that tie with the observed sum up to rounding.
    """
    n = d.shape[0]
    observed = abs(float(d.sum()))
    threshold = observed - 1e-9 * float(np.abs(d).sum())
    if n <= _EXACT_FLIPS_MAX:
        bits = (np.arange(1 << n)[:, None] >> np.arange(n)) & 1  # [2^n, n]
        sums = (1 - 2 * bits) @ d  # [2^n]
        return float(np.count_nonzero(np.abs(sums) >= threshold)) / (1 << n), True
    hits = 0
    chunk = max(1, (1 << 22) // n)  # bound the [chunk, n] sign matrix to ~32 MB
    for start in range(0, n_perm, chunk):
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(min(chunk, n_perm - start), n))
        hits += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
    return (1 + hits) / (1 + n_perm), False


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 10000,
                     seed: int = 0) -> PairedResult:
    """Is run B better than run A on the same problems? Difference, paired CI and p-value.

    a, b: per-problem scores, [problems] or [seeds, problems], same shape, same problems in
    the same order (column j of both is problem j). The interval resamples problems (and
    seeds when 2-D) with the same indices for a and b, so each problem's difficulty cancels
    in b - a, as in McNemar's test; it is bootstrap_ci of b - a. The p-value is a paired
    sign-flip permutation test on the per-problem differences averaged over seeds (n_boot
    random flips, or all 2^n when n <= 16 problems), the randomisation test of Fisher (The
    Design of Experiments, 1935). On 0/1 scores with one seed the differences are -1, 0, +1
    and it is the exact sign test, i.e. McNemar's exact p-value (exactly so for n <= 16,
    up to Monte Carlo error above).
    """
    _check_boot(n_boot, 0.95)
    xa, xb = _as_seeds_by_problems(a, "a"), _as_seeds_by_problems(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(f"a and b must score the same problems and seeds: "
                         f"got shapes {np.shape(a)} and {np.shape(b)}")
    diff = xb - xa  # [S, P]
    rng = np.random.default_rng(seed)
    means = _resampled_means(diff, n_boot, rng)  # [B]
    low, high = np.quantile(means, [0.025, 0.975])
    p_value, exact = _sign_flip_p(diff.mean(axis=0), n_boot, rng)
    return PairedResult(difference=float(xb.mean() - xa.mean()), ci95=(float(low), float(high)),
                        p_value=p_value, n_problems=diff.shape[1], n_seeds=diff.shape[0],
                        test="exact paired permutation" if exact else "paired permutation")


def paired_verdict(result: PairedResult, a_name: str = "A", b_name: str = "B",
                   alpha: float = 0.05) -> str:
    """One sentence in the words of `verdict`: which run is better (when the permutation test at
    alpha and the paired bootstrap 95% CI both say so, "borderline" when only one does), by how
    many points, the 95% CI, the p-value and the sample size."""
    head = _head(result.difference, result.ci95, result.p_value, alpha, a_name, b_name)
    lo, hi = result.ci95
    n = f"n = {result.n_problems} problems"
    if result.n_seeds > 1:
        n += f" x {result.n_seeds} seeds"
    return (f"{head}: {100 * result.difference:+.1f} points "
            f"(95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), "
            f"{result.test} {format_p(result.p_value)}, {n}")
