"""Format rewards on hand-written responses, including ones that nearly match."""

import doctest

import pytest

from rlvr.rewards import REWARDS
from rlvr.rewards import format as format_rewards

GOOD = "<think>\n2 and 2 make 4\n</think>\n<answer>\n\\boxed{4}\n</answer>"


def score(name, text):
    return REWARDS.get(name)(text, None)


@pytest.mark.parametrize("text, expected", [
    ("<think>a</think><answer>b</answer>", 1.0),
    (GOOD, 1.0),
    ("Sure. <think>a</think> so <answer>b</answer> bye", 1.0),  # text around the blocks is allowed
    ("<think>a</think><think>b</think><answer>c</answer>", 1.0),  # a second thought is allowed
    ("<think></think><answer></answer>", 1.0),  # form only: empty blocks pass
    ("<answer>b</answer><think>a</think>", 0.0),  # wrong order
    ("<think>a</think>", 0.0),  # no answer block
    ("<think>a<answer>b</answer>", 0.0),  # think never closed
    ("<think>a</think><answer>b", 0.0),  # answer never closed
    ("a\n</think>\n<answer>\nb\n</answer>", 0.0),  # an r1zero response: its <think> is in the prompt
    ("", 0.0),
])
def test_format_soft(text, expected):
    assert score("format_soft", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("a\n</think>\n<answer>\nb\n</answer>", 1.0),
    ("</think><answer>b</answer>", 1.0),
    ("<answer>b</answer>", 0.0),
])
def test_format_soft_r1zero(text, expected):
    assert score("format_soft_r1zero", text) == expected


@pytest.mark.parametrize("text, expected", [
    (GOOD, 1.0),
    ("\n  " + GOOD + "\n\n", 1.0),  # whitespace around the whole response
    ("<think>\nline one\n\nline two\n</think>\n<answer>\n4\n</answer>", 1.0),  # blank lines inside a block
    (GOOD + "\nDone.", -1.0),  # text after
    ("Okay. " + GOOD, -1.0),  # text before
    ("<think>\na\n</think>\n<think>\nb\n</think>\n<answer>\n4\n</answer>", -1.0),  # think twice
    (GOOD + "\n<answer>\n5\n</answer>", -1.0),  # answer twice
    ("<answer>\n4\n</answer>\n<think>\na\n</think>", -1.0),  # wrong order
    ("<think>a</think>\n<answer>\n4\n</answer>", -1.0),  # no newlines inside the think tags
    ("<think>\na\n</think> <answer>\n4\n</answer>", -1.0),  # a space, not a newline, between the blocks
    ("<think>\n \n</think>\n<answer>\n4\n</answer>", -1.0),  # empty thought
    ("<think>\na\n</think>\n<answer>\n\n</answer>", -1.0),  # empty answer
    ("<think>\nmaybe <answer>\n</think>\n<answer>\n4\n</answer>", -1.0),  # a tag inside the thought
    ("", -1.0),
])
def test_format_strict(text, expected):
    assert score("format_strict", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("\n2 and 2 make 4\n</think>\n<answer>\n4\n</answer>", 1.0),  # the prompt ended with "<think>"
    ("2 and 2 make 4\n</think>\n<answer>\n4\n</answer>", 1.0),  # ... with no newline after it
    (GOOD, -1.0),  # a second opening tag: the prompt already holds one
    ("a</think>\n<answer>\n4\n</answer>", -1.0),  # the closing tag not on its own line
    ("a\n</think>\n<answer>\n4\n</answer> extra", -1.0),
])
def test_format_strict_r1zero(text, expected):
    assert score("format_strict_r1zero", text) == expected


@pytest.mark.parametrize("text, expected", [
    ("2 + 2 = 4, so the answer is\n\\boxed{4}", 1.0),
    ("$\\boxed{\\frac{1}{2}}$.", 1.0),  # nested braces, closing text after it
    ("", 0.0),
    ("the answer is 4", 0.0),
    ("\\boxed{3}, no: \\boxed{4}", 0.0),  # two boxes
    ("\\boxed{4", 0.0),  # never closed
    ("\\boxed{ }", 0.0),  # empty
    ("\\boxed 4", 0.0),  # no braces
])
def test_format_boxed(text, expected):
    assert score("format_boxed", text) == expected


def test_doctests():
    assert doctest.testmod(format_rewards).failed == 0
