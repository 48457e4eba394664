"""`rlvr compare A B`: is B better than A, on the same problems, measured the same way?

Two evals are compared problem by problem (paired), which is far more sensitive than comparing
two accuracies with their separate intervals. One greedy run each: McNemar's exact test on the
discordant problems. Several samples or seeds: a paired bootstrap CI over problems and seeds
and a paired sign-flip permutation test. Evals of different problems or different settings
(k, temperature, seeds, max_new_tokens, template) are refused: their difference would mix the
model with the measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlvr.eval.stats import format_p, mcnemar_exact, paired_bootstrap, paired_verdict, verdict

# where an eval.json sits inside the folders rlvr writes
_PLACES = ("eval.json", "eval/eval.json", "rl/eval/eval.json")


def find_eval(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    for place in _PLACES:
        if (p / place).is_file():
            return p / place
    raise FileNotFoundError(f"{p}: no eval.json here (looked for {', '.join(_PLACES)}); "
                            "run `rlvr eval --model MODEL --out DIR` first, or give the eval.json itself")


@dataclass
class Comparison:
    difference: float  # B - A, accuracy points as a fraction
    ci95: tuple[float, float]
    p_value: float
    test: str
    sentence: str


def paired_compare(scores_a, scores_b, name_a: str = "A", name_b: str = "B") -> Comparison:
    """Compare per-problem scores [seeds][problems] (lists or arrays) of the same problems."""
    a, b = np.asarray(scores_a, dtype=float), np.asarray(scores_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare: {name_a} has scores for {a.shape[0]} seed(s) x {a.shape[-1]} problems, "
                         f"{name_b} for {b.shape[0]} x {b.shape[-1]}; a paired test needs the same problems and seeds")
    binary = a.shape[0] == 1 and np.isin(a, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all()
    if binary:
        m = mcnemar_exact(a[0] == 1, b[0] == 1)
        return Comparison(m.difference, m.ci95, m.p_value, "McNemar exact", verdict(m, before=name_a, after=name_b))
    r = paired_bootstrap(a, b)
    return Comparison(r.difference, r.ci95, r.p_value, r.test, paired_verdict(r, name_a, name_b))


def _heldout(task: dict) -> tuple:
    """What fixes a task's held-out problems: `math` and `math500` both hold out MATH-500, and
    an arithmetic held-out set depends on its seed and digit ranges."""
    name = task.get("name")
    if name == "arithmetic":
        return (name, *(task.get(k) for k in ("seed", "sft_max_digits", "rl_max_digits", "eval_per_bucket")))
    return ("math500" if name in ("math", "math500") else name,)


def check_comparable(a: dict, b: dict, path_a: Path, path_b: Path) -> None:
    for key in ("k", "temperature", "top_p", "seeds", "max_new_tokens", "template"):
        va, vb = a.get("settings", {}).get(key), b.get("settings", {}).get(key)
        if va != vb:
            raise ValueError(f"cannot compare: settings.{key} is {va!r} in {path_a} but {vb!r} in {path_b}; "
                             f"evaluate both with the same eval.{'samples' if key == 'k' else key}")
    # the same held-out set (generated problem ids can coincide across settings) and the same reward
    ta, tb = a.get("task", {}), b.get("task", {})
    for key in ("held-out set", "reward"):
        va, vb = (_heldout(ta), _heldout(tb)) if key == "held-out set" else (ta.get("reward"), tb.get("reward"))
        if va != vb:
            raise ValueError(f"cannot compare: {key} is {va!r} in {path_a} but {vb!r} in {path_b}; "
                             "a paired test needs the same problems scored the same way")
    ids_a, ids_b = a.get("ids"), b.get("ids")
    for ids, ev, path in ((ids_a, a, path_a), (ids_b, b, path_b)):
        if not ids or ev.get("scores") is None:
            raise ValueError(f"{path}: no per-problem results (ids, scores); it was written by an older rlvr: "
                             "evaluate again")
    ha, hb = a.get("problems_sha256"), b.get("problems_sha256")
    if ha and hb and ha != hb:  # ids like "test.jsonl:12" say nothing of which test.jsonl
        raise ValueError(f"cannot compare: {path_a} and {path_b} scored different problems (their prompts or "
                         f"answers differ, task.eval_path {ta.get('eval_path')!r} and {tb.get('eval_path')!r}); "
                         "a paired test needs the same problems in both")
    if ids_a != ids_b:
        common = len(set(ids_a) & set(ids_b))
        raise ValueError(f"cannot compare: different problems ({len(ids_a)} in {path_a}, {len(ids_b)} in {path_b}, "
                         f"{common} in common); a paired test needs the same problems in both")


def compare_runs(path_a: str | Path, path_b: str | Path) -> Comparison:
    fa, fb = find_eval(path_a), find_eval(path_b)
    a, b = json.loads(fa.read_text()), json.loads(fb.read_text())
    check_comparable(a, b, fa, fb)
    name_a, name_b = str(path_a), str(path_b)
    result = paired_compare(a["scores"], b["scores"], "A", "B")
    st = a["settings"]
    mode = "greedy" if st["temperature"] == 0 else f"avg@{st['k']} at T = {st['temperature']}"
    print(f"A = {name_a}: {100 * a['accuracy']:.1f}% [{100 * a['ci95'][0]:.1f}, {100 * a['ci95'][1]:.1f}]")
    print(f"B = {name_b}: {100 * b['accuracy']:.1f}% [{100 * b['ci95'][0]:.1f}, {100 * b['ci95'][1]:.1f}]")
    print(f"{mode}, {len(a['ids'])} problems x {st['seeds']} seed(s); {result.test}")
    print(result.sentence)
    return result


__all__ = ["Comparison", "compare_runs", "find_eval", "format_p", "paired_compare"]
