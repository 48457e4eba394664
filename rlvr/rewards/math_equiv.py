"""The math verifier's logic: is an extracted final answer mathematically the gold answer?

The reward is only as good as its verifier: a false accept teaches the policy to game it, a
false reject hides progress. Extraction (the last box, <answer> tags, hedges) is in
math_extract.py; here:

1. Normalisation (`_clean`) of what math-verify misses: thin-space and `{,}` thousands, a
   trailing period, `\\pmod`, ordinals, degrees, units and `\\$` (from a list; after the gold's
   value, any `\\text{}` words), magnitude words (`4 \\text{ thousand}` = 4000), `\\text{}` words,
   repeating decimals (`0.\\overline{3}` = 1/3), multiple-choice letters with text, percent in words.
2. Equivalence (`equivalent`): the structure first, from the strings: an ordered tuple or an
   interval keeps its order and bracket types, a set or a list of solutions is unordered, a
   union is a set of intervals, `a \\pm b` is the list (a + b, a - b); hedges ("or" inside the
   answer, unless the gold lists several solutions) and stray words are refused; an equation
   counts for the value on its right only when its left is a label (`x =`, `f(2) =`) or a true
   statement about numbers (`\\frac{10}{2} = 5`, not `2x = 4`); then each element with
   math-verify's parser (latex2sympy2): numbers compare exactly (rationals as rationals, others by a zero simplified
   difference or 100 digits; infinities only equal themselves), so a rounded decimal is not the
   exact fraction; `5\\%` is not 5 unless the problem asks for a percent; variables keep their
   case; symbolic expressions use math-verify's `verify`.

Pure Python and sympy, no rlvr imports: the worker processes that run `equivalent` with a hard
time limit (rewards/guard.py, used by rewards/math.py) import this file alone, so they start
without torch. That is also why it stays one file past the style budget: a worker cannot import
a sibling module without putting this folder, and its math.py, on sys.path.
"""

from __future__ import annotations

import re
from fractions import Fraction

def _strip_math(s: str) -> str:
    s = s.strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    return s


def _key(s: str) -> str:
    """s without spaces, except between two digits ("1 2" is not 12) or after a comma between
    digits ("1, 200" is a list, "1,200" a number)."""
    return re.sub(r"\s+", "", re.sub(r"(?<=\d)\s+(?=\d)|(?<=\d,)\s+(?=\d)", "\x00", s))


# ---------------------------------------------------------------- normalisation

_UNIT_WORDS = (
    r"(?:units?|square|cubic|sq|cm|centimeters?|m|meters?|km|kilometers?|mm|inch(?:es)?|in|feet|foot|ft|yards?|yd|"
    r"miles?|mi|mph|hours?|hrs?|minutes?|mins?|seconds?|secs?|s|days?|weeks?|months?|years?|grams?|g|kg|pounds?|lbs?|"
    r"ounces?|oz|liters?|l|ml|gallons?|cents?|dollars?|degrees?|points?|people|students|cups?|pages?|ways|"
    r"marbles|apples|coins|books|boxes|tiles|squares|triangles|numbers|integers)"
)
# a plain trailing word is dropped only if it is one of these (no single letters: "2x" is not 2)
_PLAIN_UNITS = (
    r"(?:(?:square|cubic|sq)\s+)?(?:units?|cm|centimeters?|meters?|km|kilometers?|mm|inch(?:es)?|feet|foot|ft|"
    r"yards?|miles?|mph|hours?|minutes?|seconds?|days?|weeks?|months?|years?|grams?|kg|pounds?|lbs|ounces?|liters?|"
    r"gallons?|cents?|dollars?|degrees?|points?|people|students|cups?|pages?|ways|calories?|tons?|acres?|quarts?|"
    r"pints?|euros?|(?:kilo|milli)(?:grams?|liters?|meters?))"
)
# the whole of a \text{} after a value, dropped as a unit: "cm", "square units", "inches per second"
_UNIT_PHRASE = re.compile(rf"(?:{_PLAIN_UNITS}|{_UNIT_WORDS})(?:\s+per\s+(?:{_PLAIN_UNITS}|{_UNIT_WORDS}))?", re.I)
_MAGNITUDES = {"hundred": "100", "thousand": "1000", "million": "10^{6}", "billion": "10^{9}", "dozen": "12"}
_NOT_UNITS = {"or", "and", "not", "no", "yes", "is", "are", "wrong", "right", "more", "less", "only", "both", "none",
              "all", "each", "than", "about", "maybe", "either", "neither", "nor", "true", "false", "undefined"}
