"""task.reward as a weighted sum: the grammar, the values, the errors."""

import doctest
import re

import pytest

import rlvr.rewards
from rlvr.config import ConfigError, load_config
from rlvr.rewards import WeightedSum, parse_reward, resolve, safe_score
from rlvr.rewards.exact import exact
from rlvr.rewards.format import format_boxed
from rlvr.types import Sample

FOUR = Sample(prompt="2+2", answer="4")


@pytest.mark.parametrize("spec, terms", [
    ("math", [(1.0, "math")]),
    ("1.0*math+0.1*format_strict", [(1.0, "math"), (0.1, "format_strict")]),
    ("  exact  +  .5 * format_boxed ", [(1.0, "exact"), (0.5, "format_boxed")]),
    ("exact - 2e-1*format_boxed + 3*pkg.mod:score", [(1.0, "exact"), (-0.2, "format_boxed"), (3.0, "pkg.mod:score")]),
    ("2*exact", [(2.0, "exact")]),
])
def test_grammar(spec, terms):
    assert parse_reward(spec) == terms


@pytest.mark.parametrize("spec, bad", [
    ("", "a term is missing at the end"),
    ("math +", "a term is missing at the end"),
    ("0.2*", "cannot read the term '0.2*'"),
    ("math * 0.2", "cannot read '* 0.2'"),
    ("math + 0.2 format_soft", "cannot read the term '0.2 format_soft'"),
    ("math ++ format_soft", "cannot read the term '+ format_soft'"),
    ("-math", "cannot read the term '-math'"),
    ("math, format_soft", "cannot read ', format_soft'"),
    ("2*3", "cannot read the term '2*3'"),
])
def test_grammar_errors_name_the_bad_term(spec, bad):
    with pytest.raises(ValueError, match=re.escape(f"task.reward={spec!r}: {bad}; write a weighted sum")):
        parse_reward(spec)


def test_single_name_is_the_function_itself():
    assert resolve("exact") is exact and resolve("  exact ") is exact


def test_weighted_sum_values():
    r = resolve("exact + 0.5*format_boxed - 0.25*format_strict")
    assert isinstance(r, WeightedSum) and r.correctness is exact
    good = "<think>\n2+2=4\n</think>\n<answer>\n\\boxed{4}\n</answer>"
    # exact 1, format_boxed 1, format_strict 1:    1 + 0.5*1 - 0.25*1    = 1.25
    assert r(good, FOUR) == pytest.approx(1.25, abs=1e-12)
    # exact 0, format_boxed 1, format_strict -1:   0 + 0.5*1 - 0.25*(-1) = 0.75
    assert r("\\boxed{5}", FOUR) == pytest.approx(0.75, abs=1e-12)
    # exact 0, format_boxed 0, format_strict -1:   0 + 0 + 0.25          = 0.25
    assert r("four", FOUR) == pytest.approx(0.25, abs=1e-12)
    assert r.parts("\\boxed{5}", FOUR) == {"exact": 0.0, "format_boxed": 1.0, "format_strict": -1.0}
    assert repr(r) == "WeightedSum(1*exact + 0.5*format_boxed + -0.25*format_strict)"


def test_correctness_is_the_first_term_even_when_the_sum_says_otherwise():
    r = resolve("exact + 1.0*format_strict")
    # a correct answer in a broken format: 1 + (-1) = 0, so "reward >= 1" would call it wrong
    assert r("\\boxed{4}", FOUR) == 0.0 and r.correctness("\\boxed{4}", FOUR) == 1.0
    assert resolve("0.5*exact").correctness is exact


def test_score_many_truncation_removes_correctness_but_keeps_penalties():
    """A response cut at max_new_tokens: the correctness term scores 0 (and it is not correct),
    while a format penalty still applies -- running out of tokens must not escape it."""
    from rlvr.rewards import score_many
    from rlvr.types import Completion

    r = resolve("exact + 1.0*format_strict")
    done = Completion("\\boxed{4}", [1, 2], [0.0, 0.0], "stop")
    cut = Completion("\\boxed{4}", [1, 2], [0.0, 0.0], "length")
    total, correct, errors = score_many(r, [done, cut], [FOUR, FOUR])
    # done: exact 1 + format_strict -1 = 0, correct; cut: exact counts 0, format_strict -1 = -1, not correct
    assert (total, correct, errors) == ([0.0, -1.0], [True, False], 0)
    assert score_many(r, [cut], [FOUR], reward_truncated=True)[:2] == ([0.0], [True])
    assert score_many(resolve("exact"), [cut], [FOUR])[:2] == ([0.0], [False])


def test_user_terms(tmp_path, monkeypatch):
    (tmp_path / "my_terms.py").write_text("def short(completion, sample):\n    return -len(completion) / 100\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = resolve("exact + 0.5*my_terms:short")
    assert r("\\boxed{4}", FOUR) == pytest.approx(1 - 0.5 * 9 / 100, abs=1e-12)  # 9 characters


@pytest.mark.parametrize("spec, message", [
    ("exact + 0.2*nope", "task.reward='exact + 0.2*nope': term 'nope': unknown reward 'nope'; valid names: exact"),
    ("exact + nope_module:f", "term 'nope_module:f': cannot import module 'nope_module'"),
    ("exact + rlvr.rewards.exact:missing", "term 'rlvr.rewards.exact:missing': module 'rlvr.rewards.exact' has no "
                                           "function 'missing'"),
    ("nope_module:f", "task.reward='nope_module:f': cannot import module 'nope_module'"),
])
def test_resolve_errors_name_task_reward_and_the_term(spec, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve(spec)


def test_a_term_that_raises_costs_the_score_not_the_run():
    r = WeightedSum([(1.0, "exact", exact), (0.1, "broken", lambda c, s: 1 / 0)])
    assert safe_score(r, "\\boxed{4}", FOUR) == (0.0, False)
    assert WeightedSum([(1.0, "exact", exact), (0.1, "boxed", format_boxed)])("\\boxed{4}", FOUR) == 1.1


def test_config_checks_the_reward_at_load():
    with pytest.raises(ConfigError, match=r"unknown reward 'format_sof'; did you mean format_soft\? registered: exact"):
        load_config(None, ["task.reward=exact + 0.2*format_sof"])
    with pytest.raises(ConfigError, match=r"cannot read the term '0.2 format_soft'"):
        load_config(None, ["task.reward=exact + 0.2 format_soft"])
    # module:function terms are imported when the run starts, not when the recipe is read
    assert load_config(None, ["task.reward=exact + 0.1*not_yet_written:f"]).task.reward == "exact + 0.1*not_yet_written:f"


def test_doctests():
    assert doctest.testmod(rlvr.rewards).failed == 0
