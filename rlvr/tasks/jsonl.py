"""A user's own task: a JSONL file with `prompt`, `answer`, optional `solution`, any metadata."""

from __future__ import annotations

import json
from pathlib import Path

from rlvr.types import Sample

RESERVED = ("prompt", "answer", "solution", "id")


def iter_jsonl(path: Path):
    """(line number, parsed value) for each non-blank line; a malformed line stops with an error
    that names the file and the line."""
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {n}: not UTF-8 text ({e.reason} at byte {e.start}); "
                                 "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n}: not valid JSON ({e.msg}); each line must be one JSON object") from None


def load_jsonl(path: str | Path, need_solution: bool = False) -> list[Sample]:
    """Read and validate every line before any training starts; errors name file, line and fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (set task.train_path / task.eval_path to a JSONL file)")
    samples = []
    for lineno, row in iter_jsonl(path):
        where = f"{path} line {lineno}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object with 'prompt' and 'answer'")
        for key in ("prompt", "answer"):
            if key not in row:
                raise ValueError(f"{where}: missing field {key!r}; every line needs 'prompt' and 'answer'")
        if need_solution and not row.get("solution"):
            raise ValueError(f"{where}: missing field 'solution'; SFT needs a worked solution on every line")
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise ValueError(f"{where}: field 'prompt' must be a non-empty string")
        answer = row["answer"]
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or not str(answer).strip():
            raise ValueError(f"{where}: field 'answer' must be a non-empty string or a number, got {answer!r}")
        if row.get("solution") is not None and not isinstance(row["solution"], str):
            raise ValueError(f"{where}: field 'solution' must be a string (a worked solution ending in the answer)")
        meta = {k: v for k, v in row.items() if k not in RESERVED}
        samples.append(
            Sample(
                prompt=row["prompt"],
                answer=str(row["answer"]),
                solution=row.get("solution"),
                meta=meta,
                id=str(row.get("id", f"{path.name}:{lineno}")),
            )
        )
    if not samples:
        raise ValueError(f"{path}: the file has no samples")
    return samples