# words after a value that change it ("2 \text{ squared}", "3 \text{ minus two}", "5 \text{ times larger}"):
# never a unit in an answer (a magnitude word that scales is read as its number first). _CHANGES
# change it alone; _CHANGES_IN_A_PHRASE only beside other words ("3 \text{ times}" counts times,
# "4 \text{ quarters}" coins, "5 \text{ times larger}" is no 5)
_CHANGES = {"squared", "cubed", "minus", "plus", "divided", "over", "larger", "smaller", "greater", "fewer",
            "factorial", "hundred", "hundreds", "thousand", "thousands", "million", "millions", "billion",
            "billions", "dozen", "dozens", "percent", "lower", "higher", "double", "triple", "twice", "thrice"}
_CHANGES_IN_A_PHRASE = {"times", "through", "to", "half", "halves", "thirds", "quarters", "fourths", "fifths",
                        "tenths", "hundredths", "root", "roots", "power", "off", "least", "most"}


def _clean(s: str, gold: bool = False) -> str:
    """A normal form of one answer string (not yet split into elements). The `gold` (trusted data)
    may end in any \\text{} words after its value ("45 \\text{ handshakes}"): they are its unit."""
    s = re.sub(r"\s+", " ", _strip_math(s))  # first: no pattern below ever scans a long blank run
    s = re.sub(r"\\text\{\s*(?:\\%|percent)\s*\}|\s*\bpercent\b|(?<=\d)percent\b", r"\\%", s)  # words -> \%
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?=[()\[\]|.]|\\[{}|])", "", s)
    s = s.replace("\\left\\{", "\\{").replace("\\right\\}", "\\}")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"(\d),\s*\\!\s*(?=\d{3}\b)", r"\1,", s)  # 11,\! 111 (MATH's thousands) -> 11,111
    s = s.replace("\\displaystyle", "").replace("\\!", "")
    s = re.sub(r"(\d)\s*(?:\\,|\\;|\\:|(?<!\\)\\ |~|\{,\}|\\thinspace)\s*(?=\d{3}\b)", r"\1", s)  # 10\,080
    s = re.sub(r"\\,|\\;|\\:|\\quad|\\qquad|~|(?<!\\)\\ ", " ", s)
    s = re.sub(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ)|°|\\degree|¢|\\textcent|\\cent\b", "", s)  # degrees, cents
    ordinal = r"(?:st|nd|rd|th)"
    s = re.sub(r"(\d)\s*\^\s*(?:\{\s*(?:\\(?:text|mathrm)\s*\{\s*" + ordinal + r"\s*\}|" + ordinal + r")\s*\}|"
               r"\\(?:text|mathrm)\s*\{\s*" + ordinal + r"\s*\}|" + ordinal + r"\b)", r"\1", s)  # 12^{\text{th}}
    s = re.sub(r"(\d)(?:st|nd|rd|th)\b", r"\1", s)
    s = re.sub(r"\s*\\?\(?\s*\\(?:pmod|bmod|mod)\s*\{?\s*\d+\s*\}?\s*\)?", "", s)  # 3 \pmod 9 -> 3
    s = re.sub(r"\s*\(\s*(?:\\(?:text|mathrm)\s*\{\s*mod\s*\}|\\?mod)\s*\{?\s*\d+\s*\}?\s*\)", "", s)
    # shorthand arguments: \frac\pi2, \frac{3}4, \sqrt3 -> braced
    arg = r"(\\[A-Za-z]+|\d|[A-Za-z])"
    s = re.sub(r"\\frac\s*" + arg + r"\s*" + arg, r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\{[^{}]*\})\s*" + arg, r"\\frac\1{\2}", s)
    s = re.sub(r"\\frac\s*" + arg + r"\s*(\{[^{}]*\})", r"\\frac{\1}\2", s)
    s = re.sub(r"\\sqrt\s*" + arg, r"\\sqrt{\1}", s)
    s = re.sub(r"\(\s*([0-9A-Za-z]+)\s*\)\s*_\s*\{?\s*(\d+)\s*\}?", r"\1_{\2}", s)  # (52)_8 -> 52_{8}
    s = re.sub(r"(?<![\w}])([0-9A-Za-z]+)_(\d+)\b", r"\1_{\2}", s)  # 52_8 -> 52_{8}
    s = s.replace("\\$", "").replace("$", "")
    s = re.sub(r"\\varnothing(?![A-Za-z])|\\\{\s*\\\}", r"\\emptyset", s)
    s = re.sub(r"(\d)\s*(?:\\(?:text|mbox|mathrm)\s*\{\s*(hundred|thousand|million|billion|dozen)\s*\}|"
               r"(hundred|thousand|million|billion|dozen)\b)(?!\s*\d)",  # 4 thousand: 4000; 1 thousand 200: no
               lambda m: f"{m[1]} \\times {_MAGNITUDES[(m[2] or m[3]).lower()]}", s, flags=re.I)
    s = re.sub(r"\\(?:text|textbf|textit|mathrm|mbox|mathbf|operatorname)\s*\{\s*" + _UNIT_WORDS + r"(?:\^?\{?\d\}?)?\s*\}"
               r"(?:\s*\^\s*\{?\d\}?)?", "", s, flags=re.I)
    s = re.sub(r"(?<=[\d}])\s+" + _PLAIN_UNITS + r"(?:\^\{?\d\}?)?\s*$", "", s, flags=re.I)
    # \text at the end, after a value: a unit ("2,000 \text{ calories}", "12\pi \text{ inches per second}",
    # "45 \text{ handshakes}"), unless its words say something ("3 \text{ or more}") or, in an answer, change the
    # value ("2 \text{ squared}"); the gold, trusted data, may end in any words ("\frac{13}{15}\text{ of the pie}")
    m = re.fullmatch(r"(.*?[\w}])\s*\\(?:text|mbox|mathrm)\s*\{\s*([A-Za-z][A-Za-z ]*?)\s*\}(?:\s*\^\s*\{?\d\}?)?", s.strip())
    if m and not re.search(r"\\text|\\mbox", m.group(1)) and (
            _UNIT_PHRASE.fullmatch(m.group(2))
            or not set(words := m.group(2).lower().split()) & (_NOT_UNITS if gold else _NOT_UNITS | _CHANGES)
            and (gold or len(words) == 1 or not set(words) & _CHANGES_IN_A_PHRASE)):
        s = m.group(1)
    s = s.strip().rstrip(".").strip()
    s = re.sub(r"\s+", " ", s)
    if re.fullmatch(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?", s):  # 10 080: spaces between groups of three
        s = s.replace(" ", "")
    return s


def _repeating(s: str) -> str:
    """0.1\\overline{6} -> \\frac{1}{6} (an exact value), for every repeating decimal in s."""

    def frac(m: re.Match) -> str:
        sign, whole, fixed, rep = m.group(1) or "", m.group(2) or "0", m.group(3) or "", m.group(4)
        value = Fraction(int(whole)) + (Fraction(int(fixed), 10 ** len(fixed)) if fixed else 0)
        value += Fraction(int(rep), (10 ** len(rep) - 1) * 10 ** len(fixed))
        value = -value if sign else value
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"

    return re.sub(r"(-)?(\d*)\.(\d*)\\overline\s*\{(\d+)\}", frac, s)


def _decimals_exact(s: str) -> str:
    """Every decimal literal as an exact fraction, so no comparison can round it."""
    return re.sub(r"(?<![\d.])(\d*)\.(\d+)(?![\d.])",
                  lambda m: f"\\frac{{{int(m.group(1) + m.group(2))}}}{{1{'0' * len(m.group(2))}}}", s)


_WRAP = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox|mathbf|emph|textsf)\s*\{([^{}]*)\}")


