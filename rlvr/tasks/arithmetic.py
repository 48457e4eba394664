"""Procedural arithmetic: the embedded default task.

Problems are `a+b`, `a-b` and `a*d` (d one digit). Worked solutions go digit by digit from the
right, one line per digit, each line carrying the partial result built so far, so every step is
local: read two digits and a carry, write their sum, prepend one digit to the previous partial.

    347+85        ->  7+5+0=12|2        (units: 7+5, carry in 0, sum 12, partial "2")
                      4+8+1=13|32
                      3+0+1=4|432       (last line: the whole sum is prepended)
                      \\boxed{432}

Subtraction writes `a-b` with a borrow (`14-8-0=6` means 4 borrowed ten) and states a swap first
when the result is negative; multiplication carries the tens of the previous product.

Problems are drawn from seeded generators and the splits are disjoint: a problem's split is a
hash of its canonical text, so a held-out problem can never be drawn for training, whatever the
seeds. The canonical text puts the operands of `+` and `*` in order, so `7+5` and `5+7` share a
split: a held-out problem's commutative twin is never trained on either. One draw holds at most
one of two twins.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from rlvr.types import Sample

OPS = ("+", "-", "*")


@dataclass(frozen=True)
class Problem:
    a: int
    b: int
    op: str

    @property
    def text(self) -> str:
        return f"{self.a}{self.op}{self.b}"

    @property
    def value(self) -> int:
        return {"+": self.a + self.b, "-": self.a - self.b, "*": self.a * self.b}[self.op]

    @property
    def canonical(self) -> str:
        """The text with the operands of a commutative operation in order: `7+5` -> `5+7`."""
        if self.op == "-":
            return self.text
        a, b = sorted((self.a, self.b))
        return f"{a}{self.op}{b}"

    @property
    def digits(self) -> int:
        return len(str(max(self.a, self.b)))


def _add_lines(a: int, b: int) -> tuple[list[str], str]:
    xs, ys = str(a)[::-1], str(b)[::-1]
    carry, partial, lines = 0, "", []
    n = max(len(xs), len(ys))
    for i in range(n):
        x, y = int(xs[i]) if i < len(xs) else 0, int(ys[i]) if i < len(ys) else 0
        s = x + y + carry
        partial = (str(s) if i == n - 1 else str(s % 10)) + partial
        lines.append(f"{x}+{y}+{carry}={s}|{partial}")
        carry = s // 10
    return lines, partial


def _sub_lines(a: int, b: int) -> tuple[list[str], str]:
    """Lines for a - b with a >= b."""
    xs, ys = str(a)[::-1], str(b)[::-1]
    borrow, partial, lines = 0, "", []
    for i in range(len(xs)):
        x, y = int(xs[i]), int(ys[i]) if i < len(ys) else 0
        top = x + 10 if x < y + borrow else x
        d = top - y - borrow
        partial = str(d) + partial
        lines.append(f"{top}-{y}-{borrow}={d}|{partial}")
        borrow = 1 if top > x else 0
    return lines, str(int(partial))


def _mul_lines(a: int, d: int) -> tuple[list[str], str]:
    xs = str(a)[::-1]
    carry, partial, lines = 0, "", []
    for i, ch in enumerate(xs):
        p = int(ch) * d + carry
        partial = (str(p) if i == len(xs) - 1 else str(p % 10)) + partial
        lines.append(f"{ch}*{d}+{carry}={p}|{partial}")
        carry = p // 10
    return lines, str(int(partial))


def worked_solution(p: Problem) -> str:
    if p.op == "+":
        lines, result = _add_lines(p.a, p.b)
    elif p.op == "*":
        lines, result = _mul_lines(p.a, p.b)
    elif p.a >= p.b:
        lines, result = _sub_lines(p.a, p.b)
    else:
        lines, result = _sub_lines(p.b, p.a)
        lines = [f"-({p.b}-{p.a})", *lines]
        result = "-" + result
    assert int(result) == p.value, (p, result)
    return "\n".join([*lines, f"\\boxed{{{p.value}}}"])


def random_problem(rng: random.Random, min_digits: int, max_digits: int) -> Problem:
    """Operands with a uniform number of digits in [min_digits, max_digits]; * takes one digit."""
    op = rng.choice(OPS)
    n = rng.randint(min_digits, max_digits)

    def number(k: int) -> int:
        return rng.randint(10 ** (k - 1) if k > 1 else 0, 10**k - 1)

    if op == "*":
        return Problem(number(n), rng.randint(0, 9), op)
    # the second operand has n digits or fewer, so a problem's size is its longer operand
    return Problem(number(n), number(rng.randint(1, n)), op)


def split_of(p: Problem, heldout_fraction: float = 0.1) -> str:
    """"train" or "heldout", from a hash of the problem's canonical text (commutative twins agree)."""
    h = int.from_bytes(hashlib.blake2b(p.canonical.encode(), digest_size=8).digest(), "big")
    return "heldout" if (h % 10_000) < heldout_fraction * 10_000 else "train"


def make_samples(
    n: int, split: str, seed: int, min_digits: int, max_digits: int, with_solution: bool
) -> list[Sample]:
    """`n` distinct problems of `split` ("train" or "heldout") drawn with `seed`; distinct up to
    commutation too, so a held-out set never counts `7+5` and `5+7` as two problems, and an SFT
    validation slice cut from the same draw holds no twin of a problem it trains on."""
    rng = random.Random(f"{seed}:{split}:{min_digits}:{max_digits}")
    seen: set[str] = set()
    out: list[Sample] = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        p = random_problem(rng, min_digits, max_digits)
        if p.canonical in seen or split_of(p) != split:
            continue
        seen.add(p.canonical)
        out.append(
            Sample(
                prompt=p.text,
                answer=str(p.value),
                solution=worked_solution(p) if with_solution else None,
                meta={"op": p.op, "digits": p.digits},
                id=f"{split}-{p.text}",
            )
        )
    if len(out) < n:
        raise ValueError(
            f"only {len(out)} distinct {split} problems with {min_digits}-{max_digits} digits "
            f"exist; ask for fewer than {n} or allow more digits"
        )
    return out
