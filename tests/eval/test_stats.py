import math

import numpy as np
import pytest

from rlvr.eval.stats import McNemarResult, format_p, mcnemar_exact, verdict, wilson_interval


def pairs(both: int, lost: int, gained: int, neither: int) -> tuple[list[bool], list[bool]]:
    """before/after outcome lists with the given 2x2 counts."""
    before = [True] * both + [True] * lost + [False] * gained + [False] * neither
    after = [True] * both + [False] * lost + [True] * gained + [False] * neither
    return before, after


def test_wilson_hand_computed():
    # 8/10 at 95%: z = 1.959964, z^2 = 3.841459.
    # center = (8 + z^2/2) / (10 + z^2) = 9.920729 / 13.841459 = 0.716740
    # half = z * sqrt(n p q + z^2/4) / (n + z^2) = 1.959964 * sqrt(1.6 + 0.960365) / 13.841459
    #      = 1.959964 * 1.600114 / 13.841459 = 0.226578
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.716740 - 0.226578, abs=1e-4)
    assert hi == pytest.approx(0.716740 + 0.226578, abs=1e-4)
    # 5/10 is symmetric about 1/2: half = 1.959964 * sqrt(2.5 + 0.960365) / 13.841459 = 0.263407
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.5 - 0.263407, 0.5 + 0.263407), abs=1e-4)


@pytest.mark.parametrize("k, n, expected", [
    # Newcombe, Stat Med 1998;17:857-872, Table I, method 3 (Wilson score, no correction).
    (81, 263, (0.2553, 0.3662)),
    (15, 148, (0.0624, 0.1605)),
    (0, 20, (0.0, 0.1611)),
    (1, 29, (0.0061, 0.1718)),
])
def test_wilson_textbook(k, n, expected):
    assert wilson_interval(k, n) == pytest.approx(expected, abs=1e-4)


def test_wilson_fractional_successes():
    # A 1-problem bucket whose problem scored avg@4 = 3/4: successes 0.75 of n = 1.
    # denom = 1 + z^2 = 4.841459; center = (0.75 + z^2/2) / denom = 2.670729 / 4.841459 = 0.551637
    # half = z * sqrt(0.75 * 0.25 + z^2/4) / denom = 1.959964 * 1.071385 / 4.841459 = 0.433728
    lo, hi = wilson_interval(0.75, 1)
    assert (lo, hi) == pytest.approx((0.551637 - 0.433728, 0.551637 + 0.433728), abs=1e-5)


def test_wilson_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 7)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0
    narrow, wide = wilson_interval(8, 10, 0.9), wilson_interval(8, 10, 0.99)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("n", [100, 500])
def test_wilson_coverage(p, n):
    # Exact coverage here ranges 0.936 (p=0.1, n=100) to 0.956; with 20,000 draws the
    # Monte Carlo standard error is ~0.0017, so the [0.93, 0.97] band is not a coin flip.
    rng = np.random.default_rng(1234)
    draws = rng.binomial(n, p, size=20_000)
    bounds = np.array([wilson_interval(k, n) for k in range(n + 1)])  # [n+1, 2]
    covered = (bounds[draws, 0] <= p) & (p <= bounds[draws, 1])  # [20000]
    assert 0.93 <= covered.mean() <= 0.97


@pytest.mark.parametrize("lost, gained, expected", [
    (0, 5, 2 / 32),  # 2 * P(X <= 0), X ~ Bin(5, 1/2)
    (1, 9, 2 * (1 + 10) / 1024),  # 2 * (C(10,0) + C(10,1)) / 2^10 = 0.021484375
    (9, 1, 2 * (1 + 10) / 1024),  # two-sided: symmetric in b and c
    (4, 4, 1.0),  # 2 * P(X <= 4), X ~ Bin(8, 1/2) > 1, capped
    (0, 0, 1.0),  # no discordant pairs: no evidence either way
])
def test_mcnemar_hand_computed(lost, gained, expected):
    r = mcnemar_exact(*pairs(both=20, lost=lost, gained=gained, neither=7))
    assert (r.b, r.c, r.n) == (lost, gained, 27 + lost + gained)
    assert (r.before_correct, r.after_correct) == (20 + lost, 20 + gained)
    assert r.difference == pytest.approx((gained - lost) / r.n)
    assert r.p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_large_counts():
    # b + c = 6300: 2^6300 overflows a float, the exact integer sum must not.
    r = mcnemar_exact(*pairs(both=1000, lost=3000, gained=3300, neither=700))
    assert math.isfinite(r.p_value) and 0.0 < r.p_value < 1e-3
    # Normal approximation: z = 300 / sqrt(6300) = 3.78, two-sided p ~ 1.6e-4.
    assert r.p_value == pytest.approx(1.6e-4, rel=0.15)


def test_mcnemar_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for lost, gained in [(3, 17), (40, 61), (250, 190)]:
        r = mcnemar_exact(*pairs(both=50, lost=lost, gained=gained, neither=5))
        assert r.p_value == pytest.approx(stats.binomtest(lost, lost + gained).pvalue, rel=1e-9)


def test_paired_ci():
    r = mcnemar_exact(*pairs(both=30, lost=6, gained=6, neither=8))
    assert r.ci95[0] == pytest.approx(-r.ci95[1])  # b == c: symmetric about 0
    r = mcnemar_exact(*pairs(both=36, lost=2, gained=12, neither=0))
    lo, hi = r.ci95
    assert -1.0 <= lo < r.difference < hi <= 1.0 and lo > 0.0
    # Swapping the runs mirrors the interval.
    flipped = mcnemar_exact(*pairs(both=36, lost=12, gained=2, neither=0))
    assert flipped.ci95 == pytest.approx((-hi, -lo))