def _plain_text(s: str) -> str:
    return _WRAP.sub(r"\1", s)


_LETTER = re.compile(r"^\(?\s*([A-Ea-e])\s*\)?$")


def _choice(s: str) -> str | None:
    """The letter of a multiple-choice answer: "(C)", "C", "\\text{(C)} Plane", "C) Plane"."""
    t = _plain_text(s).strip()
    if m := _LETTER.match(t):
        return m.group(1).upper()
    if m := re.match(r"^\(([A-Ea-e])\)\s*\S", t) or re.match(r"^([A-E])[).:]\s+\S", t):
        rest = t[m.end() - 1 :]
        if re.search(r"\(?\b[A-E]\b\)|\b(?:or|and|not|nor)\b", rest, re.I):  # "(C) or (D)": a hedge
            return None
        return m.group(1).upper()
    return None


def _words(s: str) -> str | None:
    """A word answer in a plain form ("Evelyn", "\\text{east}"), or None if s is mathematics."""
    wrapped = _WRAP.search(s) is not None
    t = _plain_text(s).strip().strip(".").strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z' \-]*[A-Za-z]", t) or " - " in t:
        return None
    if wrapped or all(len(w) >= 3 for w in re.split(r"[\s\-']+", t)):  # not a product of variables like "ab"
        return re.sub(r"[\s\-']+", " ", t.lower()).strip()
    return None


