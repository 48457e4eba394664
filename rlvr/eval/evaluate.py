"""Held-out evaluation: greedy or k samples per problem, over one or several seeds.

The same function serves `rlvr eval`, the periodic evals inside training, SFT's plateau checks
and the demo's before/after table, so every number a user sees comes from one place.

Per problem and seed it keeps every completion, its extracted answer, reward and length, and
derives avg@k (mean pass@1 over the k samples), pass@k (Chen et al.'s unbiased estimator;
with n = k samples it is "any correct"), maj@k (majority over answers grouped by the verifier's
equivalence) and best-of-k (the finished sample with the highest mean token logprob, no verifier).
The headline accuracy is avg@k (greedy accuracy when k = 1 at temperature 0). Its 95% CI is a
Wilson interval for one greedy run, or when the problems' scores show no spread, else a bootstrap
over problems and seeds.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rlvr.eval.stats import bootstrap_ci, majority_vote, pass_at_k, wilson_interval
from rlvr.prompts import prompt_ids, resolve_template
from rlvr.rewards import Reward, score_many
from rlvr.rewards.exact import last_boxed
from rlvr.rollout.hf import SamplingParams
from rlvr.types import Sample


@dataclass(frozen=True)
class EvalSettings:
    """What was measured; two evals are comparable only when these match."""

    k: int = 1  # completions per problem
    temperature: float = 0.0  # 0: greedy (then k must be 1)
    top_p: float = 1.0
    seeds: int = 1  # independent repeats of the sampling (seed 0, 1, ...)
    max_new_tokens: int = 96
    template: str = "auto"


@dataclass
class Score:
    accuracy: float  # avg@k, averaged over problems and seeds
    ci95: tuple[float, float]
    n: int  # problems
    mean_length: float
    truncated: float  # fraction of responses cut at max_new_tokens
    median_length: float = 0.0
    max_length: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # avg@k, pass@k, maj@k, best@k
    per_seed: list[float] = field(default_factory=list)  # accuracy of each seed


@dataclass
class EvalResult:
    overall: Score
    by_bucket: dict[str, Score]  # the `bucket` breakdown (the demo's "seen" / "longer")
    correct: list[bool] = field(repr=False)  # per problem: avg@k == 1 for every seed (greedy: correct)
    ids: list[str] = field(repr=False)
    scores: list[list[float]] = field(default_factory=list, repr=False)  # [seeds][problems] avg@k
    breakdown: dict[str, dict[str, Score]] = field(default_factory=dict)  # metadata field -> value -> Score
    settings: EvalSettings = field(default_factory=EvalSettings)

    def to_json(self) -> dict:
        return {**asdict(self.overall), "by_bucket": {k: asdict(v) for k, v in self.by_bucket.items()},
                "breakdown": {f: {k: asdict(v) for k, v in d.items()} for f, d in self.breakdown.items()},
                "settings": asdict(self.settings), "ids": self.ids, "scores": self.scores}


@dataclass
class _Problem:
    """One problem's completions under one seed."""

    correct: list[bool]
    answers: list[str | None]
    lengths: list[int]
    truncated: list[bool]
    mean_logprobs: list[float]

    def votes(self) -> list[str | None]:
        """The answers that vote in maj@k: a response cut at max_new_tokens gave none (it scores 0,
        and its extracted text may be a half-written number), whatever could be extracted from it."""
        return [None if cut else answer for answer, cut in zip(self.answers, self.truncated)]

    def metrics(self, same: Callable[[str, str], bool] | None) -> dict[str, float]:
        k = len(self.correct)
        # best@k picks among finished responses, as maj@k votes only with them: a repetition loop
        # cut at max_new_tokens has a high mean logprob and would win; none finished scores 0
        finished = [j for j in range(k) if not self.truncated[j]]
        best = max(finished, key=lambda j: self.mean_logprobs[j]) if finished else None
        return {f"avg@{k}": sum(self.correct) / k, f"pass@{k}": pass_at_k(k, sum(self.correct), k),
                f"maj@{k}": float(majority_vote(self.votes(), self.correct, same)[1]),
                f"best@{k}": 0.0 if best is None else float(self.correct[best])}


