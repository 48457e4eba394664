"""MATH / MATH-500 / GSM8K loading, on small made-up files the tests write (no hub, no real data)."""

import doctest
import json
import re
import sys
import types
from pathlib import Path

import pytest

from rlvr.config import ConfigError, TaskConfig, load_config
from rlvr.tasks import load_task
from rlvr.tasks import math_data
from rlvr.tasks.math_data import boxed_answer, load_problems, to_sample

FIXTURE = Path(__file__).parent.parent / "fixtures" / "math_tiny.jsonl"

# MATH format: problem, solution ending in a box, "Level N", type; MATH-500 adds answer, subject, unique_id
MATH_ROWS = [
    {"problem": "What is $7-4$?", "solution": "Subtracting, $7-4=\\boxed{3}$.", "level": "Level 1", "type": "Prealgebra"},
    {"problem": "Simplify $\\sqrt{12}$.", "solution": "$\\sqrt{12}=\\sqrt{4}\\sqrt{3}=\\boxed{2\\sqrt{3}}$.",
     "level": "Level 2", "type": "Algebra", "unique_id": "train/algebra/9.json"},
    {"problem": "Find  $x$ if\n$x+1=3$.", "solution": "So $x=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
    {"problem": "What is $10/5$?", "solution": "Dividing gives $\\boxed{2}$.", "level": "Level ?", "type": "Prealgebra",
     "unique_id": "test/prealgebra/77.json"},
]
MATH500_ROWS = [
    {"problem": "Find $x$ if $x+1=3$.", "answer": "2", "subject": "Algebra", "level": 1, "unique_id": "test/algebra/5.json"},
    {"problem": "What is ten divided by five?", "answer": "2", "subject": "Prealgebra", "level": 1,
     "unique_id": "test/prealgebra/77.json"},
]
# GSM8K format: question, answer = reasoning with <<calculator>> notes, then "#### number"
GSM8K_ROWS = [
    {"question": "Ana has 3 boxes of 500 pens and buys 2 more boxes. How many pens does she have?",
     "answer": "She has 3+2=<<3+2=5>>5 boxes.\nThat is 5*500=<<5*500=2500>>2500 pens.\n#### 2,500"},
    {"question": "A cup holds 4 spoons of sugar. How many spoons are in 3 cups?", "answer": "3*4=<<3*4=12>>12\n#### 12"},
]


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_math_file_fields_and_metadata(tmp_path):
    a, b, _, d = load_problems(str(write_jsonl(tmp_path / "m.jsonl", MATH_ROWS)), math_data.MATH, "task.train_path")
    assert (a.prompt, a.answer, a.solution) == ("What is $7-4$?", "3", MATH_ROWS[0]["solution"])
    assert a.meta == {"level": 1, "type": "Prealgebra", "subject": "Prealgebra"} and a.id == "m.jsonl:1"
    assert b.answer == "2\\sqrt{3}" and b.id == "train/algebra/9.json" and b.meta["unique_id"] == b.id
    assert d.meta["level"] == "Level ?"  # not a number: kept as written


def test_math500_fields_and_fixture():
    samples = load_problems(str(FIXTURE), math_data.MATH500, "task.eval_path")
    assert len(samples) == 5 and samples[0].prompt == "What is $2+3$?" and samples[0].answer == "5"
    assert samples[0].id == "tiny/prealgebra/1.json" and samples[0].meta["level"] == 1
    assert all(boxed_answer(s.solution) == s.answer for s in samples)  # the fixture agrees with itself


@pytest.mark.parametrize("solution, answer", [
    ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}"),  # nested braces
    ("first \\boxed{1}, then corrected: \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # the last box wins
    ("so the area is $\\fbox{$12$}$.", "$12$"),  # \fbox as MATH writes a few
    ("no box here, just 4", None),
    ("$\\boxed{3$ unclosed", None),
    ("\\boxed{ }", None),
])
def test_answer_from_the_last_box(solution, answer):
    assert boxed_answer(solution) == answer


def test_answer_field_wins_over_the_box():
    s = to_sample({"problem": "p", "answer": "\\frac12", "solution": "\\boxed{0.5}"}, "f line 1", "f:1")
    assert s.answer == "\\frac12"
    assert to_sample({"prompt": "p", "answer": 7}, "f line 1", "f:1").answer == "7"


def test_gsm8k_answer_after_hashes(tmp_path):
    a, b = load_problems(str(write_jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)), math_data.GSM8K_TRAIN, "task.train_path")
    assert a.prompt.startswith("Ana has") and a.answer == "2500" and b.answer == "12"
    # calculator notes dropped, "#### 2,500" written as the box the prompt templates ask for
    assert a.solution == "She has 3+2=5 boxes.\nThat is 5*500=2500 pens.\n\\boxed{2500}"
    assert boxed_answer(a.solution) == a.answer


