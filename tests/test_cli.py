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


def test_a_resumed_run_keeps_its_earlier_eval_and_settings(user_task, tiny_llama_dir, capsys):
    """`rlvr train ... --resume` on a finished run, with more steps: the final eval of step 2 was
    written over by step 3's. It is kept, named for the checkpoint it scored; config.yaml holds
    the resumed settings and the earlier ones stay beside it."""
    from rlvr.config import load_config

    root, recipe = user_task
    args = ["train", str(recipe), f"model.name_or_path={tiny_llama_dir}", f"output_dir={root / 'r'}"]
    main(args)
    main([*args, "rl.steps=3", "--resume"])
    kept = json.loads((root / "r" / "eval-step-000002" / "eval.json").read_text())
    assert kept["model"] == str(root / "r" / "checkpoints" / "step-000002")
    assert (root / "r" / "eval-step-000002" / "samples.jsonl").exists()
    assert json.loads((root / "r" / "eval" / "eval.json").read_text())["model"].endswith("step-000003")
    assert f"as {root / 'r' / 'eval-step-000002'}" in capsys.readouterr().out
    assert load_config(root / "r" / "config.yaml").rl.steps == 3
    assert load_config(root / "r" / "config.until-step-000002.yaml").rl.steps == 2


def test_eval_of_a_run_folder_names_its_checkpoint(user_task, tiny_llama_dir):
    """`rlvr eval --model RUN` (the run folder, not a model): say which folder to give."""
    root, recipe = user_task
    main(["train", str(recipe), f"model.name_or_path={tiny_llama_dir}", f"output_dir={root / 'r'}", "--no-eval"])
    with pytest.raises(SystemExit, match=rf"{root / 'r'} is a run folder, not a model; give a model in it, e.g. "
                                         rf"its last: --model {root / 'r' / 'checkpoints' / 'step-000002'}$"):
        main(["eval", "--model", str(root / "r"), "--out", str(root / "e")])
    assert not (root / "e").exists()


DEMO = ["task.sft_examples=64", "task.sft_val=16", "task.eval_per_bucket=8", "task.rl_problems=64",
        "sft.max_steps=6", "sft.eval_every=3", "rl.steps=2", "rl.prompts_per_step=4", "rl.max_new_tokens=16",
        "eval.max_new_tokens=16", "sft.max_new_tokens=16"]


def test_a_stopped_demo_says_how_to_continue_and_does(tmp_path, capsys, monkeypatch):
    """A demo stopped in the eval after SFT threw the finished SFT model away ("holds no finished
    SFT phase"), and its stop messages pointed to commands that did not work. Each stop now
    prints the command that continues it; a resume reuses the SFT model, continues RL, and keeps
    the evaluations and summary of before it under names that say what they scored."""
    import rlvr.cli
    from rlvr.train import rl

    out = tmp_path / "demo"
    again = f"rlvr train {out / 'config.yaml'} --resume"
    held_out_eval = rlvr.cli.held_out_eval

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rlvr.cli, "held_out_eval", stop)
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(out), *DEMO])
    assert (out / "sft" / "sft.json").exists() and (out / "sft" / "model" / "model.safetensors").exists()
    assert f"stopped during the held-out eval of the SFT model (saved in {out / 'sft' / 'model'}); `{again}` reuses it" \
        in capsys.readouterr().out
    monkeypatch.setattr(rlvr.cli, "held_out_eval", held_out_eval)
    steps = {"n": 0}
    rl_step = rl.rl_step
    monkeypatch.setattr(rl, "rl_step", lambda *a: rl_step(*a) if (steps.__setitem__("n", steps["n"] + 1)
                                                                  or steps["n"] < 2) else stop())
    with pytest.raises(SystemExit):
        main(["train", str(out / "config.yaml"), "--resume"])
    printed = capsys.readouterr().out
    assert "SFT done; held-out eval of its model" in printed and f"continue with: {again}" in printed
    monkeypatch.setattr(rl, "rl_step", rl_step)
    main(["train", str(out / "config.yaml"), "--resume"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rl_steps"] == 2 and summary["resumed"] and "total_minutes" not in summary
    assert "(resumed: earlier sessions not counted)" in capsys.readouterr().out
    main(["train", str(out / "config.yaml"), "--resume", "rl.steps=3"])  # a finished demo, trained longer
    assert json.loads((out / "summary-step-000002.json").read_text())["rl_steps"] == 2
    assert json.loads((out / "rl" / "eval-step-000002" / "eval.json").read_text())["model"].endswith("step-000002")
    assert json.loads((out / "summary.json").read_text())["rl_steps"] == 3
    assert (out / "config.until-step-000002.yaml").exists() and (out / "rl" / "config.until-step-000002.yaml").exists()
    assert [p.name for p in sorted((out / "sft").glob("eval*"))] == ["eval", "eval-model", "eval-model-2"]
    # RL alone on the demo's folder: refused, with the two commands that do work
    with pytest.raises(SystemExit, match=rf"continue it with `{again}`, or start RL from its SFT model in a new "
                                         rf"folder with model.name_or_path={out / 'sft' / 'model'} output_dir="):
        main(["train", "demo", f"output_dir={out}", "--resume"])


def test_a_demo_stopped_during_sft_starts_it_again(tmp_path, capsys, monkeypatch):
    """SFT is not resumable mid-phase: the stop says so, and `rlvr demo --resume` starts SFT over
    (the stopped one's folder kept as sft-stopped/) and runs the rest."""
    import rlvr.train.sft

    out = tmp_path / "demo"
    train_sft = rlvr.train.sft.train_sft

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rlvr.train.sft, "train_sft", stop)
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(out), *DEMO])
    assert (f"stopped during SFT, which is not resumable mid-phase: `rlvr train {out / 'config.yaml'} --resume` "
            "starts SFT again from scratch") in capsys.readouterr().out
    monkeypatch.setattr(rlvr.train.sft, "train_sft", train_sft)
    main(["demo", "--out", str(out), *DEMO, "--resume"])
    assert (out / "sft-stopped" / "config.yaml").exists() and (out / "summary.json").exists()
    assert "SFT had not finished, and is not resumable mid-phase" in capsys.readouterr().out
