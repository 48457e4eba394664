"""Prompt templates: the r1zero wording agrees with the format rewards that score its responses."""

import re

import pytest

from rlvr.prompts import BOOK, TEMPLATES, check_template
from rlvr.rewards.format import format_soft_r1zero, format_strict_r1zero, is_strict_format


def test_r1zero_ends_inside_think_and_shows_the_strict_format():
    text = TEMPLATES["r1zero"].format(prompt="What is $2+3$?")
    assert text.endswith("User: What is $2+3$?\nAssistant: <think>")
    shown = re.search(r"<think>\n.*?</answer>", text, re.DOTALL).group(0)  # the format the prompt spells out
    assert is_strict_format(shown)
    response = "\n2 plus 3 is 5.\n</think>\n<answer>\n\\boxed{5}\n</answer>"
    assert format_strict_r1zero(response, None) == 1.0 and format_soft_r1zero(response, None) == 1.0


def test_book_prompt_is_the_chapter6_prompt():
    assert BOOK.format(prompt="Q") == ("You are a helpful math assistant.\nAnswer the question and write the final "
                                       "result on a new line as:\n\\boxed{ANSWER}\n\nQuestion:\nQ\n\nAnswer:")


def test_unknown_template_lists_the_valid_ones():
    with pytest.raises(ValueError, match="use one of auto, chat, plain, book, r1zero"):
        check_template("r1")
