"""The commands a user runs, on their own JSONL task and reward, with a checkpoint of their own."""

import json

import pytest

from rlvr.cli import main


@pytest.fixture()
def user_task(tmp_path, monkeypatch):
    rows = [{"prompt": f"{a}+{a}", "answer": str(2 * a), "solution": f"\\boxed{{{2 * a}}}", "kind": "double"}
            for a in range(40)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[30:]))
    (tmp_path / "user_reward.py").write_text(
        "def has_box(completion, sample):\n    return float('\\\\boxed{' in completion)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"task:\n  name: jsonl\n  train_path: {tmp_path / 'train.jsonl'}\n  eval_path: {tmp_path / 'test.jsonl'}\n"
        "  reward: user_reward:has_box\n  template: plain\n"
        "sft:\n  max_steps: 4\n  eval_every: 2\n  batch_size: 8\n  max_new_tokens: 8\n"
        "rl:\n  steps: 2\n  prompts_per_step: 2\n  group_size: 2\n  max_new_tokens: 8\n"
        "eval:\n  max_new_tokens: 8\n")
    return tmp_path, recipe


def test_sft_train_eval_on_a_user_task(user_task, tiny_llama_dir, capsys):
    root, recipe = user_task
    model = f"model.name_or_path={tiny_llama_dir}"
    main(["sft", str(recipe), model, f"output_dir={root / 'sft'}"])
    assert (root / "sft" / "model" / "model.safetensors").exists()
    summary = json.loads((root / "sft" / "sft.json").read_text())
    assert summary["sft"]["examples"] == 27 and summary["heldout"]["n"] == 10  # 3 of 30 held for plateau checks

    main(["train", str(recipe), f"model.name_or_path={root / 'sft' / 'model'}", f"output_dir={root / 'rl'}"])
    assert (root / "rl" / "checkpoints" / "step-000002" / "trainer_state.pt").exists()
    rl_eval = json.loads((root / "rl" / "eval" / "eval.json").read_text())
    assert rl_eval["n"] == 10 and len(rl_eval["problems_sha256"]) == 64  # what `compare` matches problems by

    main(["eval", "--model", str(root / "rl" / "checkpoints" / "step-000002"), "--recipe", str(recipe),
          "--out", str(root / "ev")])
    lines = (root / "ev" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 10 and json.loads(lines[0])["kind"] == "double"
    assert "held-out" in capsys.readouterr().out
    # without --recipe, a checkpoint of a run is scored with that run's recipe (task, template, eval:)
    main(["eval", "--model", str(root / "rl" / "checkpoints" / "step-000002"), "--out", str(root / "ev0")])
    assert f"recipe: {root / 'rl' / 'config.yaml'}" in capsys.readouterr().out
    own = json.loads((root / "ev0" / "eval.json").read_text())
    assert own["task"]["name"] == "jsonl" and own["n"] == 10

    # the SFT model's eval and the RL run's eval cover the same problems: a paired comparison
    main(["compare", str(root / "sft"), str(root / "rl")])
    out = capsys.readouterr().out
    assert "McNemar exact" in out and any(head in out for head in ("better", "no significant difference", "borderline"))
    main(["eval", "--model", str(root / "sft" / "model"), "--recipe", str(recipe), "--out", str(root / "ev4"),
          "--samples", "3", "--temperature", "1", "--seeds", "2", "--by", "kind"])
    assert "avg@3" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="settings.k is 1"):
        main(["compare", str(root / "ev"), str(root / "ev4")])
    main(["report", str(root / "rl")])
    html = (root / "rl" / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3


def test_refuses_to_overwrite_a_run(user_task, tiny_llama_dir):
    root, recipe = user_task
    (root / "busy").mkdir()
    (root / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="already exists and is not empty"):
        main(["train", str(recipe), f"model.name_or_path={tiny_llama_dir}", f"output_dir={root / 'busy'}"])
    assert (root / "busy" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("override, message", [
    ("rl.group_size=1", "rl.group_size must be >= 2"),
    ("task.reward=no_such_module:f", "cannot import module 'no_such_module'"),
])
def test_bad_input_fails_before_training(user_task, tiny_llama_dir, override, message, capsys):
    root, recipe = user_task
    with pytest.raises(SystemExit) as e:
        main(["train", str(recipe), f"model.name_or_path={tiny_llama_dir}", f"output_dir={root / 'x'}", override])
    assert message in str(e.value)
    assert not (root / "x" / "metrics.jsonl").exists()


def test_resume_refuses_an_sft_folder_and_keeps_its_metrics(user_task, tiny_llama_dir):
    """An SFT run's folder has a config.yaml but no RL checkpoint: --resume must not take it for
    an RL run stopped early (it would drop the SFT's metrics rows and write RL over them)."""
    root, recipe = user_task
    main(["sft", str(recipe), f"model.name_or_path={tiny_llama_dir}", f"output_dir={root / 's'}"])
    before = (root / "s" / "metrics.jsonl").read_text()
    for flags in ([], ["--resume"]):
        with pytest.raises(SystemExit, match=r"holds an SFT run \(sft\.json\), not an RL run"):
            main(["train", str(recipe), f"model.name_or_path={tiny_llama_dir}", f"output_dir={root / 's'}", *flags])
    assert (root / "s" / "metrics.jsonl").read_text() == before


def test_an_sft_then_rl_run_with_a_bad_model_leaves_no_folder(user_task):
    """sft.before_rl (and `rlvr demo`): an input error before SFT wrote anything leaves no folder
    behind, so the corrected command is not refused as writing over a run."""
    root, recipe = user_task
    args = ["train", str(recipe), "sft.before_rl=true", f"output_dir={root / 'p'}"]
    with pytest.raises(SystemExit, match="no such folder"):
        main([*args, f"model.name_or_path={root / 'nope'}"])
    assert not (root / "p").exists()


@pytest.mark.parametrize("extra", [[], ["sft.before_rl=true"]])
def test_a_jsonl_task_without_held_out_problems_fails_before_training(user_task, extra):
    """`rlvr train` (unless --no-eval) and SFT-then-RL evaluate on task.eval_path at the end: say so
    before anything trains, not after."""
    root, recipe = user_task
    recipe.write_text("\n".join(line for line in recipe.read_text().splitlines() if "eval_path" not in line))
    with pytest.raises(SystemExit, match="task.name=jsonl without task.eval_path: .* set it to a JSONL file"):
        main(["train", str(recipe), f"output_dir={root / 'z'}", *extra])
    assert not (root / "z").exists()


def test_no_eval_trains_a_jsonl_task_without_held_out_problems(user_task, monkeypatch):
    import rlvr.train.rl

    root, recipe = user_task
    recipe.write_text("\n".join(line for line in recipe.read_text().splitlines() if "eval_path" not in line))
    calls = []
    monkeypatch.setattr(rlvr.train.rl, "train_rl", lambda cfg, resume: calls.append(resume) or {})
    main(["train", str(recipe), f"output_dir={root / 'z'}", "--no-eval"])
    assert calls == [False]


def test_overrides_may_follow_options(monkeypatch, tmp_path):
    """`rlvr train demo --resume rl.lr=1e-4`: the override is the recipe's, not an unknown argument."""
    import rlvr.train.rl

    seen = []
    monkeypatch.setattr(rlvr.train.rl, "train_rl", lambda cfg, resume: seen.append((cfg, resume)) or {})
    main(["train", "demo", "--resume", "rl.lr=1e-4", "--no-eval", f"output_dir={tmp_path / 'r'}", "rl.steps=3"])
    (cfg, resume), = seen
    assert resume and cfg.rl.lr == 1e-4 and cfg.rl.steps == 3 and cfg.output_dir == str(tmp_path / "r")
    with pytest.raises(SystemExit, match="command-line override `rl.group_size=1`: rl.group_size must be >= 2"):
        main(["train", "demo", "--no-eval", "rl.group_size=1"])
    with pytest.raises(SystemExit) as e:  # argparse's own errors are unchanged
        main(["nope"])
    assert e.value.code == 2


def test_a_folder_named_like_a_recipe_is_not_read_as_one(tmp_path, monkeypatch):
    from rlvr.cli import RECIPES, recipe_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. `rlvr demo --out demo` made it
    assert recipe_path("demo") == RECIPES / "demo.yaml"


def test_missing_field_names_file_and_line(user_task, tiny_llama_dir):
    root, recipe = user_task
    (root / "train.jsonl").write_text('{"prompt": "1+1", "answer": "2", "solution": "2"}\n{"prompt": "2+2"}\n')
    with pytest.raises(SystemExit, match=r"train\.jsonl line 2: missing field 'answer'"):
        main(["train", str(recipe), f"model.name_or_path={tiny_llama_dir}", f"output_dir={root / 'y'}"])


def test_demo_writes_its_summary(tmp_path, capsys):
    """The demo's plumbing at toy size (the real run is `make demo`; numbers in the README)."""
    main(["demo", "--out", str(tmp_path / "demo"), "task.sft_examples=64", "task.sft_val=16",
          "task.eval_per_bucket=8", "task.rl_problems=64", "sft.max_steps=6", "sft.eval_every=3",
          "rl.steps=2", "rl.prompts_per_step=4", "rl.max_new_tokens=16", "eval.max_new_tokens=16",
          "sft.max_new_tokens=16"])
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    # OUT/config.yaml repeats the run: SFT first, as here (demo.yaml itself leaves sft.before_rl off)
    from rlvr.config import load_config

    saved = load_config(tmp_path / "demo" / "config.yaml")
    assert saved.sft.before_rl and saved.task.sft_examples == 64 and saved.rl.steps == 2
    for side in ("before", "after"):
        assert {"accuracy", "ci95", "n"} <= set(summary[side]) and summary[side]["n"] == 16
        assert set(summary[side]["by_bucket"]) == {"seen", "longer"}
    assert summary["sft_seconds"] > 0 and summary["rl_seconds"] > 0 and summary["rl_steps"] == 2
    assert 0 <= summary["paired_test"]["p_value"] <= 1
    out = capsys.readouterr().out
    assert "SFT budget: 64 worked solutions" in out and "McNemar exact" in out
    main(["report", str(tmp_path / "demo")])
    html = (tmp_path / "demo" / "report" / "report.html").read_text()
    assert f"{100 * summary['after']['accuracy']:.1f}%" in html