# ---------------------------------------------------------------- structure and equivalence

_OPEN, _CLOSE = "([{", ")]}"


def _split_top(s: str, sep: str) -> list[str]:
    """s split at `sep` where no bracket is open."""
    parts, depth, cur, i = [], 0, "", 0
    while i < len(s):
        if s.startswith("\\{", i) or s.startswith("\\}", i):
            depth += 1 if s[i + 1] == "{" else -1
            cur += s[i : i + 2]
            i += 2
            continue
        c = s[i]
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append(cur)
            cur, i = "", i + len(sep)
            continue
        cur += c
        i += 1
    parts.append(cur)
    return [p.strip() for p in parts]


def _outer(s: str) -> tuple[str, str, str] | None:
    """(open, inside, close) when one bracket pair encloses all of s."""
    if s.startswith("\\{") and s.endswith("\\}"):
        inner, o, c = s[2:-2], "{", "}"
    elif len(s) >= 2 and s[0] in "([" and s[-1] in ")]":
        inner, o, c = s[1:-1], s[0], s[-1]
    else:
        return None
    depth = 0
    for i, ch in enumerate(inner):  # the pair must match: "(1)+(2)" is not enclosed
        depth += 1 if ch in _OPEN else -1 if ch in _CLOSE else 0
        if depth < 0:
            return None
    return (o, inner, c) if depth == 0 else None


def _pm(s: str) -> list[str] | None:
    """"a \\pm b" -> ["a + b", "a - b"] (one \\pm or \\mp at the top level)."""
    m = re.search(r"\\(pm|mp)", s)
    if not m or s.count("\\pm") + s.count("\\mp") != 1:
        return None
    a, b = s[: m.start()], s[m.end() :]
    if a.count("{") != a.count("}") or a.count("(") != a.count(")"):  # inside a fraction: (a \pm b)/c
        return [s[: m.start()] + "+" + s[m.end() :], s[: m.start()] + "-" + s[m.end() :]]
    first, second = ("+", "-") if m.group(1) == "pm" else ("-", "+")
    return [f"{a}{first}{b}".strip(), f"{a}{second}{b}".strip()]


