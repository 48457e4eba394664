import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from rlvr.eval.stats import (PairedResult, avg_at_k, bootstrap_ci, majority_vote, mcnemar_exact,
                             paired_bootstrap, paired_verdict, pass_at_k)


# --- pass@k, avg@k --------------------------------------------------------------------


def test_pass_at_k_hand_computed():
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-15)
    # k=1 is the plain fraction correct: 1 - (n-c)/n = c/n = 3/8
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8, abs=1e-15)
    # n=10, c=1, k=5: 1 - C(9,5)/C(10,5) = 1 - 126/252 = 0.5 (half the 5-subsets hold it)
    assert pass_at_k(10, 1, 5) == pytest.approx(0.5, abs=1e-15)
    assert pass_at_k(4, 0, 2) == 0.0  # nothing correct: no subset passes
    assert pass_at_k(4, 3, 2) == 1.0  # only 1 wrong sample: every 2-subset has a correct one
    assert pass_at_k(4, 4, 4) == 1.0


def test_pass_at_k_matches_enumeration():
    # Samples 0..c-1 are the correct ones; pass@k is the share of the C(n, k) equally likely
    # k-subsets that contain at least one of them. 4096 subsets in all for n <= 8.
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                hit = sum(1 for s in subsets if min(s) < c)
                assert pass_at_k(n, c, k) == pytest.approx(hit / len(subsets), abs=1e-12), (n, c, k)


def test_pass_at_k_large_n_is_stable():
    # C(10000, 5000) ~ 1e3008 overflows a float; the product form must not. With 3 correct of
    # 10000 and k = 5000, C(9997,5000)/C(10000,5000) = (5000*4999*4998)/(10000*9999*9998)
    # = 0.124962..., close to (1/2)^3: pass@k = 0.875037...
    exact = 1 - Fraction(math.comb(9997, 5000), math.comb(10000, 5000))
    assert pass_at_k(10000, 3, 5000) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(10000, 3, 5000) == pytest.approx(1 - 5000 * 4999 * 4998 / (10000 * 9999 * 9998),
                                                      rel=1e-12)
    exact = 1 - Fraction(math.comb(900, 100), math.comb(1000, 100))
    assert pass_at_k(1000, 100, 100) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(5, 2, 0), (5, 2, 6), (5, -1, 2), (5, 6, 2), (0, 0, 1)])
