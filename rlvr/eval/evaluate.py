"""Greedy held-out evaluation: accuracy with a 95% CI, per bucket, lengths, truncation.

The same function serves `rlvr eval`, the periodic evals inside training and the demo's
before/after table, so every number a user sees comes from one place.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlvr.eval.stats import wilson_interval
from rlvr.prompts import prompt_ids
from rlvr.rewards import Reward, score_completion
from rlvr.rollout.hf import SamplingParams
from rlvr.types import Sample


@dataclass
class Score:
    accuracy: float
    ci95: tuple[float, float]
    n: int
    mean_length: float
    truncated: float  # fraction of responses cut at max_new_tokens


@dataclass
class EvalResult:
    overall: Score
    by_bucket: dict[str, Score]
    correct: list[bool] = field(repr=False)  # per problem, in the order of the samples
    ids: list[str] = field(repr=False)

    def to_json(self) -> dict:
        return {**asdict(self.overall), "by_bucket": {k: asdict(v) for k, v in self.by_bucket.items()}}


def score(correct: list[bool], lengths: list[int], truncated: list[bool]) -> Score:
    n = len(correct)
    k = sum(correct)
    return Score(k / max(n, 1), wilson_interval(k, n), n,
                 statistics.fmean(lengths) if lengths else 0.0, sum(truncated) / max(n, 1))


def evaluate(engine, tokenizer, samples: list[Sample], reward: Reward, template: str,
             max_new_tokens: int, batch_size: int = 512, samples_path: Path | None = None,
             bucket_field: str = "bucket") -> EvalResult:
    """Greedy-decode every sample once; a problem counts as correct when its reward is >= 1."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    correct, lengths, truncated, rows = [], [], [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        ids = [prompt_ids(s.prompt, template, tokenizer) for s in chunk]
        for s, (c,) in zip(chunk, engine.generate(ids, 1, params)):
            r, _ = score_completion(reward, c, s)  # an unfinished response is not an answer
            correct.append(r >= 1.0)
            lengths.append(len(c.token_ids))
            truncated.append(c.finish_reason == "length")
            rows.append({"id": s.id, "prompt": s.prompt, "answer": s.answer, "completion": c.text,
                         "reward": r, "finish_reason": c.finish_reason, **dict(s.meta)})
    buckets: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        if bucket_field in s.meta:
            buckets.setdefault(str(s.meta[bucket_field]), []).append(i)
    by_bucket = {name: score([correct[i] for i in idx], [lengths[i] for i in idx], [truncated[i] for i in idx])
                 for name, idx in buckets.items()}
    if samples_path is not None:
        samples_path.parent.mkdir(parents=True, exist_ok=True)
        with samples_path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return EvalResult(score(correct, lengths, truncated), by_bucket, correct, [s.id for s in samples])


def format_table(results: dict[str, EvalResult]) -> str:
    """Rows: overall and each bucket; columns: one per named result (e.g. before / after)."""
    names = list(results)
    first = results[names[0]]
    keys = ["all", *first.by_bucket]
    lines = [f"{'held-out':<10}{'n':>6}  " + "".join(f"{n:<30}" for n in names)]
    for key in keys:
        cells = []
        for name in names:
            s = results[name].overall if key == "all" else results[name].by_bucket[key]
            cells.append(f"{100 * s.accuracy:5.1f}% [{100 * s.ci95[0]:4.1f}, {100 * s.ci95[1]:4.1f}] len {s.mean_length:4.1f}")
        n = first.overall.n if key == "all" else first.by_bucket[key].n
        lines.append(f"{key:<10}{n:>6}  " + "".join(f"{c:<30}" for c in cells))
    return "\n".join(lines)