def test_json_list_and_data_object(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps(MATH500_ROWS))
    (tmp_path / "d.json").write_text(json.dumps({"data": MATH500_ROWS}))
    for name in ("l.json", "d.json"):
        got = load_problems(str(tmp_path / name), math_data.MATH500, "task.eval_path")
        assert [s.id for s in got] == ["test/algebra/5.json", "test/prealgebra/77.json"]
    (tmp_path / "bad.json").write_text(json.dumps([MATH500_ROWS[0], {"problem": "no answer"}]))
    with pytest.raises(ValueError, match=r"bad\.json item 2: no answer"):
        load_problems(str(tmp_path / "bad.json"), math_data.MATH500, "task.eval_path")


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(MATH500_ROWS), tmp_path / "m.parquet")
    a, b = load_problems(str(tmp_path / "m.parquet"), math_data.MATH500, "task.eval_path")
    assert (a.answer, a.meta["level"], b.id) == ("2", 1, "test/prealgebra/77.json")
    pq.write_table(pa.Table.from_pylist([{"problem": "x", "level": 2}]), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet row 1: no answer"):
        load_problems(str(tmp_path / "bad.parquet"), math_data.MATH500, "task.eval_path")


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # makes `import pyarrow.parquet` fail
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "m.parquet").write_bytes(b"PAR1")
    with pytest.raises(ImportError, match="pip install pyarrow"):
        load_problems(str(tmp_path / "m.parquet"), math_data.MATH500, "task.eval_path")


def test_math_train_drops_math500_by_id_and_by_text(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", MATH_ROWS)
    test = write_jsonl(tmp_path / "math500.jsonl", MATH500_ROWS)
    data = load_task(TaskConfig(name="math", train_path=str(train), eval_path=str(test)), need=("rl", "heldout"))
    # row 3 is MATH-500's first problem up to whitespace; row 4 shares the second one's unique_id
    assert [s.prompt for s in data.rl_train] == [MATH_ROWS[0]["problem"], MATH_ROWS[1]["problem"]]
    assert [s.id for s in data.heldout] == ["test/algebra/5.json", "test/prealgebra/77.json"]
    assert "2 training problems (2 in MATH-500 removed)" in data.description
    rl_only = load_task(TaskConfig(name="math", train_path=str(train), eval_path=str(test)), need=("rl",))
    assert len(rl_only.rl_train) == 2 and rl_only.heldout == []  # removed even when no eval is asked for
    with pytest.raises(ValueError, match=r"math500\.jsonl: all 2 training problems are in MATH-500"):
        load_task(TaskConfig(name="math", train_path=str(test), eval_path=str(test)), need=("rl",))


def test_sft_needs_solutions_and_splits_them(tmp_path):
    rows = [{"problem": f"What is {i}+1?", "solution": f"It is \\boxed{{{i + 1}}}."} for i in range(30)]
    cfg = TaskConfig(name="gsm8k", train_path=str(write_jsonl(tmp_path / "t.jsonl", rows)),
                     eval_path=str(write_jsonl(tmp_path / "e.jsonl", GSM8K_ROWS)))
    data = load_task(cfg, need=("sft", "heldout"))
    assert len(data.sft_val) == 3 and len(data.sft_train) == 27 and len(data.heldout) == 2
    assert {s.id for s in data.sft_val} | {s.id for s in data.sft_train} == {s.id for s in data.rl_train}
    answer_only = write_jsonl(tmp_path / "a.jsonl", [{"problem": "1+1", "answer": "2"}])
    with pytest.raises(ValueError, match=r"a\.jsonl line 1: no `solution`: SFT needs a worked solution"):
        load_task(TaskConfig(name="gsm8k", train_path=str(answer_only), eval_path=cfg.eval_path), need=("sft",))


def test_math500_task_is_held_out_only():
    data = load_task(TaskConfig(name="math500", eval_path=str(FIXTURE)), need=("heldout",))
    assert len(data.heldout) == 5 and data.rl_train == [] and data.description == "MATH-500: 5 held-out problems"
    with pytest.raises(ValueError, match="train with task.name=math"):
        load_task(TaskConfig(name="math500", eval_path=str(FIXTURE)), need=("rl", "heldout"))


@pytest.mark.parametrize("rows, message", [
    ([MATH500_ROWS[0], {"problem": "x", "solution": "no box"}],
     r"t.jsonl line 2: no answer: give an `answer` field or a `solution` ending in \boxed{...}"),
    ([{"answer": "1"}], "t.jsonl line 1: no problem text: give a `problem`, `question` or `prompt` field"),
    ([{"problem": "  ", "answer": "1"}], "t.jsonl line 1: the problem text must be a non-empty string"),
    ([MATH500_ROWS[0], "", '{"problem": "x", "answer": '], "t.jsonl line 3: not valid JSON"),
    (["[1, 2]"], "t.jsonl line 1: expected an object with `problem` and `answer`"),
    ([{"question": "x", "answer": "reasoning ####  "}], "t.jsonl line 1: no answer"),
])
def test_errors_name_file_line_and_fix(tmp_path, rows, message):
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(ValueError, match=re.escape(f"{path.parent}/{message}")):
        load_problems(str(path), math_data.MATH500, "task.eval_path")


def test_file_errors(tmp_path):
    (tmp_path / "lines.json").write_text(json.dumps(MATH500_ROWS[0]) + "\n" + json.dumps(MATH500_ROWS[1]) + "\n")
    with pytest.raises(ValueError, match=r"lines\.json line 2: not valid JSON \(Extra data\); .* name it \.jsonl"):
        load_problems(str(tmp_path / "lines.json"), math_data.MATH500, "task.eval_path")
    (tmp_path / "m.csv").write_text("problem,answer\n")
    with pytest.raises(ValueError, match=r"m\.csv: unknown file type '\.csv'; give a \.jsonl, \.json, \.parquet file"):
        load_problems(str(tmp_path / "m.csv"), math_data.MATH500, "task.eval_path")
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
        load_problems(str(tmp_path / "nope.jsonl"), math_data.MATH500, "task.eval_path")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"empty\.jsonl: no problems in it \(task\.eval_path\)"):
        load_problems(str(tmp_path / "empty.jsonl"), math_data.MATH500, "task.eval_path")


