"""MATH, MATH-500 and GSM8K as Samples, from local files or the Hugging Face hub.

| task.name | training problems                                | held-out problems |
|-----------|--------------------------------------------------|-------------------|
| `math`    | MATH train + test, less the MATH-500 problems (12,000) | MATH-500 (500) |
| `math500` | none (for `rlvr eval --task math500`)            | MATH-500 (500)    |
| `gsm8k`   | GSM8K train (7,473)                              | GSM8K test (1,319) |

`math` is the split of the book's chapter 6: MATH-500 (the test subset of Lightman et al.,
arXiv 2305.20050) is held out, and the remaining 12,000 MATH problems are for training.

task.train_path / task.eval_path, when given, replace the hub: a .jsonl file, a .json file (a
list of objects or {"data": [...]}) or a .parquet file. For `math`, task.eval_path is the
MATH-500 file, and its problems are dropped from the training problems (by `unique_id`, or by
problem text with whitespace collapsed). Without a path, the hub datasets below are read with
the `datasets` library (`pip install datasets`).

Fields, under the hub's names or ours:
- problem text: `problem`, `question` or `prompt`;
- gold answer: `answer`; without one, the last \\boxed{...} of `solution` (MATH). A GSM8K
  answer ("reasoning <<calc>> ... #### 1,234") gives the answer "1234" and, for SFT, the
  solution "reasoning ... \\boxed{1234}": calculator annotations dropped and the final line
  boxed, so that worked solutions end as the prompt templates and rewards expect;
- `solution`: the worked solution (SFT needs one on every training problem);
- everything else scalar is metadata: `level` as an int ("Level 3" -> 3), `subject` (copied
  from `type` when only that is given), `unique_id` (also the Sample id; otherwise
  "<file>:<line>"), `type`, ...
Every record is checked before training starts; an error names the file, the line (or item,
or row) and the fix. One exception: a training record with no single gold answer (a solution
with no box, or a hedged one, "\\boxed{2} or \\boxed{3}") is skipped, since a whole task should
not fail to load over one unscorable problem among thousands (MATH has a few); the task's
description line says how many and where the first was. In a held-out set such a record is an
error: skipping it would make the evaluation quietly cover fewer problems than the set holds.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from rlvr.config import TaskConfig
from rlvr.rewards.math_extract import extract_answer
from rlvr.tasks import TaskData, check_disjoint, problem_key
from rlvr.types import Sample


@dataclass(frozen=True)
class Hub:
    """A dataset on the Hugging Face hub: repository, configuration, splits read one after another."""

    repo: str
    config: str | None
    splits: tuple[str, ...]


# MATH: DigitalLearningGmbH/MATH-lighteval holds the 7,500 + 5,000 problems of Hendrycks et al.
# (arXiv 2103.03874) in one configuration (EleutherAI/hendrycks_math splits them by subject).
MATH = Hub("DigitalLearningGmbH/MATH-lighteval", "default", ("train", "test"))
MATH500 = Hub("HuggingFaceH4/MATH-500", None, ("test",))
GSM8K_TRAIN = Hub("openai/gsm8k", "main", ("train",))
GSM8K_TEST = Hub("openai/gsm8k", "main", ("test",))

TASKS = ("math", "math500", "gsm8k")
PROMPT_FIELDS = ("problem", "question", "prompt")
RESERVED = (*PROMPT_FIELDS, "answer", "solution", "id")
FORMATS = (".jsonl", ".json", ".parquet")


def hub_fields(cfg: TaskConfig) -> list[str]:
    """The path fields a task reads from the hub because they are not set."""
    used = {"math": ("train_path", "eval_path"), "math500": ("eval_path",), "gsm8k": ("train_path", "eval_path")}
    return [f"task.{name}" for name in used.get(cfg.name, ()) if getattr(cfg, name) is None]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def load_math_task(cfg: TaskConfig, need: tuple[str, ...]) -> TaskData:
    """The task's Samples for the stages in `need` ("sft", "rl", "heldout")."""
    train_needed = "sft" in need or "rl" in need
    if cfg.name == "math500":
        if train_needed:
            raise ValueError("task.name=math500 is the held-out set alone, with no training problems; "
                             "train with task.name=math (MATH without the MATH-500 problems)")
        heldout = load_problems(cfg.eval_path, MATH500, "task.eval_path")
        return TaskData([], [], [], heldout, f"MATH-500: {len(heldout)} held-out problems")
    if cfg.name == "gsm8k":
        train, skipped = (load_training_problems(cfg.train_path, GSM8K_TRAIN, "task.train_path", "sft" in need)
                          if train_needed else ([], []))
        heldout = load_problems(cfg.eval_path, GSM8K_TEST, "task.eval_path") if "heldout" in need else []
        # the hub's splits are disjoint; local files (or a hub train split next to a local test file) may not be
        check_disjoint(train, heldout, cfg.train_path or GSM8K_TRAIN.repo, cfg.eval_path or GSM8K_TEST.repo)
        notes = _skip_note(skipped)
        desc = f"GSM8K: {len(train)} training problems{f' ({notes})' if notes else ''}, {len(heldout)} held-out (test)"
    elif cfg.name == "math":
        # MATH-500 is read even when only training problems are wanted: they are removed from them
        math500 = load_problems(cfg.eval_path, MATH500, "task.eval_path")
        train, dropped, skipped = [], 0, []
        if train_needed:
            full, skipped = load_training_problems(cfg.train_path, MATH, "task.train_path", "sft" in need)
            train = drop_overlap(full, math500)
            dropped = len(full) - len(train)
            if not train:
                raise ValueError(f"{cfg.train_path or MATH.repo}: all {len(full)} training problems are in MATH-500 "
                                 "(task.eval_path), so none is left to train on")
        heldout = math500 if "heldout" in need else []
        notes = "; ".join(n for n in (f"{dropped} in MATH-500 removed", _skip_note(skipped)) if n)
        desc = f"MATH: {len(train)} training problems ({notes}), {len(math500)} held-out (MATH-500)"
    else:
        raise ValueError(f"task.name={cfg.name!r} is not one of {', '.join(TASKS)}")
    # the SFT plateau checks use a seeded slice of the training problems, never the held-out set
    pool = random.Random(cfg.seed).sample(train, len(train)) if "sft" in need else []
    n_val = min(len(pool) // 10, 200)
    return TaskData(pool[n_val:], pool[:n_val], train, heldout, desc)


class NoGoldAnswer(ValueError):
    """A record with no single gold answer to score a response against."""


def load_problems(path: str | None, hub: Hub, field: str, need_solution: bool = False) -> list[Sample]:
    """Held-out Samples from a local file (when `path` is set) or else from `hub`; every record
    checked, and one without a single gold answer is an error (NoGoldAnswer), not left out."""
    return _load(path, hub, field, need_solution, skip_no_gold=False)[0]


def load_training_problems(path: str | None, hub: Hub, field: str,
                           need_solution: bool = False) -> tuple[list[Sample], list[str]]:
    """(training Samples, where each skipped record was): as load_problems, but a record without
    a single gold answer is skipped (reward could never score it) rather than stopping the load."""
    return _load(path, hub, field, need_solution, skip_no_gold=True)


def _load(path: str | None, hub: Hub, field: str, need_solution: bool,
          skip_no_gold: bool) -> tuple[list[Sample], list[str]]:
    records = read_file(Path(path)) if path else read_hub(hub, field)
    samples, skipped = [], []
    for where, default_id, row in records:
        try:
            samples.append(to_sample(row, where, default_id, need_solution))
        except NoGoldAnswer:
            if not skip_no_gold:
                raise
            skipped.append(where)
    if not samples:
        none_scorable = f"; all {len(skipped)} records lack a single gold answer" if skipped else ""
        raise ValueError(f"{path or hub.repo}: no problems in it ({field}){none_scorable}")
    return samples, skipped


def _skip_note(skipped: list[str]) -> str:
    """The description's note on skipped training records ("" when none was)."""
    if not skipped:
        return ""
    return (f"{len(skipped)} skipped without a single gold answer (no \\boxed{{}}, or hedged ones), "
            f"first: {skipped[0]}")


def read_file(path: Path) -> Iterator[tuple[str, str, dict]]:
    """(where, default id, record) for each record of a .jsonl, .json or .parquet file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (task.train_path / task.eval_path)")
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".json":
        return _read_json(path)
    if path.suffix == ".parquet":
        return _read_parquet(path)
    raise ValueError(f"{path}: unknown file type {path.suffix!r}; give a {', '.join(FORMATS)} file")


def _read_jsonl(path: Path) -> Iterator[tuple[str, str, dict]]:
    from rlvr.tasks.jsonl import iter_jsonl

    for n, row in iter_jsonl(path):
        yield f"{path} line {n}", f"{path.name}:{n}", row


def _read_json(path: Path) -> Iterator[tuple[str, str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        hint = "; a file with one JSON object per line is JSON Lines: name it .jsonl" if e.msg == "Extra data" else ""
        raise ValueError(f"{path} line {e.lineno}: not valid JSON ({e.msg}){hint}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ValueError(f'{path}: expected a list of problems, or {{"data": [...]}}')
    for n, row in enumerate(data, 1):
        yield f"{path} item {n}", f"{path.name}:{n}", row


def _read_parquet(path: Path) -> Iterator[tuple[str, str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError(f"{path}: reading Parquet needs pyarrow: pip install pyarrow "
                          "(or convert the file to JSONL)") from None
    for n, row in enumerate(pq.read_table(path).to_pylist(), 1):
        yield f"{path} row {n}", f"{path.name}:{n}", row


def read_hub(hub: Hub, field: str) -> Iterator[tuple[str, str, dict]]:
    try:
        import datasets
    except ImportError:
        raise ImportError(f"{hub.repo} is read from the Hugging Face hub, which needs the `datasets` library: "
                          f"pip install datasets, or download it and give it as a local file ({field}: "
                          f"{', '.join(FORMATS)})") from None
    for split in hub.splits:
        try:
            rows = datasets.load_dataset(hub.repo, hub.config, split=split)
        except Exception as e:  # noqa: BLE001 - offline, gated, renamed: say which dataset and the way out
            raise ValueError(f"{hub.repo} ({split}): cannot load it from the Hugging Face hub ({e}); "
                             f"download it where the hub is reachable and give it as {field}") from e
        for n, row in enumerate(rows, 1):
            yield f"{hub.repo} ({split}) row {n}", f"{split}:{n}", row


def to_sample(row: Any, where: str, default_id: str, need_solution: bool = False) -> Sample:
    """One record as a Sample, or a ValueError that says where and what is missing."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected an object with `problem` and `answer` (or `solution`)")
    prompt = next((row[k] for k in PROMPT_FIELDS if k in row), None)
    if prompt is None:
        raise ValueError(f"{where}: no problem text: give a `problem`, `question` or `prompt` field")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: the problem text must be a non-empty string")
    answer, solution = answer_and_solution(row)
    if answer is None:
        boxed = solution is not None and ("\\boxed" in solution or "\\fbox" in solution)
        why = (": its solution's \\boxed{...} gives no single answer (empty, unclosed, or hedged as "
               "\"\\boxed{2} or \\boxed{3}\")" if boxed else "")
        raise NoGoldAnswer(f"{where}: no answer{why}: give an `answer` field or a `solution` ending in \\boxed{{...}} "
                           "(a training record without one is skipped; a held-out one is not, so that the evaluation "
                           "covers every problem of its set)")
    if need_solution and not solution:
        raise ValueError(f"{where}: no `solution`: SFT needs a worked solution for every training problem")
    meta = {k: v for k, v in row.items() if k not in RESERVED and _scalar(v)}
    if "level" in meta:
        meta["level"] = _level(meta["level"])
    if "subject" not in meta and isinstance(meta.get("type"), str):
        meta["subject"] = meta["type"]
    return Sample(prompt=prompt, answer=answer, solution=solution, meta=meta,
                  id=str(row.get("unique_id") or row.get("id") or default_id))