def test_pass_at_k_rejects_bad_input(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_at_k():
    assert avg_at_k([True, False, True, True]) == 0.75
    assert avg_at_k([False] * 5) == 0.0
    # mean pass@1: 3 of 8 right -> 3/8, the same as pass_at_k(8, 3, 1)
    flags = [True, False, False, True, False, True, False, False]
    assert avg_at_k(flags) == pytest.approx(pass_at_k(8, 3, 1), abs=1e-15)
    with pytest.raises(ValueError, match="empty"):
        avg_at_k([])


# --- maj@k ----------------------------------------------------------------------------

# Numeric equivalence that string equality misses: "1/2", "0.5" and "2/4" are one value.
VALUE = {"1/2": Fraction(1, 2), "0.5": Fraction(1, 2), "2/4": Fraction(1, 2), "3": Fraction(3)}


def same_number(x: str, y: str) -> bool:
    return VALUE[x] == VALUE[y]


def brute_majority(answers, correct, same):
    """Independent reference: count each sample's votes (samples equivalent to it) and take
    the earliest sample among those with the most votes; for an equivalence relation that is
    the first member of the first of the largest groups."""
    votes = [sum(1 for y in answers if y is not None and same(x, y)) if x is not None else 0
             for x in answers]
    if max(votes, default=0) == 0:
        return None, False
    i = votes.index(max(votes))
    return answers[i], correct[i]


def test_a_cut_off_response_does_not_vote_in_maj_at_k():
    """A response cut at max_new_tokens scores 0 and gives no answer, whatever text could be
    pulled out of it. Here the cut copy of the right answer "5" came first: voting with it made
    the "5" group take its flag (wrong) and maj@3 0; without it "5" and "4" tie on one vote each,
    and "5", first, wins."""
    from rlvr.eval.evaluate import _Problem

    p = _Problem(correct=[False, True, False], answers=["5", "5", "4"], lengths=[96, 20, 20],
                 truncated=[True, False, False], mean_logprobs=[-0.1, -0.2, -0.3])
    assert p.metrics(None)["maj@3"] == 1.0
    cut_wrong = _Problem(correct=[False, False, True], answers=["4", "4", "5"], lengths=[96, 96, 20],
                         truncated=[True, True, False], mean_logprobs=[-0.1, -0.2, -0.3])
    assert cut_wrong.metrics(None)["maj@3"] == 1.0  # two cut "4"s do not outvote a finished "5"


def test_majority_vote_hand_computed():
    # "0.5" and "1/2" are one group of 2, "3" a group of 2, Nones never vote: a tie, and the
    # "0.5" group appeared first, so it wins with its first member's flag (True).
    answers = ["0.5", "3", "1/2", None, "3", None, None]
    correct = [True, False, True, False, False, False, False]
    assert majority_vote(answers, correct, same_number) == ("0.5", True)
    # String equality splits "0.5" / "1/2": "3" (2 votes) beats two singletons.
    assert majority_vote(answers, correct) == ("3", False)
    # Default equality strips whitespace; the representative is kept verbatim.
    assert majority_vote([" 7", "8", "7\n"], [True, False, True]) == (" 7", True)
    # The group's flag is its first member's, even if a later member was marked otherwise.
    assert majority_vote(["2/4", "1/2", "3"], [False, True, True], same_number) == ("2/4", False)
    assert majority_vote([None, None], [False, False]) == (None, False)
    assert majority_vote([], []) == (None, False)
    with pytest.raises(ValueError, match="same samples"):
        majority_vote(["1"], [True, False])


def test_majority_vote_matches_brute_force():
    # Every sequence of up to 5 answers over 5 symbols (3,905 sequences), under both
    # predicates. Flags: a value is right when it equals 1/2 ("0.5" ~ "1/2" ~ "2/4").
    symbols = ["1/2", "0.5", "2/4", "3", None]
    checked = 0
    for length in range(1, 6):
        for answers in itertools.product(symbols, repeat=length):
            correct = [a is not None and VALUE[a] == Fraction(1, 2) for a in answers]
            assert majority_vote(answers, correct, same_number) == \
                brute_majority(answers, correct, same_number), answers
            assert majority_vote(answers, correct) == \
                brute_majority(answers, correct, lambda x, y: x == y), answers
            checked += 1
    assert checked == 5 + 25 + 125 + 625 + 3125


def test_majority_vote_uses_the_predicate_not_hashing():
    # A predicate that no hash could reproduce: equal up to case.
    calls = []

    def same_ci(x, y):
        calls.append((x, y))
        return x.lower() == y.lower()

    assert majority_vote(["b", "A", "a", "B", "a"], [False, True, True, False, True],
                         same_ci) == ("A", True)
    assert calls  # the predicate was consulted


# --- bootstrap_ci ---------------------------------------------------------------------


def test_bootstrap_coverage_one_seed():
    # 1,500 independent data sets of 200 Bernoulli(0.3) problems, one 400-replicate percentile
    # bootstrap each. The bootstrap variance is p(1-p)/n, like the Wald interval, whose exact
    # coverage at n = 200, p = 0.3 is ~0.94-0.95; the Monte Carlo standard error with 1,500
    # draws is sqrt(0.95 * 0.05 / 1500) = 0.0056, so [0.93, 0.97] is ~3 SE either side.
    p, problems, draws = 0.3, 200, 1500
    data = (np.random.default_rng(7).random((draws, problems)) < p).astype(float)  # [draws, P]
    bounds = np.array([bootstrap_ci(data[i], n_boot=400, seed=i)[1:] for i in range(draws)])
    covered = (bounds[:, 0] <= p) & (p <= bounds[:, 1])  # [draws]
    assert 0.93 <= covered.mean() <= 0.97


def test_bootstrap_hand_computed():
    # 10 problems, 4 right: mean 0.4. The interval lies inside [0, 1] around it; a wider
    # confidence gives a wider interval.
    scores = np.array([1, 0, 0, 1, 0, 1, 0, 0, 1, 0], dtype=float)
    mean, lo, hi = bootstrap_ci(scores)
    assert mean == pytest.approx(0.4) and 0.0 <= lo < 0.4 < hi <= 1.0
    # Normal theory: sd = sqrt(0.4 * 0.6 / 10) = 0.155, so roughly 0.4 -/+ 0.30.
    assert (lo, hi) == pytest.approx((0.1, 0.7), abs=0.06)
    _, lo90, hi90 = bootstrap_ci(scores, confidence=0.9)
    assert lo <= lo90 and hi90 <= hi
    # Constant scores: every replicate equals the mean.
    assert bootstrap_ci(np.full(7, 0.25)) == (0.25, 0.25, 0.25)


def test_bootstrap_one_seed_is_the_ordinary_bootstrap():
    # A [1, P] matrix and a [P] vector are the same data, and both reproduce the plain
    # problem bootstrap draw for draw (columns are drawn first, from the same generator).
    scores = np.random.default_rng(3).random(50)
    ordinary = scores[np.random.default_rng(11).integers(0, 50, size=(300, 50))].mean(axis=1)
    expected = (scores.mean(), *np.quantile(ordinary, [0.025, 0.975]))
    assert bootstrap_ci(scores, n_boot=300, seed=11) == pytest.approx(expected, rel=1e-12)
    assert bootstrap_ci(scores[None, :], n_boot=300, seed=11) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_two_levels_sees_seed_variance():
    # Two seeds, every problem scores 0.4 under seed 0 and 0.6 under seed 1: the problems
    # agree perfectly, so averaging seeds first and resampling problems gives (0.5, 0.5).
    # Resampling seeds too gives seed means {0.4: 1/4, 0.5: 1/2, 0.6: 1/4}, whose 2.5% and
    # 97.5% quantiles are 0.4 and 0.6 (about 500 of 2,000 replicates sit at each end).
    x = np.array([[0.4] * 50, [0.6] * 50])  # [2 seeds, 50 problems]
    assert bootstrap_ci(x.mean(axis=0)) == pytest.approx((0.5, 0.5, 0.5))
    assert bootstrap_ci(x) == pytest.approx((0.5, 0.4, 0.6))


def test_bootstrap_two_levels_wider_with_seed_offsets():
    # 200 problems scoring 0.2 or 0.8 (alternating), 3 seeds shifting every score by
    # -0.1, 0, +0.1. Problems only (seed means): sd = sqrt(0.09 / 200) = 0.0212, so a 95%
    # width of ~4 * 0.0212 = 0.083. Seeds add the variance of a resampled mean of 3
    # offsets, var = (0.02 / 3) / 3 = 0.00222, total sd = sqrt(0.00045 + 0.00222) = 0.0517:
    # a width of ~0.2, about 2.4x. Demand at least 1.5x.
    base = np.tile([0.2, 0.8], 100)  # [200]
    x = base[None, :] + np.array([-0.1, 0.0, 0.1])[:, None]  # [3, 200]
    mean1, lo1, hi1 = bootstrap_ci(x.mean(axis=0))
    mean2, lo2, hi2 = bootstrap_ci(x)
    assert mean1 == pytest.approx(0.5) and mean2 == pytest.approx(0.5)
    assert hi1 - lo1 == pytest.approx(4 * 0.0212, rel=0.15)
    assert hi2 - lo2 > 1.5 * (hi1 - lo1)
    assert lo2 < 0.5 < hi2


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(np.array([]))
    with pytest.raises(ValueError, match="shape"):
        bootstrap_ci(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci(np.ones(3), confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.ones(3), n_boot=0)


# --- paired comparison ----------------------------------------------------------------


def test_paired_permutation_hand_computed():
    # Differences [1, 1, 1, 0]: observed |sum| = 3. Of the 2^4 = 16 sign flips of the first
    # three (the fourth is 0 either way, a factor 2), |s1 + s2 + s3| is
    #   +++ : 3   ---: 3   (the other 6 patterns of the three signs: 1)
    # so 2 patterns x 2 = 4 flips reach 3: p = 4 / 16 = 0.25.
    a = np.array([0.0, 0.0, 0.0, 1.0])
    b = np.array([1.0, 1.0, 1.0, 1.0])
    r = paired_bootstrap(a, b)
    assert r.p_value == pytest.approx(0.25, abs=1e-15)
    assert r.difference == pytest.approx(0.75)
    assert (r.n_problems, r.n_seeds, r.test) == (4, 1, "exact paired permutation")
    # The same differences after averaging two seeds: [[1, 1, 1, .5], [1, 1, 1, -.5]] -> [1, 1, 1, 0].
    a2 = np.array([[0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.5]])
    b2 = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    r2 = paired_bootstrap(a2, b2)
    assert r2.p_value == pytest.approx(0.25, abs=1e-15)
    assert (r2.difference, r2.n_problems, r2.n_seeds) == (pytest.approx(0.75), 4, 2)
    # Bootstrap: each replicate is the mean of 4 resampled differences from {1, 1, 1, 0},
    # so it lies in {0, 1/4, 1/2, 3/4, 1}; P(all four are 1) = (3/4)^4 = 0.32 > 2.5%.
    assert r.ci95[1] == 1.0 and r.ci95[0] in (0.25, 0.5)


def test_paired_identical_runs():
    x = np.random.default_rng(5).random((3, 40))
    r = paired_bootstrap(x, x.copy())
    assert r.difference == 0.0 and r.ci95 == (0.0, 0.0) and r.p_value == 1.0
    assert (r.n_problems, r.n_seeds, r.test) == (40, 3, "paired permutation")


@pytest.mark.parametrize("both, lost, gained, neither", [
    (3, 0, 5, 2),  # 2 * P(X <= 0), X ~ Bin(5, 1/2) = 2/32
    (2, 1, 6, 3),  # 2 * (1 + 7) / 2^7 = 0.125
    (4, 2, 2, 0),  # b == c: p = 1
    (0, 7, 1, 8),  # 16 problems, the largest enumerated: 2 * (1 + 8) / 2^8 = 0.0703125
])
def test_paired_permutation_is_mcnemar_on_binary_scores(both, lost, gained, neither):
    # Sign flips of differences in {-1, 0, +1} are the exact sign test on the discordant
    # pairs, which is McNemar's exact test: identical p-values when all 2^n flips are used.
    before = [1] * both + [1] * lost + [0] * gained + [0] * neither
    after = [1] * both + [0] * lost + [1] * gained + [0] * neither
    r = paired_bootstrap(np.array(before, float), np.array(after, float))
    m = mcnemar_exact([bool(x) for x in before], [bool(x) for x in after])
    assert r.test == "exact paired permutation"
    assert r.p_value == pytest.approx(m.p_value, rel=1e-12)
    assert r.difference == pytest.approx(m.difference)


def test_paired_permutation_monte_carlo_matches_mcnemar():
    # 40 problems (random flips): 2 lost, 8 gained, 30 ties. McNemar exact:
    # 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024 = 0.109375. With 10,000 flips
    # the Monte Carlo SE is sqrt(0.109 * 0.891 / 10000) = 0.0031; allow 0.012 (~4 SE).
    before = np.array([1.0] * 2 + [0.0] * 8 + [1.0] * 15 + [0.0] * 15)
    after = np.array([0.0] * 2 + [1.0] * 8 + [1.0] * 15 + [0.0] * 15)
    r = paired_bootstrap(before, after)
    assert r.test == "paired permutation"
    assert r.p_value == pytest.approx(0.109375, abs=0.012)


def clear_improvement():
    """300 problems: A right on 120; B keeps 117 of them, loses 3, and gains 30 new ones."""
    a = np.array([1.0] * 120 + [0.0] * 180)
    b = np.array([1.0] * 117 + [0.0] * 3 + [1.0] * 30 + [0.0] * 150)
    return a, b


def test_paired_clear_improvement():
    # difference = (30 - 3) / 300 = 0.09. Per problem d = +1 (30), -1 (3), 0 (267):
    # var d = 33/300 - 0.09^2 = 0.1019, sd of the mean = sqrt(0.1019 / 300) = 0.0184, so the
    # paired CI is about 0.09 -/+ 0.036. Sign test: z = 27 / sqrt(33) = 4.7, p ~ 3e-6, so no
    # random flip reaches it and p = 1 / (1 + 10000).
    a, b = clear_improvement()
    r = paired_bootstrap(a, b)
    assert r.difference == pytest.approx(0.09)
    assert r.p_value < 0.01 and r.p_value == pytest.approx(1 / 10001)
    assert r.ci95 == pytest.approx((0.09 - 0.036, 0.09 + 0.036), abs=0.01)
    # Pairing matters: resampling A and B independently would give sd
    # sqrt(0.4 * 0.6 / 300 + 0.49 * 0.51 / 300) = 0.0405, a width ~2.2x the paired one.
    _, lo_a, hi_a = bootstrap_ci(a)
    _, lo_b, hi_b = bootstrap_ci(b)
    unpaired_width = math.hypot(hi_a - lo_a, hi_b - lo_b)
    assert r.ci95[1] - r.ci95[0] < 0.6 * unpaired_width
    # Swapping the runs mirrors everything.
    s = paired_bootstrap(b, a)
    assert s.difference == pytest.approx(-0.09) and s.p_value == r.p_value
    assert s.ci95 == pytest.approx((-r.ci95[1], -r.ci95[0]))


def test_paired_two_level():
    # Three seeds of the clear improvement, each seed's B shifted by -0.02, 0, +0.02 on
    # every problem: the mean difference stays 0.09 (offsets average to 0), the per-problem
    # differences averaged over seeds are the one-seed ones, and resampling seeds widens the CI.
    a, b = clear_improvement()
    a3 = np.stack([a, a, a])  # [3, 300]
    b3 = np.stack([b - 0.02, b, b + 0.02])  # [3, 300]
    r1, r3 = paired_bootstrap(a, b), paired_bootstrap(a3, b3)
    assert r3.difference == pytest.approx(0.09)
    assert (r3.n_problems, r3.n_seeds) == (300, 3)
    assert r3.p_value == pytest.approx(r1.p_value)
    assert r3.ci95[1] - r3.ci95[0] > r1.ci95[1] - r1.ci95[0]


def test_paired_verdict_wording():
    a, b = clear_improvement()
    better = paired_verdict(paired_bootstrap(a, b), "base", "rl")
    assert better.startswith("rl is better: +9.0 points (95% CI +")
    assert "paired permutation p = 1.0e-4" in better and better.endswith("n = 300 problems")
    worse = paired_verdict(paired_bootstrap(b, a), "rl", "base")
    assert worse.startswith("rl is better: -9.0 points")
    # 2 lost, 8 gained of 40: p ~ 0.11, not significant at 0.01 (nor 0.05).
    before = np.array([1.0] * 2 + [0.0] * 8 + [1.0] * 15 + [0.0] * 15)
    after = np.array([0.0] * 2 + [1.0] * 8 + [1.0] * 15 + [0.0] * 15)
    same = paired_verdict(paired_bootstrap(np.stack([before] * 3), np.stack([after] * 3)))
    assert same.startswith("no significant difference: +15.0 points (95% CI ")
    assert same.endswith("n = 40 problems x 3 seeds")
    # Hand-built result: exactly the sentence of the spec.
    r = PairedResult(difference=0.031, ci95=(0.010, 0.052), p_value=0.003, n_problems=500,
                     n_seeds=3, test="paired permutation")
    assert paired_verdict(r) == ("B is better: +3.1 points (95% CI +1.0 to +5.2), "
                                 "paired permutation p = 0.0030, n = 500 problems x 3 seeds")


def test_paired_verdict_says_when_test_and_ci_disagree():
    # 16 problems, one seed: 4 gained, none lost. Exact sign flips: the sum is 4 unless one of the
    # 4 nonzero differences flips, so p = P(|sum| >= 4) = 2 * 2^12 / 2^16 = 0.125. The bootstrap
    # draws 16 problems with replacement and misses all 4 gained ones with probability
    # (12/16)^16 = 0.010 < 0.025, so its 2.5% quantile is above 0: the CI excludes 0.
    before, after = np.zeros(16), np.zeros(16)
    after[:4] = 1
    before[8:] = after[8:] = 1
    r = paired_bootstrap(before, after)
    assert r.p_value == 0.125 and r.ci95[0] > 0
    assert paired_verdict(r, "sft", "rl") == (
        "borderline, rl ahead (the 95% CI excludes 0 but p >= 0.05): +25.0 points (95% CI +6.2 to +50.0), "
        "exact paired permutation p = 0.12, n = 16 problems")
    # the other way round, hand-built: the permutation test rejects, the bootstrap CI reaches below 0
    r = PairedResult(difference=-0.031, ci95=(-0.060, 0.002), p_value=0.04, n_problems=60, n_seeds=1,
                     test="paired permutation")
    assert paired_verdict(r, "sft", "rl") == (
        "borderline, sft ahead (p < 0.05 but the 95% CI includes 0): -3.1 points (95% CI -6.0 to +0.2), "
        "paired permutation p = 0.040, n = 60 problems")


def test_paired_rejects_bad_input():
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="same problems"):
        paired_bootstrap(np.zeros((2, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="empty"):
        paired_bootstrap(np.zeros(0), np.zeros(0))