def fake_datasets(tables):
    """A stand-in for the `datasets` module: load_dataset(repo, config, split) -> list of rows."""
    calls = []

    def load_dataset(repo, config, split):
        calls.append((repo, config, split))
        return tables[(repo, split)]

    return types.SimpleNamespace(load_dataset=load_dataset), calls


def test_hub_reads_the_chapter6_split(monkeypatch):
    lighteval = {("DigitalLearningGmbH/MATH-lighteval", "train"): MATH_ROWS[:2],
                 ("DigitalLearningGmbH/MATH-lighteval", "test"): MATH_ROWS[2:],
                 ("HuggingFaceH4/MATH-500", "test"): MATH500_ROWS}
    module, calls = fake_datasets(lighteval)
    monkeypatch.setitem(sys.modules, "datasets", module)
    data = load_task(TaskConfig(name="math"), need=("rl", "heldout"))
    assert calls == [("HuggingFaceH4/MATH-500", None, "test"), ("DigitalLearningGmbH/MATH-lighteval", "default", "train"),
                     ("DigitalLearningGmbH/MATH-lighteval", "default", "test")]
    assert [s.id for s in data.rl_train] == ["train:1", "train/algebra/9.json"] and len(data.heldout) == 2


GSM8K_TEST_ROW = {"question": "A box holds 6 eggs. How many eggs are in 2 boxes?", "answer": "2*6=<<2*6=12>>12\n#### 12"}


def test_hub_gsm8k(monkeypatch):
    module, calls = fake_datasets({("openai/gsm8k", "train"): GSM8K_ROWS, ("openai/gsm8k", "test"): [GSM8K_TEST_ROW]})
    monkeypatch.setitem(sys.modules, "datasets", module)
    data = load_task(TaskConfig(name="gsm8k"), need=("rl", "heldout"))
    assert [s.answer for s in data.rl_train] == ["2500", "12"] and [s.id for s in data.heldout] == ["test:1"]
    assert calls == [("openai/gsm8k", "main", "train"), ("openai/gsm8k", "main", "test")]


def test_gsm8k_refuses_a_held_out_set_that_shares_problems_with_training(tmp_path, monkeypatch):
    """A local test file (or one beside the hub's train split) holding a training problem: its
    accuracy would count a problem the model trained on. The jsonl task refuses the same."""
    train = write_jsonl(tmp_path / "train.jsonl", GSM8K_ROWS)
    leak = {**GSM8K_ROWS[1], "question": "  A cup holds 4 spoons of sugar.\nHow many spoons are in 3 cups?"}
    test = write_jsonl(tmp_path / "test.jsonl", [GSM8K_TEST_ROW, leak])
    with pytest.raises(ValueError, match=r"test\.jsonl: 1 of its 2 problems are also in .*train\.jsonl \(same prompt"):
        load_task(TaskConfig(name="gsm8k", train_path=str(train), eval_path=str(test)), need=("rl", "heldout"))
    module, _ = fake_datasets({("openai/gsm8k", "train"): GSM8K_ROWS})
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(ValueError, match=r"test\.jsonl: 1 of its 2 problems are also in openai/gsm8k"):
        load_task(TaskConfig(name="gsm8k", eval_path=str(test)), need=("rl", "heldout"))
    data = load_task(TaskConfig(name="gsm8k", train_path=str(train), eval_path=str(test)), need=("rl",))
    assert len(data.rl_train) == 2  # nothing to compare without the held-out set