def answer_and_solution(row: dict) -> tuple[str | None, str | None]:
    """(gold answer, worked solution) of a record; the answer is None when there is none."""
    solution = row.get("solution") if isinstance(row.get("solution"), str) and row["solution"].strip() else None
    answer = row.get("answer")
    if isinstance(answer, str) and "####" in answer:  # GSM8K: the answer field is the worked solution
        return gsm8k_answer(answer), solution or gsm8k_solution(answer)
    if _scalar(answer) and answer is not None and not isinstance(answer, bool) and str(answer).strip():
        return str(answer).strip(), solution
    if solution is not None:
        got = boxed_answer(solution)
        if got is None and "####" in solution:
            return gsm8k_answer(solution), gsm8k_solution(solution)
        return got, solution
    return None, None


def boxed_answer(solution: str) -> str | None:
    """The last \\boxed{...} or \\fbox{...} of a worked solution (nested braces allowed), or None.

    >>> boxed_answer(r"so $x = \\boxed{\\frac{1}{2}}$, not \\boxed{3} ... hence $\\boxed{\\frac{\\sqrt{2}}{2}}$.")
    '\\\\frac{\\\\sqrt{2}}{2}'
    """
    # read as a response's answer is read (rewards.math_extract), so a worked solution scores as
    # correct against its own gold: the last box, or the boxes joined by "and" / "," at the end as
    # one list; boxes joined by "or" (a hedge in a response) give no gold: such a training record
    # is skipped (load_training_problems), a held-out one refused (load_problems)
    got = extract_answer(solution)
    return got.strip() if got is not None and got.strip() else None


