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
        # null would become the string "None", which "\boxed{None}" then matches
        ([{"prompt": "x", "answer": None}], r"t\.jsonl line 1: field 'answer' must be a non-empty string or a number"),
        ([{"prompt": "x", "answer": ""}], r"t\.jsonl line 1: field 'answer' must be"),
        ([{"prompt": "x", "answer": True}], r"t\.jsonl line 1: field 'answer' must be"),
        ([{"prompt": "x", "answer": "1", "solution": 7}], r"t\.jsonl line 1: field 'solution' must be a string"),
    ],
)
def test_errors_name_file_and_line(tmp_path, rows, message):
    with pytest.raises(ValueError, match=message):
        load_jsonl(write(tmp_path / "t.jsonl", rows))


def test_a_file_that_is_not_utf8_names_its_line(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_bytes(b'{"prompt": "x", "answer": "1"}\n{"prompt": "caf\xe9", "answer": "2"}\n')  # latin-1
    with pytest.raises(ValueError, match=r"t\.jsonl line 2: not UTF-8 text .*save the file as UTF-8"):
        load_jsonl(f)


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


def test_user_reward_from_the_working_folder(tmp_path, monkeypatch):
    """The installed `rlvr` command does not put the working folder on sys.path (python -m does):
    a reward module beside the recipe, run from its folder, must still import."""
    import sys

    (tmp_path / "cwd_rewards.py").write_text("def one(completion, sample):\n    return 1.0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert resolve("cwd_rewards:one")("x", None) == 1.0


def test_a_held_out_problem_that_is_also_a_training_problem_is_refused(tmp_path):
    from rlvr.config import load_config
    from rlvr.tasks import load_task

    train = write(tmp_path / "train.jsonl", [{"prompt": "1+1", "answer": "2"}, {"prompt": "2+2", "answer": "4"}])
    test = write(tmp_path / "test.jsonl", [{"prompt": "3+3", "answer": "6"}, {"prompt": " 2+2", "answer": "4"}])
    cfg = load_config(None, ["task.name=jsonl", f"task.train_path={train}", f"task.eval_path={test}"])
    with pytest.raises(ValueError, match=r"test\.jsonl: 1 of its 2 problems are also in .*train\.jsonl"):
        load_task(cfg.task, need=("rl", "heldout"))
    assert len(load_task(cfg.task, need=("heldout",)).heldout) == 2  # evaluating alone reads only the eval file


def test_a_held_out_problem_differing_only_in_inner_whitespace_is_refused(tmp_path):
    """The same normalisation as MATH's overlap check (problem_key): spaces and line breaks
    collapsed, so a copy re-wrapped or re-spaced is still the training problem it copies."""
    from rlvr.config import load_config
    from rlvr.tasks import load_task

    train = write(tmp_path / "train.jsonl", [{"prompt": "What is 2 + 2?\nAnswer briefly.", "answer": "4"}])
    test = write(tmp_path / "test.jsonl", [{"prompt": "What is  2 +\t2? Answer briefly.", "answer": "4"}])
    cfg = load_config(None, ["task.name=jsonl", f"task.train_path={train}", f"task.eval_path={test}"])
    with pytest.raises(ValueError, match=r"test\.jsonl: 1 of its 1 problems are also in .*train\.jsonl \(same prompt "
                                         r"up to whitespace"):
        load_task(cfg.task, need=("rl", "heldout"))


def test_the_sft_validation_slice_is_a_seeded_random_sample(tmp_path):
    """A file sorted by difficulty: its first tenth as the validation slice would check the
    plateau on the easiest problems alone, and SFT would never train on them."""
    from rlvr.config import load_config
    from rlvr.tasks import load_task

    rows = [{"prompt": f"problem {i}", "answer": str(i), "solution": f"\\boxed{{{i}}}", "level": i // 10}
            for i in range(100)]
    train = write(tmp_path / "train.jsonl", rows)
    slices = []
    for seed in (0, 1):
        cfg = load_config(None, ["task.name=jsonl", f"task.train_path={train}", f"task.seed={seed}"])
        data = load_task(cfg.task, need=("sft",))
        assert len(data.sft_val) == 10 and len(data.sft_train) == 90
        assert {s.id for s in data.sft_val} | {s.id for s in data.sft_train} == {s.id for s in data.rl_train}
        assert len({s.meta["level"] for s in data.sft_val}) > 3  # before: all 10 from level 0
        assert data.rl_train[0].prompt == "problem 0"  # RL's problems keep the file's order (PromptStream shuffles)
        slices.append([s.id for s in data.sft_val])
    assert slices[0] != slices[1]  # task.seed picks it
    again = load_task(load_config(None, ["task.name=jsonl", f"task.train_path={train}"]).task, need=("sft",))
    assert [s.id for s in again.sft_val] == slices[0]  # the same seed, the same slice
