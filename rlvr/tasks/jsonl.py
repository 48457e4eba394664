"""A user's own task: a JSONL file with `prompt`, `answer`, optional `solution`, any metadata."""

from __future__ import annotations

import json
from pathlib import Path

from rlvr.types import Sample

RESERVED = ("prompt", "answer", "solution", "id")


def iter_jsonl(path: Path):
    """(line number, parsed value) for each non-blank line; a malformed line stops with an error
    that names the file and the line."""
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
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