_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def _structure(s: str) -> tuple[str, object]:
    """("tuple", (open, close, [items])), ("set", [items]), ("union", [pieces]), ("scalar", s)."""
    if _THOUSANDS.fullmatch(s):
        return "scalar", s.replace(",", "")
    if len(pieces := _split_top(s, "\\cup")) > 1:
        return "union", pieces
    if (outer := _outer(s)) is not None:
        o, inner, c = outer
        items = _split_top(inner, ",")
        if o == "{":
            return "set", _expand_pm(items)
        if len(items) >= 2:
            return "tuple", (o, c, items)
    items = _split_top(s, ",")
    if len(items) >= 2 or _pm(s) is not None:
        return "set", _expand_pm(items)
    return "scalar", s


def _expand_pm(items: list[str]) -> list[str]:
    return [x for item in items for x in (_pm(item) or [item])]


def prefilter(gold: str, answer: str) -> tuple[bool | None, str, str]:
    """The string-level first steps of `equivalent`, cheap enough to run in the caller's process:
    (True / False when they decide, else None, and both answers normalised)."""
    mods_g, mods_a = _MOD.findall(gold), _MOD.findall(answer)
    g, a = _clean(gold, gold=True), _clean(answer)
    if (mods_g and mods_a and mods_g != mods_a) or not a:
        return False, g, a  # 2 (mod 5) is not 2 (mod 7), though both clean to 2
    if _THOUSANDS.fullmatch(g) and re.search(r",\s", a):
        return False, g, a  # 1, 200 is a list, not 1,200
    return (True if _key(g) == _key(a) else None), g, a


def equivalent(gold: str, answer: str, problem: str | None = None) -> bool:
    """Is `answer` (an extracted final answer) the same mathematical object as `gold`? No time
    limit: call it through `verify`, which adds one, for model output."""
    if answer is None:
        return False
    verdict, g, a = prefilter(gold, answer)
    if verdict is not None:
        return verdict
    if _HEDGED.search(_plain_text(a)) and not _HEDGED.search(_plain_text(g)):
        listed = _OR.sub(", ", a)  # "x = 1 \text{ or } x = 2" lists the solutions 1, 2 ...
        kind, items = _structure(g)
        if kind != "set" or len(items) < 2 or _HEDGED.search(_plain_text(listed)):
            return False  # ... but for one value "2 \text{ or } 3", "2 (or 3)" is a hedge, and a hedge is no answer
        a = listed
    g, a = _unlabel(g, a), _unlabel(a, g)
    if _key(g) == _key(a):
        return True
    letters = _plain_text(g).strip()
    if re.fullmatch(r"\(?[A-E]\)?", letters):  # multiple choice (capital letters: a lowercase one is a variable)
        return _choice(a) == letters.strip("()")
    if re.fullmatch(r"\(?[A-E]\)?(?:\s*,\s*\(?[A-E]\)?)+", letters):  # several letters: the same set, nothing else
        plain = _plain_text(a).strip()
        if not re.fullmatch(r"\(?[A-Ea-e]\)?(?:\s*(?:,|and|&)\s*\(?[A-Ea-e]\)?)*", plain):
            return False
        return sorted(re.findall(r"[A-E]", letters)) == sorted(re.findall(r"[A-E]", plain.upper()))
    return _same(_structure(g), _structure(a), problem)


_SIMPLE_LHS = re.compile(r"^\s*(?:[A-Za-z](?:_\{?\w+\}?)?(?:\((?:[A-Za-z]|-?\d+)\))?|\\[A-Za-z]+|"
                         r"\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])+\s*\))\s*=(?!=)")  # x =, f(x) =, f(2) =, \theta =, (p,q,r) =
_IN = re.compile(r"^\s*(?:[A-Za-z]|\\[A-Za-z]+)\s*\\in\s*")