def test_mcnemar_rejects_bad_input():
    with pytest.raises(ValueError, match="same problems"):
        mcnemar_exact([True, False], [True])
    with pytest.raises(ValueError, match="empty"):
        mcnemar_exact([], [])


def test_format_p_and_verdict():
    assert format_p(0.003) == "p = 0.0030"
    assert format_p(0.41) == "p = 0.41"
    assert format_p(0.01006) == "p = 0.010"  # two significant digits kept: not "0.01", which reads as < 0.01
    assert format_p(3.2e-5) == "p = 3.2e-5"
    assert format_p(1e-9) == "p < 1e-6"
    better = verdict(mcnemar_exact(*pairs(both=500, lost=20, gained=202, neither=278)))
    assert better.startswith("after is better: +18.2 points (95% CI +")
    assert better.endswith("McNemar exact p < 1e-6, n = 1000")
    worse = verdict(mcnemar_exact(*pairs(both=500, lost=202, gained=20, neither=278)))
    assert worse.startswith("before is better: -18.2 points")
    same = verdict(mcnemar_exact(*pairs(both=10, lost=5, gained=6, neither=9)))
    assert same.startswith("no significant difference: +3.3 points") and same.endswith("n = 30")
    # p = 0.017 (10 lost, 25 gained): significant at the 5% level of the 95% CI printed beside it,
    # which excludes 0 (+0.3 to +2.7); a 1% level here once printed "no significant difference"
    edge = verdict(mcnemar_exact(*pairs(both=600, lost=10, gained=25, neither=365)))
    assert edge.startswith("after is better: +1.5 points (95% CI +0.3 to +2.7)") and "p = 0.017" in edge


@pytest.mark.parametrize("p, text", [
    (0.0498, "p = 0.0498"),  # two digits give 0.050, which reads as not significant at 0.05
    (0.04951, "p = 0.0495"),
    (0.05, "p = 0.050"),  # at the level: p < 0.05 is false, and so it reads
    (0.0501, "p = 0.050"),  # rounds down onto the level, but stays on its side (not < 0.05)
    (0.00999, "p = 0.00999"),  # not "0.010"
    (0.01, "p = 0.010"),
    (0.0999, "p = 0.0999"),  # not "0.10"
    (0.09996, "p = 0.09996"),  # three digits still give "0.100"
    (0.000999, "p = 9.99e-4"),  # not "1.0e-3"
    (0.00099996, "p = 9.9996e-4"),  # "1.0e-3", "1.00e-3", "1.000e-3" all read as 0.001
    (0.001, "p = 0.0010"),
    (0.0625, "p = 0.062"),
    (1.0, "p = 1.0"),
    (1e-6, "p = 1.0e-6"),
    (9.99e-7, "p < 1e-6"),
])
def test_format_p_never_rounds_across_a_level(p, text):
    assert format_p(p) == text
    shown = float(text.split()[-1])
    for level in (0.1, 0.05, 0.01, 0.001):
        assert (shown < level) == (p < level)


def test_verdict_calls_a_run_better_only_when_test_and_ci_agree():
    # both=13, lost=0, gained=5, neither=12, n = 30. McNemar: p = 2 * P(X <= 0), X ~ Bin(5, 1/2)
    # = 2/32 = 0.0625, not below 0.05. Newcombe: p1 = 13/30 = 0.4333, Wilson (0.2738, 0.6080);
    # p2 = 18/30 = 0.6, Wilson (0.4232, 0.7541); phi = (13*12 - 0*5) / sqrt(13*17*18*12) = 0.7140;
    # down = sqrt(0.1768^2 - 2 * 0.7140 * 0.1768 * 0.1747 + 0.1747^2) = sqrt(0.01767) = 0.1329,
    # so the CI starts at 0.1667 - 0.1329 = +0.034 > 0: it excludes 0 while the test does not reject.
    # This once printed "no significant difference" beside a CI of +3.4 to +28.5.
    r = mcnemar_exact(*pairs(both=13, lost=0, gained=5, neither=12))
    assert r.p_value == 0.0625 and r.ci95[0] == pytest.approx(0.0337, abs=1e-4)
    assert verdict(r) == ("borderline, after ahead (the 95% CI excludes 0 but p >= 0.05): +16.7 points "
                          "(95% CI +3.4 to +28.5), McNemar exact p = 0.062, n = 30")
    mirrored = verdict(mcnemar_exact(*pairs(both=13, lost=5, gained=0, neither=12)), before="sft", after="rl")
    assert mirrored.startswith("borderline, sft ahead (the 95% CI excludes 0 but p >= 0.05): -16.7 points")
    # at alpha = 0.1 the test agrees with the CI; the CI is still the 95% one
    assert verdict(r, alpha=0.1).startswith("after is better: +16.7 points (95% CI +3.4 to +28.5)")
    # the other disagreement (test rejects, CI includes 0), hand-built: McNemar with Newcombe's
    # interval gave none in a search of small tables (n < 60), a paired bootstrap can
    r = McNemarResult(n=40, before_correct=20, after_correct=27, b=1, c=8, difference=0.175,
                      ci95=(-0.004, 0.33), p_value=0.039)
    assert verdict(r).startswith("borderline, after ahead (p < 0.05 but the 95% CI includes 0): +17.5 points "
                                 "(95% CI -0.4 to +33.0), McNemar exact p = 0.039")
