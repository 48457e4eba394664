"""Agreement of answer verifiers with hand labels, side by side: rlvr's `math` verifier and
plain math-verify (`verify(parse(gold), parse(response))`, its defaults).

    python benchmarks/verifier.py LABELLED.jsonl [--show 20]

Each line: {"gold", "response", "correct": true|false[, "problem", "category", "id"]}. The
labelled corpora live outside the repository (they are built from MATH-500's gold answers,
which we do not redistribute). Prints agreement, false accepts and false rejects per verifier,
the categories where they fail, and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path


def math_verify_baseline(rows: list[dict]) -> list[bool]:
    from math_verify import parse, verify

    out = []
    for r in rows:
        try:
            out.append(bool(verify(parse(f"${r['gold']}$"), parse(r["response"]))))
        except Exception:  # noqa: BLE001
            out.append(False)
    return out


def ours(rows: list[dict], workers: int) -> list[bool]:
    from rlvr.rewards.math import verify_batch

    return verify_batch([(r["gold"], r["response"], r.get("problem")) for r in rows], workers=workers)


def summarise(name: str, rows: list[dict], verdicts: list[bool], seconds: float, show: int) -> dict:
    fp = [r for r, v in zip(rows, verdicts) if v and not r["correct"]]
    fn = [r for r, v in zip(rows, verdicts) if not v and r["correct"]]
    agree = 1 - (len(fp) + len(fn)) / len(rows)
    print(f"{name:<14} agreement {100 * agree:6.2f}%  false accepts {len(fp):3d}  false rejects {len(fn):3d}  "
          f"({seconds:.1f} s)")
    by_cat = collections.Counter(r.get("category", "?") for r in fp + fn)
    if by_cat:
        print("   wrong by category: " + ", ".join(f"{k} {v}" for k, v in by_cat.most_common()))
    for kind, bad in (("FALSE ACCEPT", fp), ("FALSE REJECT", fn)):
        for r in bad[:show]:
            tail = r["response"][-160:].replace("\n", " ")
            print(f"   {kind} [{r.get('id', '')}/{r.get('category', '')}] gold {r['gold']!r} | ...{tail!r}")
    return {"agreement": agree, "false_accepts": len(fp), "false_rejects": len(fn), "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--show", type=int, default=10, help="wrong cases to print per kind")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    rows = [json.loads(line) for line in args.corpus.read_text().splitlines() if line.strip()]
    print(f"{args.corpus}: {len(rows)} labelled cases, {sum(r['correct'] for r in rows)} correct")
    result = {"n": len(rows)}
    t = time.perf_counter()
    result["rlvr"] = summarise("rlvr math", rows, ours(rows, args.workers), time.perf_counter() - t, args.show)
    if not args.no_baseline:
        t = time.perf_counter()
        result["math_verify"] = summarise("math-verify", rows, math_verify_baseline(rows), time.perf_counter() - t,
                                          args.show)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
