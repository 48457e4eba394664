"""Extraction of a response's final answer for the math verifier: the last \\boxed{...} /
\\fbox{...} (nested braces; also the brace-less "\\boxed 5"), or the inside of <answer>...</answer>.
Strict by default (training): no box, no answer. A hedge ("\\boxed{2} or \\boxed{3}") is no
answer; a revision (a box, more reasoning, another box) is judged by the last box; boxes joined by
"and" or "," at the very end form one list. `mode="lenient"` (evaluation) also takes "the answer
is X" or the last number. Linear time in the response's length.
"""

from __future__ import annotations

import re

from rlvr.rewards.math_equiv import _key, _plain_text, _strip_math

_BOX = re.compile(r"\\(?:boxed|fbox)(?:\s*\{|\s+(?=[^\s{]))")


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every closed \\boxed{...} / \\fbox{...} (and of "\\boxed 5", the
    brace-less form some MATH solutions use), in order."""
    out, pos = [], 0
    while (m := _BOX.search(text, pos)) is not None:
        if not m.group().endswith("{"):  # \boxed 5: one token
            token = re.match(r"[^\s$]+", text[m.end() :]).group()
            out.append((m.start(), m.end() + len(token), token))
            pos = m.end() + len(token)
            continue
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth:  # unclosed: nothing after it can close a box either
            out.append((m.start(), len(text), None))
            break
        out.append((m.start(), j, text[m.end() : j - 1]))
        pos = j
    return out


_HEDGE = re.compile(r"^[\s$.,;:]*(?:either\s+|,\s*)?(?:or\b|\\vee\b|\\lor\b|/)", re.I)
_JOIN = re.compile(r"^[\s$]*(?:,|and|&|\\text\{\s*and\s*\}|\\quad|\\qquad)[\s$]*(?:and)?[\s$]*$", re.I)


def extract_answer(text: str, mode: str = "strict") -> str | None:
    """The final answer of a response, or None (no answer, an unclosed box, or a hedge)."""
    end = text.rfind("</answer>")
    start = text.rfind("<answer>", 0, end) if end >= 0 else -1
    if start >= 0:
        inner = text[start + len("<answer>") : end]
        return extract_answer(inner, "strict") if _BOX.search(inner) else _strip_math(inner)
    boxes = _boxes(text)
    if boxes:
        if boxes[-1][2] is None:
            return None
        last = [boxes[-1]]  # boxes joined by "and" / "," at the very end form one list answer
        while len(last) < len(boxes):
            prev = boxes[-len(last) - 1]
            between = _plain_text(text[prev[1] : last[0][0]])
            if prev[2] is None or not (_JOIN.match(between) or _HEDGE.match(between)):
                break
            if _HEDGE.match(between) and _key(prev[2]) != _key(last[0][2]):
                return None  # "\boxed{2} or \boxed{3}": a hedge is no answer
            last.insert(0, prev)
        contents = list(dict.fromkeys(b[2].strip() for b in last))
        return ", ".join(contents)
    if mode == "lenient":  # markdown emphasis off first ("The answer is **42**."), not a power ("2**3")
        text = re.sub(r"(?<![\w*])(\*\*|__)(?=\S)(.+?)(?<=\S)\1(?![\w*])", r"\2", text)
        m = re.findall(r"answer is[:\s]*\$?([^$\n]+?)\$?\s*(?:\.\s*$|\n|$)", text, re.I | re.M)
        if m:
            return _strip_math(m[-1])
        nums = re.findall(r"-?\d+(?:[.,]\d+)*(?:/\d+)?", text)
        return nums[-1] if nums else None
    return None