def test_hub_without_datasets_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed
    train = write_jsonl(tmp_path / "train.jsonl", MATH_ROWS)
    with pytest.raises(ImportError, match=r"HuggingFaceH4/MATH-500 .* pip install datasets, .* \(task\.eval_path"):
        load_task(TaskConfig(name="math", train_path=str(train)), need=("rl", "heldout"))


def test_config_checks_math_tasks(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="task.name='mathh' is unknown; use one of arithmetic, jsonl, math, math500, gsm8k"):
        load_config(None, ["task.name=mathh"])
    monkeypatch.setattr(math_data, "installed", lambda module: False)
    with pytest.raises(ConfigError, match=r"task.name=math reads .* pip install datasets, or give local files as "
                                          r"task.train_path and task.eval_path"):
        load_config(None, ["task.name=math"])
    with pytest.raises(ConfigError, match=r"give local files as task.eval_path \("):
        load_config(None, ["task.name=math500"])
    with pytest.raises(ConfigError, match="task.eval_path=m.parquet is a Parquet file, which needs pyarrow"):
        load_config(None, ["task.name=math500", "task.eval_path=m.parquet"])
    with pytest.raises(ConfigError, match=r"give local files as task.eval_path \("):  # a recipe's train file is no help
        load_config(None, ["task.name=math500", "task.train_path=t.jsonl"])
    assert load_config(None, ["task.name=math500", "task.train_path=t.jsonl", "task.eval_path=e.jsonl"])  # rlvr eval --task
    cfg = load_config(None, ["task.name=math", f"task.train_path={tmp_path}/t.jsonl", f"task.eval_path={FIXTURE}",
                             "task.template=r1zero", "task.reward=exact + 0.1*format_strict_r1zero"])
    assert cfg.task.name == "math"


def test_doctests():
    assert doctest.testmod(math_data).failed == 0


HEDGED = {"problem": "Solve $x^2=x$.", "solution": "So $x=\\boxed{0}$ or $x=\\boxed{1}$.", "type": "Algebra"}
UNBOXED = {"problem": "Name a prime.", "solution": "Two is prime.", "type": "Number Theory"}


def test_training_records_without_a_single_gold_answer_are_skipped_and_counted(tmp_path):
    """One hedged or unboxed record among MATH's 12,000 used to stop the whole task from loading."""
    train = write_jsonl(tmp_path / "train.jsonl", [MATH_ROWS[0], HEDGED, MATH_ROWS[1], UNBOXED])
    test = write_jsonl(tmp_path / "math500.jsonl", MATH500_ROWS)
    data = load_task(TaskConfig(name="math", train_path=str(train), eval_path=str(test)), need=("sft", "rl", "heldout"))
    assert [s.prompt for s in data.rl_train] == [MATH_ROWS[0]["problem"], MATH_ROWS[1]["problem"]]
    assert len(data.sft_train) + len(data.sft_val) == 2
    assert (f"MATH: 2 training problems (0 in MATH-500 removed; 2 skipped without a single gold answer "
            f"(no \\boxed{{}}, or hedged ones), first: {train} line 2), 2 held-out") in data.description
    gsm = write_jsonl(tmp_path / "g.jsonl", [GSM8K_ROWS[0], {"question": "x", "answer": "reasoning ####  "}])
    data = load_task(TaskConfig(name="gsm8k", train_path=str(gsm), eval_path=str(gsm)), need=("rl",))
    assert len(data.rl_train) == 1
    assert data.description.startswith(f"GSM8K: 1 training problems (1 skipped without a single gold answer "
                                       f"(no \\boxed{{}}, or hedged ones), first: {gsm} line 2), 0 held-out")
    nothing = write_jsonl(tmp_path / "bad.jsonl", [HEDGED, UNBOXED])
    with pytest.raises(ValueError, match=r"bad\.jsonl: no problems in it \(task\.train_path\); all 2 records lack a "
                                         "single gold answer"):
        load_task(TaskConfig(name="math", train_path=str(nothing), eval_path=str(test)), need=("rl",))


def test_a_held_out_record_without_a_single_gold_answer_is_refused(tmp_path):
    """Skipped there, it would leave the evaluation quietly short of the set's problems."""
    test = write_jsonl(tmp_path / "math500.jsonl", [MATH500_ROWS[0], HEDGED])
    with pytest.raises(ValueError, match=re.escape(
            f"{test} line 2: no answer: its solution's \\boxed{{...}} gives no single answer (empty, unclosed, or "
            "hedged as \"\\boxed{2} or \\boxed{3}\"): give an `answer` field") + ".* a held-out one is not"):
        load_task(TaskConfig(name="math500", eval_path=str(test)), need=("heldout",))
