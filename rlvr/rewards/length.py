"""Length-dependent reward terms, added on top of a task's correctness reward."""

from __future__ import annotations


def overlong_penalty(length: int, max_new_tokens: int, buffer: int, penalty: float = 1.0) -> float:
    """DAPO's soft overlong punishment (arXiv 2503.14476 eq. 13), a value in [-penalty, 0].

    With L_max = max_new_tokens and a buffer of L_cache tokens before it: 0 up to
    L_max - L_cache tokens, then falling linearly to -penalty at L_max (and -penalty beyond,
    which our engine never produces). It tells the policy that long is bad before the hard cut
    at L_max turns a response into a truncated one. buffer = 0 turns it off.
    """
    if buffer <= 0:
        return 0.0
    free = max_new_tokens - buffer
    if length <= free:
        return 0.0
    return -penalty * min(1.0, (length - free) / buffer)
