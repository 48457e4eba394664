"""Metrics: one JSON line per step (always), and a progress bar on the terminal."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


class MetricsLog:
    """Appends one JSON object per call to `path` (a resumed run appends to the same file)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = self.path.open("a", encoding="utf-8")

    def log(self, row: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self._f.write(json.dumps(clean) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def progress(total: int, initial: int, desc: str, disable: bool = False) -> tqdm:
    """A live bar on a terminal; in a log file (no TTY), a refreshed line every 20 seconds.
    `disable`: no bar at all (every rank but 0 under torchrun)."""
    tty = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=tty, file=sys.stderr,
                mininterval=0.1 if tty else 20.0, leave=True, disable=disable)


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename: a crash mid-write leaves the
    previous contents whole, never a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
