r"""Format rewards: does a response have the shape the prompt template asks for?

They check form only, never correctness, so they are added to a correctness reward with a
small weight (`task.reward: "math + 0.2*format_soft"`), never used alone: a policy can satisfy
any of them with an empty or wrong answer.

- `format_soft`: 1.0 when a <think>...</think> block comes before an <answer>...</answer>
  block, anywhere in the response; else 0.0.
- `format_strict`: 1.0 when the whole response is `<think>\nT\n</think>\n<answer>\nA\n</answer>`;
  else -1.0.
- `format_boxed`: 1.0 for exactly one \boxed{...}, closed and not empty (the book's prompt);
  else 0.0.
- `format_soft_r1zero`, `format_strict_r1zero`: the same values, for a response that starts
  inside <think>.

The r1zero variants are for the `r1zero` template, whose prompt ends with "Assistant: <think>":
the response continues the thought, so its own text has no opening tag. They read the response
as "<think>" + response.

`format_strict` is Logic-RL's format score (arXiv 2502.14768, sec. 3.2): +1 for the exact
format, -1 otherwise. Its T and A must each hold some non-space text and none of the four tags,
so every tag appears exactly once; only whitespace may surround the whole response. Between
the opening tag and T, where the r1zero prompt ends, any whitespace (or none) is accepted: a
tokenizer may or may not put the newline in the prompt's last token.
"""

from __future__ import annotations

import re

from rlvr.rewards import REWARDS
from rlvr.rewards.exact import last_boxed
from rlvr.types import Sample

TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_STRICT = re.compile(r"<think>\n(.*)\n</think>\n<answer>\n(.*)\n</answer>", re.DOTALL)


def has_think_answer(text: str) -> bool:
    """A <think>...</think> block and, after it, an <answer>...</answer> block, anywhere. (String
    search, not a regex: a lazy pattern goes cubic on a degenerate rollout full of tags.)"""
    pos = 0
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        pos = text.find(tag, pos)
        if pos < 0:
            return False
        pos += len(tag)
    return True


def is_strict_format(text: str) -> bool:
    """`<think>\\nT\\n</think>\\n<answer>\\nA\\n</answer>` and nothing else but outer whitespace.

    >>> is_strict_format("<think>\\n2 and 3 make 5\\n</think>\\n<answer>\\n5\\n</answer>\\n")
    True
    >>> is_strict_format("<think>\\nhm\\n</think>\\n<answer>\\n5\\n</answer> done")
    False
    """
    m = _STRICT.fullmatch(text.strip())
    return m is not None and all(part.strip() and not any(tag in part for tag in TAGS) for part in m.groups())


@REWARDS.register("format_soft")
def format_soft(completion: str, sample: Sample) -> float:
    return float(has_think_answer(completion))


@REWARDS.register("format_soft_r1zero")
def format_soft_r1zero(completion: str, sample: Sample) -> float:
    return float(has_think_answer("<think>" + completion))


@REWARDS.register("format_strict")
def format_strict(completion: str, sample: Sample) -> float:
    return 1.0 if is_strict_format(completion) else -1.0


@REWARDS.register("format_strict_r1zero")
def format_strict_r1zero(completion: str, sample: Sample) -> float:
    return 1.0 if is_strict_format("<think>\n" + completion.lstrip()) else -1.0


@REWARDS.register("format_boxed")
def format_boxed(completion: str, sample: Sample) -> float:
    """1.0 for exactly one \\boxed{...}, closed and not empty; 0.0 for none, two, or a broken one.

    >>> format_boxed("so x = 4, and \\\\boxed{4}", None)
    1.0
    >>> format_boxed("\\\\boxed{3}, no wait: \\\\boxed{4}", None)
    0.0
    """
    if completion.count("\\boxed") != 1:
        return 0.0
    got = last_boxed(completion)
    return float(got is not None and bool(got.strip()))