def _unlabel(s: str, other: str) -> str:
    """"x = 3" -> "3" and "x \\in [1, 2]" -> "[1, 2]" unless the other side is labelled too."""
    s = _IN.sub("", s, count=1)
    if s.count("=") != 1:  # "x = 4 = 3" is not 3
        return s
    if _SIMPLE_LHS.match(s) and "=" not in other and len(_split_top(s, ",")) == 1:
        return _SIMPLE_LHS.sub("", s, count=1).strip()
    if _SIMPLE_LHS.match(s) and "=" not in other and _THOUSANDS.fullmatch(_SIMPLE_LHS.sub("", s, count=1).strip()):
        return _SIMPLE_LHS.sub("", s, count=1).strip()
    return s


_HEDGED = re.compile(r"\bor\b|\\vee\b|\\lor\b", re.I)
_OR = re.compile(r"\s*,?\s*(?:\\(?:text|mbox|mathrm)\s*\{\s*or\s*\}|\bor\b|\\vee\b|\\lor\b)\s*", re.I)
_MOD = re.compile(r"(?:\\(?:p|b)?mod|\bmod)\s*\{?\s*(\d+)")


def _same(g: tuple[str, object], a: tuple[str, object], problem: str | None) -> bool:
    kind_g, vg = g
    kind_a, va = a
    if kind_g == "tuple":
        if kind_a != "tuple":
            return False
        (og, cg, ig), (oa, ca, ia) = vg, va
        return (og, cg) == (oa, ca) and len(ig) == len(ia) and all(_scalar(x, y, problem) for x, y in zip(ig, ia))
    if kind_g in ("set", "union"):
        if kind_a != kind_g and not (kind_g == "set" and kind_a == "scalar"):
            return False
        items_a = va if kind_a != "scalar" else [va]
        if len(vg) != len(items_a):
            return False
        left = list(items_a)
        for x in vg:  # a matching, element by element (lists are short)
            sub_g = _structure(x) if kind_g == "union" else ("scalar", x)
            hit = next((j for j, y in enumerate(left)
                        if _same(sub_g, _structure(y) if kind_g == "union" else ("scalar", y), problem)), None)
            if hit is None:
                return False
            left.pop(hit)
        return True
    if kind_a == "set" and len(va) == 1:
        va, kind_a = va[0], "scalar"
    if kind_a != "scalar":
        return False
    return _scalar(vg, va, problem)


_ASKS_PERCENT = re.compile(r"\b(?:what|which|by\s+what|how\s+many)\s+(?:percent|%)|percentage|\bas\s+a\s+percent|"
                           r"\bin\s+percent|\bpercent\s+(?:increase|decrease|change|error|discount)", re.I)


def _asks_percent(problem: str | None) -> bool:
    """Does the question ask for a percent ("What percent of ...", "as a percentage")? A "%"
    elsewhere in the problem ("a 20% discount") does not make the answer a percent."""
    return bool(problem and _ASKS_PERCENT.search(problem))


def _percent(s: str) -> tuple[str, bool]:
    t = re.sub(r"\s*(?:\\%|%|\\text\{\s*percent\s*\}|\s+percent)\s*$", "", s)
    return t, t != s