def gsm8k_answer(text: str) -> str | None:
    """The number after the last "####", thousands commas removed: "... #### 1,234" -> "1234"."""
    final = text.rpartition("####")[2].strip().replace(",", "")
    return final or None


def gsm8k_solution(text: str) -> str:
    """GSM8K's reasoning with its <<48/2=24>> calculator annotations removed and the final
    "#### 24" line written as \\boxed{24}, the form the book's prompt asks for."""
    reasoning = re.sub(r"<<[^>]*>>", "", text.rpartition("####")[0]).strip()
    return f"{reasoning}\n\\boxed{{{gsm8k_answer(text)}}}"


def drop_overlap(train: list[Sample], heldout: list[Sample]) -> list[Sample]:
    """`train` without the problems of `heldout`: same `unique_id`, or same text up to whitespace."""
    ids = {s.meta["unique_id"] for s in heldout if s.meta.get("unique_id")}
    texts = {problem_key(s.prompt) for s in heldout}
    return [s for s in train if s.meta.get("unique_id") not in ids and problem_key(s.prompt) not in texts]


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _level(value: Any) -> Any:
    """MATH's "Level 3" (or 3) as 3; a level that is not a number ("Level ?") is kept as it is."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(r"\s*(?:Level\s*)?(\d+)\s*", str(value))
    return int(m.group(1)) if m else value
