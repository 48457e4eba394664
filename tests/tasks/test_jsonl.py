import json

import pytest

from rlvr.rewards import resolve
from rlvr.tasks.jsonl import load_jsonl


def write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_reads_fields_and_metadata(tmp_path):
    f = write(tmp_path / "t.jsonl", [{"prompt": "1+1", "answer": 2, "level": 3}, {"prompt": "a", "answer": "b", "solution": "s"}])
    a, b = load_jsonl(f)
    assert a.answer == "2" and a.meta == {"level": 3} and b.solution == "s"


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"prompt": "x", "answer": "1"}, {"prompt": "y"}], r"t\.jsonl line 2: missing field 'answer'"),
        (["{not json"], r"t\.jsonl line 1: not valid JSON"),
        ([{"prompt": "", "answer": "1"}], r"t\.jsonl line 1: field 'prompt' must be a non-empty string"),
    ],
)
def test_errors_name_file_and_line(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        load_jsonl(write(tmp_path / "t.jsonl", rows))


def test_sft_needs_solutions(tmp_path):
    f = write(tmp_path / "t.jsonl", [{"prompt": "x", "answer": "1"}])
    with pytest.raises(ValueError, match=r"t\.jsonl line 1: missing field 'solution'"):
        load_jsonl(f, need_solution=True)


def test_user_reward_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def length(completion, sample):\n    return len(completion)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve("my_rewards:length")("abc", None) == 3
    with pytest.raises(ValueError, match="cannot import module 'nope'"):
        resolve("nope:f")
    with pytest.raises(ValueError, match="has no function 'missing'"):
        resolve("my_rewards:missing")
    with pytest.raises(KeyError, match="unknown reward 'nope'; valid names: exact"):
        resolve("nope")