def _run_seed(engine, tokenizer, samples, reward, settings: EvalSettings, seed: int, batch_size: int,
              extract: Callable[[str], str | None], rows: list | None) -> list[_Problem]:
    problems = []
    step = max(1, batch_size // settings.k)
    for start in range(0, len(samples), step):
        chunk = samples[start : start + step]
        # a seed per chunk, so chunks do not replay one random stream; the training RNG is untouched
        params = SamplingParams(settings.max_new_tokens, settings.temperature, settings.top_p,
                                seed=None if settings.temperature == 0 else seed * 1_000_003 + start)
        ids = [prompt_ids(s.prompt, settings.template, tokenizer) for s in chunk]
        groups = engine.generate(ids, settings.k, params)
        # the whole chunk scored at once (a batch-capable reward runs it in parallel); unfinished scores 0
        flat, flat_correct, _ = score_many(reward, [c for g in groups for c in g], [s for s in chunk for _ in range(settings.k)])
        for j, (s, group) in enumerate(zip(chunk, groups)):
            k = len(group)
            scored, correct = flat[j * k : (j + 1) * k], flat_correct[j * k : (j + 1) * k]
            p = _Problem(correct, [extract(c.text) for c in group],
                         [len(c.token_ids) for c in group], [c.finish_reason == "length" for c in group],
                         [sum(c.logprobs) / max(1, len(c.logprobs)) for c in group])
            problems.append(p)
            if rows is not None:
                rows.append({"id": s.id, "seed": seed, "prompt": s.prompt, "answer": s.answer,
                             "completions": [c.text for c in group], "extracted": p.answers, "rewards": scored,
                             "finish_reasons": [c.finish_reason for c in group],
                             "mean_logprobs": p.mean_logprobs, **dict(s.meta)})
    return problems


def _score(runs: list[list[_Problem]], idx: Sequence[int], same) -> Score:
    """Score of problems `idx` (at least one) over every seed's run."""
    per = [[runs[s][i].metrics(same) for i in idx] for s in range(len(runs))]  # [seeds][problems] dicts
    names = list(per[0][0])
    matrix = np.array([[m[names[0]] for m in seed] for seed in per])  # [seeds, problems] avg@k
    lengths = [n for s in range(len(runs)) for i in idx for n in runs[s][i].lengths]
    truncated = [t for s in range(len(runs)) for i in idx for t in runs[s][i].truncated]
    n = len(idx)
    problem_means = matrix.mean(axis=0)  # [problems], over seeds
    binary = len(runs) == 1 and len(runs[0][idx[0]].correct) == 1
    if binary:  # one greedy (or one-sample) run: a Wilson interval on a binomial count
        ci = wilson_interval(int(matrix.sum()), n)
    elif np.ptp(problem_means) < 1e-12:
        # Every problem scores the same (all 4 of 4 samples right, or a 1-problem bucket): resampling
        # problems sees no uncertainty and the bootstrap interval has zero width. The Wilson interval
        # of the mean over n problems is the widest their [0, 1] scores allow (variance <= p(1 - p)),
        # and exactly the greedy one when every score is 0 or 1.
        ci = wilson_interval(min(float(problem_means.sum()), n), n)
    else:
        ci = bootstrap_ci(matrix)[1:]
    metrics = {m: float(np.mean([[p[m] for p in seed] for seed in per])) for m in names}
    return Score(float(matrix.mean()), tuple(float(x) for x in ci), n, statistics.fmean(lengths),
                 sum(truncated) / len(truncated), float(statistics.median(lengths)), max(lengths), metrics,
                 [float(row.mean()) for row in matrix])


def check_by(samples: Sequence[Sample], by: Sequence[str]) -> None:
    """Refuse a breakdown field (eval.by, --by) that no problem has: a misspelled or unstripped
    field would otherwise silently give no breakdown. A field some problems lack is fine."""
    missing = [name for name in by if not any(name in s.meta for s in samples)]
    if missing:
        have = sorted({key for s in samples for key in s.meta})
        raise ValueError(f"eval.by field {missing[0]!r} is in none of the {len(samples)} problems' metadata; "
                         f"they have: {', '.join(have) or 'no metadata fields'} (set eval.by / --by to some of "
                         "these, or leave it empty)")


def evaluate(engine, tokenizer, samples: list[Sample], reward: Reward, template: str,
             max_new_tokens: int, batch_size: int = 512, samples_path: Path | None = None,
             bucket_field: str = "bucket", *, k: int = 1, temperature: float = 0.0, top_p: float = 1.0,
             seeds: int = 1, by: Sequence[str] = (), extract: Callable[[str], str | None] = last_boxed,
             same: Callable[[str, str], bool] | None = None) -> EvalResult:
    """Evaluate `samples`; a completion is correct when its reward is >= 1.

    k completions per problem at `temperature` (0: greedy, k = 1), repeated for `seeds` seeds;
    scores broken down by `bucket_field` (when the problems have it: the embedded task does, others
    may not) and every metadata field in `by` that some of them have (callers check the whole
    held-out set with `check_by` first: under torchrun each rank evaluates a slice, and a field
    missing from one rank's slice must not stop that rank alone). `extract` pulls the final answer
    out of a completion and `same` says when two answers agree (for maj@k). An empty `samples` is
    an error: there is nothing to score.
    """
    if not samples:
        raise ValueError("no held-out problems to evaluate: check the task's held-out set (task.eval_path "
                         "for a jsonl task) and eval.limit")
    if temperature == 0 and (k > 1 or seeds > 1):
        raise ValueError("greedy evaluation (temperature 0) is deterministic: use k = 1 and seeds = 1, "
                         "or set eval.temperature > 0 to sample")
    # the template as resolved for this tokenizer: two evals saved as "auto" may have prompted differently
    settings = EvalSettings(k, temperature, top_p, seeds, max_new_tokens, resolve_template(template, tokenizer))
    rows: list | None = [] if samples_path is not None else None
    runs = [_run_seed(engine, tokenizer, samples, reward, settings, seed, batch_size, extract, rows)
            for seed in range(seeds)]
    breakdown: dict[str, dict[str, Score]] = {}
    for name in dict.fromkeys([bucket_field, *by]):
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            if name in s.meta:
                groups.setdefault(str(s.meta[name]), []).append(i)
        if groups:
            breakdown[name] = {value: _score(runs, idx, same) for value, idx in groups.items()}  # first-seen order
    if samples_path is not None:
        samples_path.parent.mkdir(parents=True, exist_ok=True)
        with samples_path.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    scores = [[sum(p.correct) / len(p.correct) for p in run] for run in runs]
    correct = [all(scores[s][i] == 1.0 for s in range(seeds)) for i in range(len(samples))]
    return EvalResult(_score(runs, range(len(samples)), same), breakdown.get(bucket_field, {}), correct,
                      [s.id for s in samples], scores, breakdown, settings)


def eval_problems(heldout: list, eval_cfg) -> list:
    """The held-out problems a recipe's evaluations use: the first eval.limit of them (0: all).
    Every evaluation of a run (after SFT, periodic, after RL) takes the same ones, so any two can
    be compared problem by problem."""
    return heldout[: eval_cfg.limit] if eval_cfg.limit else heldout


def eval_kwargs(eval_cfg, reward_spec: str = "exact") -> dict:
    """evaluate()'s keywords from a recipe's `eval:` section, and the answer extraction and
    equivalence (maj@k) that go with its task.reward."""
    from rlvr.rewards import answer_tools

    extract, same = answer_tools(reward_spec)
    return {"k": eval_cfg.samples, "temperature": eval_cfg.temperature, "top_p": eval_cfg.top_p,
            "seeds": eval_cfg.seeds, "by": [f.strip() for f in eval_cfg.by.split(",") if f.strip()],  # "a, b"
            "extract": extract, "same": same}


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


def format_details(result: EvalResult) -> str:
    """Everything beyond the table: the k-sample metrics, seeds, lengths, other breakdowns."""
    o, st = result.overall, result.settings
    mode = "greedy" if st.temperature == 0 else f"k = {st.k} samples at T = {st.temperature}, top-p {st.top_p}"
    lines = [f"{mode}; {st.seeds} seed(s); n = {o.n} problems; max_new_tokens {st.max_new_tokens}"]
    if st.k > 1 or st.seeds > 1:
        lines.append("  " + "  ".join(f"{m} {100 * v:.1f}%" for m, v in o.metrics.items()))
    if st.seeds > 1:
        spread = statistics.stdev(o.per_seed)
        lines.append(f"  per seed: {', '.join(f'{100 * a:.1f}%' for a in o.per_seed)} (sd {100 * spread:.1f} points); "
                     f"95% CI over problems and seeds [{100 * o.ci95[0]:.1f}, {100 * o.ci95[1]:.1f}]")
    lines.append(f"  length mean {o.mean_length:.1f}, median {o.median_length:.0f}, max {o.max_length}; "
                 f"truncated {100 * o.truncated:.1f}%")
    for name, groups in result.breakdown.items():
        if name == "bucket":
            continue
        lines.append(f"  by {name}: " + ", ".join(f"{v} {100 * s.accuracy:.1f}% (n={s.n})" for v, s in groups.items()))
    return "\n".join(lines)
