"""evaluate()'s scoring rules on hand-built problems, without a model: best@k, the CI when the
scores show no spread, and the inputs it refuses before generating anything."""

import pytest

from rlvr.config import EvalConfig
from rlvr.eval.evaluate import _Problem, _score, check_by, eval_kwargs, evaluate
from rlvr.types import Sample


def problem(correct, truncated=None, mean_logprobs=None) -> _Problem:
    k = len(correct)
    return _Problem(list(correct), ["1"] * k, [5] * k, list(truncated or [False] * k),
                    list(mean_logprobs or [-1.0] * k))


def test_best_of_k_picks_among_finished_samples():
    # sample 0 was cut at max_new_tokens (a repetition loop: high mean logprob, and a cut response
    # is never correct); sample 1 finished with the right answer. best@2 picks sample 1, as maj@2
    # votes only with finished ones; it once picked sample 0 and scored 0.
    p = problem([False, True], truncated=[True, False], mean_logprobs=[-0.1, -2.0])
    assert p.metrics(None)["best@2"] == 1.0
    # among finished samples the highest mean logprob still wins: -0.5 (wrong) over -2.0 (right)
    p = problem([False, True, False], truncated=[False, False, True], mean_logprobs=[-0.5, -2.0, -0.1])
    assert p.metrics(None)["best@3"] == 0.0
    # every sample cut: nothing to pick, best@k scores 0
    assert problem([False, False], truncated=[True, True]).metrics(None)["best@2"] == 0.0


def test_ci_without_spread_falls_back_to_wilson():
    # k = 4, one seed, 4 problems all 4/4 right: every avg@4 is 1, so the bootstrap (which once
    # printed [100.0, 100.0]) sees no uncertainty. Wilson for 4 of 4: the lower bound is
    # (1 + z^2/8 - z^2/8) / (1 + z^2/4) = 1 / (1 + 3.841459 / 4) = 1 / 1.960365 = 0.510109.
    runs = [[problem([True] * 4) for _ in range(4)]]
    s = _score(runs, range(4), None)
    assert s.accuracy == 1.0 and s.ci95 == pytest.approx((0.510109, 1.0), abs=1e-6)
    # A 1-problem bucket with avg@4 = 3/4: Wilson on 0.75 of 1 (derived in test_stats.py,
    # test_wilson_fractional_successes): 0.551637 -/+ 0.433728.
    s = _score([[problem([True, True, True, False])]], [0], None)
    assert s.accuracy == 0.75 and s.ci95 == pytest.approx((0.117909, 0.985365), abs=1e-5)
    # Two seeds whose problems average the same, [[1, 0.5], [0.5, 1]] -> 0.75 each: Wilson on
    # 1.5 of 2, which contains the mean, not a bootstrap over seeds alone.
    runs = [[problem([True, True]), problem([True, False])], [problem([True, False]), problem([True, True])]]
    s = _score(runs, range(2), None)
    assert s.accuracy == 0.75 and s.ci95[0] < 0.75 < s.ci95[1] and s.ci95[1] - s.ci95[0] > 0.5
    # With spread the bootstrap stays: 0/4 and 4/4 right resample to anything in {0, 0.5, 1}.
    s = _score([[problem([True] * 4), problem([False] * 4)]], range(2), None)
    assert s.ci95 == (0.0, 1.0)


def test_eval_by_fields_are_stripped():
    assert eval_kwargs(EvalConfig(by="subject, level"))["by"] == ["subject", "level"]  # once ' level'
    assert eval_kwargs(EvalConfig(by=" op ,, digits "))["by"] == ["op", "digits"]
    assert eval_kwargs(EvalConfig(by=""))["by"] == []


SAMPLES = [Sample(prompt="1+1=", answer="2", id="a", meta={"subject": "algebra", "level": 1}),
           Sample(prompt="2+2=", answer="4", id="b", meta={"subject": "algebra"})]


def never(*_):  # evaluate() must refuse before it generates or scores anything
    raise AssertionError("called")


def test_a_by_field_no_problem_has_is_refused():
    """check_by, which every caller runs on the whole held-out set before evaluating (rlvr eval,
    SFT, RL: tests/train/test_rl_plumbing.py), not evaluate() itself: under torchrun a rank's slice
    may lack a field the set has, and one rank raising alone would leave the others waiting."""
    with pytest.raises(ValueError, match=r"eval.by field 'levle' is in none of the 2 problems' metadata; "
                                         r"they have: level, subject"):
        check_by(SAMPLES, ["subject", "levle"])
    with pytest.raises(ValueError, match=r"' level'"):  # an unstripped field names itself with its space
        check_by(SAMPLES, [" level"])
    check_by(SAMPLES[:1], ["subject"])  # a field some problems have is fine


def test_no_problems_is_refused():
    with pytest.raises(ValueError, match="no held-out problems to evaluate: check .*task.eval_path.* eval.limit"):
        evaluate(None, None, [], never, "plain", 8)
