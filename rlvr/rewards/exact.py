"""`exact`: 1 when the final boxed answer equals the gold answer as a string, else 0."""

from __future__ import annotations

from rlvr.rewards import REWARDS
from rlvr.types import Sample


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (nested braces allowed), or None if there is none."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None  # unclosed box: no answer


@REWARDS.register("exact")
def exact(completion: str, sample: Sample) -> float:
    """Boxed answer equals `sample.answer` after stripping whitespace.

    >>> exact("2+2=4 \\\\boxed{4}", Sample(prompt="2+2", answer="4"))
    1.0
    """
    got = last_boxed(completion)
    return float(got is not None and got.strip() == sample.answer.strip())