def _scalar(g: str, a: str, problem: str | None) -> bool:
    g, a = _clean(g, gold=True), _clean(a)
    if _key(g) == _key(a):
        return True
    g, g_pct = _percent(g)
    a, a_pct = _percent(a)
    if a_pct and not g_pct and not _asks_percent(problem):
        return False  # 5% is 0.05, not 5, unless the question asks for a percent
    # "x = 3" for 3 (either side): a bare variable on the left is a label, not part of the value
    if g.count("=") > 1 or a.count("=") > 1:
        return False
    if _SIMPLE_LHS.match(g) and "=" not in a:
        g = _SIMPLE_LHS.sub("", g, count=1)
    if _SIMPLE_LHS.match(a) and "=" not in g:
        a = _SIMPLE_LHS.sub("", a, count=1)
    if _SIMPLE_LHS.match(g) and _SIMPLE_LHS.match(a) and g.split("=")[0].strip() == a.split("=")[0].strip():
        g, a = g.split("=", 1)[1], a.split("=", 1)[1]
    if ("=" in g) != ("=" in a):  # math-verify would compare the right side of "2x = 4" with 4
        g, a = (_stated_value(g, problem) if "=" in g else g), (_stated_value(a, problem) if "=" in a else a)
        if g is None or a is None:
            return False
    if _key(g) == _key(a):
        return True
    wg, wa = _words(g), _words(a)
    if wg is not None or wa is not None:
        return wg is not None and wg == wa
    fg, fa = _plain_number(g), _plain_number(a)
    if fg is not None and fa is not None:
        return fg == fa
    return _symbolic(g, a)


def _stated_value(s: str, problem: str | None = None) -> str | None:
    """The value an equation gives, else None: its right side when the left names the quantity
    asked for ("AB = 5", "m + n = 25": no digits, and in the problem's text when there is one) or
    when it is a true statement about numbers ("\\frac{10}{2} = 5", "3! = 6"); "2x = 4", "x^2 = 2"
    state a condition, "0 = 2" a falsehood."""
    lhs, _, rhs = s.partition("=")
    compact = lambda t: re.sub(r"[\s${}]", "", t)  # noqa: E731 - "$m + n$" and "m+n" are one name
    if re.fullmatch(r"[A-Za-z\\+\-\s{}()_^',]+", lhs) and (problem is None or compact(lhs) in compact(problem)):
        return rhs
    try:
        left, right = _parse(lhs), _parse(rhs)
        return rhs if left.is_number and right.is_number and _same_number(left, right) else None
    except Exception:  # noqa: BLE001 - a side that does not parse states nothing
        return None


def _plain_number(s: str) -> Fraction | None:
    """An exact value for an integer, a decimal, a/b or \\frac{a}{b} (signed), else None."""
    t = _repeating(re.sub(r"(?<!\d) +| +(?!\d)", "", s))
    if " " in t:  # digits apart: not one number
        return None
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", t) or re.fullmatch(r"(-?)(\d+)/(\d+)", t)
    if m:
        return None if int(m.group(3)) == 0 else (-1 if m.group(1) else 1) * Fraction(int(m.group(2)), int(m.group(3)))
    if re.fullmatch(r"[-+]?(?:\d+\.?\d*|\.\d+)", t):
        return Fraction(t.rstrip(".") if not t.endswith(".") else t[:-1])
    return None


def warmup() -> None:
    """The heavy imports and a first parse, done by a worker before it takes work (guard.py)."""
    _parse("x^2 + \\frac{1}{2}")
    import math_verify  # imported now, not within a call's time limit

    assert math_verify.verify


def _parse(s: str):
    from latex2sympy2_extended import latex2sympy
    from latex2sympy2_extended.latex2sympy2 import NormalizationConfig
    from latex2sympy2_extended.math_normalization import normalize_latex

    # units=False: math-verify's unit removal drops any trailing letter or two as a unit (5t -> 5,
    # \pi r^2 h -> \pi r^2); _clean has already removed the real units, by name
    config = NormalizationConfig(basic_latex=True, units=False, malformed_operators=True, nits=True, boxed="none",
                                 equations=False)
    return latex2sympy(normalize_latex(_decimals_exact(_repeating(s)), config))


def _explicit(e):
    """A scalar times a matrix (\\frac{1}{7}\\begin{pmatrix}...) as one explicit matrix."""
    from sympy.matrices.expressions import MatrixExpr

    return e.as_explicit() if isinstance(e, MatrixExpr) else e


def _same_number(x, y) -> bool:
    """Exactly equal numbers (no rounding of either side): infinities only equal themselves,
    rationals compare as rationals, anything else must simplify to a zero difference or, for
    values sympy cannot simplify (transcendental mixtures), agree to 100 significant digits."""
    import sympy

    if x.is_finite is not True or y.is_finite is not True:
        return bool(x == y)
    if x.is_Rational and y.is_Rational:
        return bool(x == y)
    diff = sympy.simplify(x - y)
    if diff == 0:
        return True
    if diff.is_Rational or diff.is_zero is False:
        return False
    value, scale = sympy.N(diff, 110), sympy.N(x, 110)
    return bool(value.is_number and abs(value) <= sympy.Float(10, 110) ** -100 * max(1, abs(scale)))


_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
          "kappa", "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
          "omega"}


def _identifiers(s: str) -> set[str]:
    r"""The variable names of a LaTeX string: single letters outside commands and \text, and Greek
    letters (with their case: \Theta is not \theta)."""
    s = re.sub(r"\\(?:text|mathrm|mbox|operatorname)\s*\{[^{}]*\}", " ", s)
    greek = {g for g in re.findall(r"\\([A-Za-z]+)", s) if g.lower() in _GREEK}
    letters = set(re.findall(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", " ", s)))
    return letters | {"\\" + g for g in greek}


def _stray_words(s: str) -> set[str]:
    """Words in a mathematical answer ("0 point 5", "3 \text{ is wrong}"): the parser would read
    them as products of variables, and a zero or a cancellation could then match the gold."""
    plain = re.sub(r"\\(?:begin|end)\s*\{[A-Za-z*]+\}|\\[A-Za-z]+", " ", _plain_text(s))
    return {w.lower() for w in re.findall(r"[A-Za-z]{3,}", plain)} | {
        w.lower() for w in re.findall(r"\b[A-Za-z]{2}\b", plain) if w.lower() in _NOT_UNITS}


def _case_conflict(g: str, a: str) -> bool:
    """An answer whose variable differs from the gold's only in case (A + B for a + b): the
    parser lowercases names, so this is checked on the strings."""
    ig, ia = _identifiers(g), _identifiers(a)
    swap = lambda n: n[0] + n[1].swapcase() + n[2:] if n.startswith("\\") else n.swapcase()  # noqa: E731
    return any(n not in ig and swap(n) in ig for n in ia) or any(n not in ia and swap(n) in ia for n in ig)


def _symbolic(g: str, a: str) -> bool:
    import sympy
    from math_verify import verify

    if _case_conflict(g, a) or _stray_words(a) - _stray_words(g):
        return False
    try:
        eg, ea = _explicit(_parse(g)), _explicit(_parse(a))
    except Exception:  # noqa: BLE001 - an answer that does not parse is not the gold
        return False
    if isinstance(eg, sympy.Equality) and isinstance(ea, sympy.Equality):  # proportional equations
        dg, da = eg.lhs - eg.rhs, ea.lhs - ea.rhs
        if dg.free_symbols and dg.free_symbols == da.free_symbols:
            ratio = sympy.simplify(dg / da)
            return bool(ratio.is_number and ratio != 0)
    if isinstance(eg, sympy.Basic) and isinstance(ea, sympy.Basic):
        if not isinstance(eg, (sympy.Set, sympy.Equality, sympy.MatrixBase)) and not isinstance(ea, (sympy.Set, sympy.Equality)):
            try:
                if eg.is_number and ea.is_number:
                    return _same_number(eg, ea)
            except (TypeError, ValueError):
                pass
    if isinstance(eg, sympy.MatrixBase) or isinstance(ea, sympy.MatrixBase):
        if not (isinstance(eg, sympy.MatrixBase) and isinstance(ea, sympy.MatrixBase)) or eg.shape != ea.shape:
            return False
        return all(sympy.simplify(x - y) == 0 for x, y in zip(eg, ea))
    return bool(verify(eg, ea, float_rounding=12, timeout_seconds=0))




def _torch_loaded() -> bool:
    """For a test: the worker processes must start without torch (a second of start-up, 200 MB)."""
    import sys

    return "torch" in sys.modules
