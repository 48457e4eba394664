"""A user's checkpoint, loaded by path: 2 RL steps, and a stop/resume cycle that is exact."""

import json

import pytest
import torch
from safetensors.torch import load_file

from rlvr.config import load_config
from rlvr.train import checkpoint
from rlvr.train.rl import train_rl

CALLS = {"n": 0, "stop_after": None}


def flaky_reward(completion, sample):
    """Scores by length parity (so groups have spread), and can simulate a Ctrl-C."""
    CALLS["n"] += 1
    if CALLS["stop_after"] is not None and CALLS["n"] > CALLS["stop_after"]:
        raise KeyboardInterrupt
    return float(len(completion) % 2)


def config(model_dir, out, **extra):
    overrides = [f"model.name_or_path={model_dir}", f"output_dir={out}", "task.template=auto",
                 "task.reward=tests.train.test_rl_plumbing:flaky_reward", "task.rl_problems=200",
                 "task.eval_per_bucket=4", "rl.steps=4", "rl.prompts_per_step=2", "rl.group_size=4",
                 "rl.max_new_tokens=12", "rl.save_every=2", "rl.reward_truncated=true", "rl.micro_batch_size=3", "rl.skip_uniform_groups=false",
                 "model.autocast=off",  # float32, so the engine's logprobs match the trainer's to 1e-4
                 *[f"{k.replace('__', '.')}={v}" for k, v in extra.items()]]
    return load_config(None, overrides)


def weights(ckpt):
    return load_file(str(ckpt / "model.safetensors"))


def test_two_steps_on_a_user_checkpoint(tiny_llama_dir, tmp_path, monkeypatch):
    CALLS.update(n=0, stop_after=None)
    saves = []  # steps written: the last step is saved once, though save_every divides it
    save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda root, step, *a, **k: saves.append(step) or save(root, step, *a, **k))
    # the random model rarely stops within 12 tokens: by default its truncated responses score 0.
    # Every row is computed, so logprob_mismatch covers them all, uniform groups included
    result = train_rl(config(tiny_llama_dir, tmp_path / "run", rl__steps=2, rl__reward_truncated="false",
                             rl__skip_zero_advantage_rows="false"), log_fn=lambda *_: None)
    assert result["steps"] == 2 and saves == [2]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["generated_tokens"] > 0 and rows[0]["logprob_mismatch"] < 1e-4
    logged = [json.loads(line) for line in (tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()]
    assert logged and {r["step"] for r in logged} == {1}
    cut = [r for r in logged if r["finish_reason"] == "length"]
    assert cut and all(r["reward"] == 0.0 for r in cut)  # an unfinished response scores 0
    ckpt = checkpoint.latest(tmp_path / "run")
    assert ckpt.name == "step-000002" and (ckpt / "config.json").exists() and (ckpt / "tokenizer.json").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt)  # the checkpoint loads in plain transformers


def test_resume_equals_uninterrupted_run(tiny_llama_dir, tmp_path):
    CALLS.update(n=0, stop_after=None)
    straight = train_rl(config(tiny_llama_dir, tmp_path / "a"), log_fn=lambda *_: None)
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()

    CALLS.update(n=0, stop_after=2 * 8 + 3)  # stop part-way through step 3 (8 rollouts a step)
    with pytest.raises(KeyboardInterrupt):
        train_rl(config(tiny_llama_dir, tmp_path / "b"), log_fn=lambda *_: None)
    assert checkpoint.latest(tmp_path / "b").name == "step-000002"
    with pytest.raises(FileExistsError, match="--resume"):
        train_rl(config(tiny_llama_dir, tmp_path / "b"), log_fn=lambda *_: None)
    with pytest.raises(ValueError, match=r"started with task\.reward='tests.train.test_rl_plumbing:flaky_reward'"):
        train_rl(config(tiny_llama_dir, tmp_path / "b", task__reward="tests.train.test_recipes:parity_reward"),
                 resume=True, log_fn=lambda *_: None)  # another reward: not the run the checkpoint continues
    with (tmp_path / "b" / "metrics.jsonl").open("a") as f:
        f.write('{"phase": "rl", "step": 3, "rew')  # a row cut short by a crash mid-write: dropped on resume
    CALLS.update(stop_after=None)
    resumed = train_rl(config(tiny_llama_dir, tmp_path / "b"), resume=True, log_fn=lambda *_: None)
    rows_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()

    assert resumed["steps"] == straight["steps"] == 4
    wa, wb = weights(checkpoint.latest(tmp_path / "a")), weights(checkpoint.latest(tmp_path / "b"))
    start = load_file(str(tiny_llama_dir / "model.safetensors"))
    assert any(not torch.equal(start[k], v) for k, v in wa.items())  # the updates reached the checkpoint
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    strip = lambda r: {k: v for k, v in json.loads(r).items() if not k.startswith(("time_", "tokens_per_s", "elapsed"))}  # noqa: E731
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]


def test_resume_before_the_first_checkpoint_starts_over_in_place(tiny_llama_dir, tmp_path):
    """Stopped in step 2 with save_every=2: no checkpoint yet. --resume starts RL again from step 0
    in the same folder (no stale metrics rows), and ends where an uninterrupted run ends."""
    CALLS.update(n=0, stop_after=None)
    straight = train_rl(config(tiny_llama_dir, tmp_path / "a", rl__steps=2), log_fn=lambda *_: None)
    CALLS.update(n=0, stop_after=8 + 3)
    with pytest.raises(KeyboardInterrupt):
        train_rl(config(tiny_llama_dir, tmp_path / "b", rl__steps=2), log_fn=lambda *_: None)
    assert checkpoint.latest(tmp_path / "b") is None
    assert len((tmp_path / "b" / "metrics.jsonl").read_text().splitlines()) == 1  # step 1 was logged
    CALLS.update(stop_after=None)
    resumed = train_rl(config(tiny_llama_dir, tmp_path / "b", rl__steps=2), resume=True, log_fn=lambda *_: None)
    assert resumed["steps"] == straight["steps"] == 2
    assert [json.loads(r)["step"] for r in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    wa, wb = weights(checkpoint.latest(tmp_path / "a")), weights(checkpoint.latest(tmp_path / "b"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="no run under"):
        train_rl(config(tiny_llama_dir, tmp_path / "never"), resume=True, log_fn=lambda *_: None)


def test_resume_before_the_first_checkpoint_checks_before_it_changes_anything(tiny_llama_dir, tmp_path):
    """No checkpoint yet: --resume with another reward is refused as it is with a checkpoint (it
    skipped the check and wrote its own config.yaml), and a bad input leaves the logged rows."""
    CALLS.update(n=0, stop_after=8 + 3)
    with pytest.raises(KeyboardInterrupt):
        train_rl(config(tiny_llama_dir, tmp_path / "b", rl__steps=2), log_fn=lambda *_: None)
    CALLS.update(stop_after=None)
    saved, rows = (tmp_path / "b" / "config.yaml").read_text(), (tmp_path / "b" / "metrics.jsonl").read_text()
    with pytest.raises(ValueError, match=r"started with task\.reward="):
        train_rl(config(tiny_llama_dir, tmp_path / "b", rl__steps=2, task__reward="tests.train.test_recipes:parity_reward"),
                 resume=True, log_fn=lambda *_: None)
    with pytest.raises(ValueError, match="eval.by field 'bukcet'"):
        train_rl(config(tiny_llama_dir, tmp_path / "b", rl__steps=2, eval__by="bukcet"), resume=True, log_fn=lambda *_: None)
    assert (tmp_path / "b" / "config.yaml").read_text() == saved
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == rows and rows.count("\n") == 1


def test_resume_trains_with_changed_rates_from_its_first_step(tiny_llama_dir, tmp_path, monkeypatch):
    """--resume with another rl.lr, rl.weight_decay, schedule (rl.steps, warmup, floor) and
    critic.lr: loading the optimizer and scheduler states put the old rates back (and the old
    schedule's next lr), while the log said they changed. Now the first resumed step trains at
    the lr the new schedule gives at the restored count. config.yaml then holds the new
    settings (the next resume compares with them); the old ones stay as config.until-step-N."""
    from rlvr.config import load_config as load
    from rlvr.train import state
    from rlvr.train.sft import cosine_schedule

    CALLS.update(n=0, stop_after=None)
    first = dict(rl__advantage="gae", rl__steps=2, rl__lr=1e-3, rl__warmup_steps=1, rl__min_lr_ratio=0.5)
    train_rl(config(tiny_llama_dir, tmp_path / "r", **first), log_fn=lambda *_: None)
    built = []
    build = state.build_trainer
    monkeypatch.setattr(state, "build_trainer", lambda *a: built.append(build(*a)) or built[-1])
    new = config(tiny_llama_dir, tmp_path / "r", **{**first, "rl__steps": 5, "rl__lr": 4e-3, "rl__warmup_steps": 2,
                                                      "rl__min_lr_ratio": 0.1, "rl__weight_decay": 0.25,
                                                      "critic__lr": 0.02, "critic__weight_decay": 0.5})
    log = []
    train_rl(new, resume=True, log_fn=log.append)
    assert "--resume with a changed setting: rl.lr: 0.001 -> 0.004" in log
    w = torch.nn.Parameter(torch.zeros(1))
    schedule = cosine_schedule(torch.optim.AdamW([w], lr=4e-3), 2, 5, 0.1)
    expected = []
    for count in range(5):
        expected.append(schedule.get_last_lr()[0])
        schedule.optimizer.step()
        schedule.step()
    rows = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["lr"] for r in rows[2:]] == pytest.approx(expected[2:], rel=1e-12)  # steps 3-5: counts 2-4
    tr = built[0]
    assert [(g["initial_lr"], g["weight_decay"]) for g in tr.optimizer.param_groups] == [(4e-3, 0.25)]
    assert [(g["lr"], g["weight_decay"]) for g in tr.critic_optimizer.param_groups] == [(0.02, 0.5)]
    assert tr.scheduler.base_lrs == [4e-3]
    saved = load(tmp_path / "r" / "config.yaml")
    assert (saved.rl.lr, saved.rl.steps, saved.critic.lr) == (4e-3, 5, 0.02)
    assert load(tmp_path / "r" / "config.until-step-000002.yaml").rl.lr == 1e-3
    log.clear()  # the next resume compares with the latest settings: nothing changed
    train_rl(new, resume=True, log_fn=log.append)
    assert not [line for line in log if "changed setting" in line]
    assert sorted(p.name for p in (tmp_path / "r").glob("config*")) == ["config.until-step-000002.yaml", "config.yaml"]


def test_a_failure_mid_run_says_where_to_continue(tiny_llama_dir, tmp_path, monkeypatch):
    """A full disk while step 4's checkpoint is written (not a Ctrl-C): the error goes on up, and
    the run first prints the last checkpoint and the command that continues it, which does."""
    import errno

    CALLS.update(n=0, stop_after=None)
    save = torch.save

    def full_disk(obj, path, *a, **k):
        if isinstance(obj, dict) and obj.get("step") == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, path, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    log = []
    with pytest.raises(OSError):
        train_rl(config(tiny_llama_dir, tmp_path / "d"), log_fn=log.append)
    out = tmp_path / "d"
    assert log[-1] == (f"\nfailed (OSError: [Errno 28] No space left on device) during the checkpoint of step 4; "
                       f"last checkpoint: {out / 'checkpoints' / 'step-000002'}; "
                       f"continue with: rlvr train {out / 'config.yaml'} --resume")
    monkeypatch.setattr(checkpoint.torch, "save", save)
    assert train_rl(load_config(out / "config.yaml"), resume=True, log_fn=lambda *_: None)["steps"] == 4


def test_resume_refuses_a_change_of_what_the_run_is(tmp_path):
    """--resume compares the saved config.yaml: a change of model, algorithm or critic layout is
    refused (critic.shared flips what a checkpoint's critic/ folder holds: a head alone, or a
    whole model), a longer run is logged."""
    from rlvr.config import save_config
    from rlvr.train.run_dir import check_resume_config

    save_config(load_config(None, ["rl.advantage=gae", "rl.skip_uniform_groups=false"]), tmp_path / "config.yaml")
    for change in ("critic.shared=true", "rl.advantage=rloo", "model.name_or_path=elsewhere"):
        cfg = load_config(None, ["rl.advantage=gae", "rl.skip_uniform_groups=false", change])
        with pytest.raises(ValueError, match=change.split("=")[0].replace(".", r"\.")):
            check_resume_config(tmp_path, cfg)
    longer = load_config(None, ["rl.advantage=gae", "rl.skip_uniform_groups=false", "rl.steps=300"])
    assert check_resume_config(tmp_path, longer) == ["rl.steps: 200 -> 300"]


def test_a_nonfinite_gradient_skips_the_optimizer_step():
    """One NaN in a gradient would make every weight AdamW touches NaN for good: the step is
    skipped (weights and moments as they were) and counted; the next finite step goes ahead."""
    from rlvr.train.distributed import finite_step

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1)
    w.grad = torch.tensor([1.0, float("nan"), 0.0])
    out = finite_step(opt, torch.nn.utils.clip_grad_norm_([w], 1.0))
    assert out["grad_norm_nonfinite"] == 1.0 and torch.equal(w.detach(), torch.ones(3))
    assert not opt.state and w.grad is None  # AdamW never saw it
    w.grad = torch.tensor([1.0, 0.0, 0.0])
    out = finite_step(opt, torch.nn.utils.clip_grad_norm_([w], 1.0), "critic_grad_norm")
    assert out == {"critic_grad_norm": 1.0} and w[0] < 1.0


def test_a_steps_metrics_cover_all_its_epochs():
    """rl.inner_epochs / critic.epochs > 1: a step logged only its last epoch's loss and clip
    fraction; it now logs each one's mean, the ratio's range over all, and every skipped step."""
    from rlvr.train.rl import over_epochs

    rows = [{"loss": 1.0, "clip_frac": 0.0, "ratio_max": 1.2, "ratio_min": 0.9, "grad_norm": 2.0},
            {"loss": 3.0, "clip_frac": 0.5, "ratio_max": 1.1, "ratio_min": 0.7, "grad_norm": float("inf"),
             "grad_norm_nonfinite": 1.0}]
    out = over_epochs(rows)
    assert (out["loss"], out["clip_frac"], out["ratio_max"], out["ratio_min"]) == (2.0, 0.25, 1.2, 0.7)
    assert out["grad_norm_nonfinite"] == 1.0 and out["grad_norm"] == float("inf")
    assert over_epochs(rows[:1]) is rows[0]


def test_an_eval_breakdown_field_no_problem_has_is_refused_before_training(tiny_llama_dir, tmp_path):
    """eval.by names a metadata field for the evaluations' breakdown; one that no held-out
    problem has (a typo, or the MATH recipe's subject,level on GSM8K) is refused before RL and
    before SFT create anything, not after training at the first evaluation."""
    from rlvr.cli import run_sft

    with pytest.raises(ValueError, match=r"eval.by field 'bukcet' is in none of the 8 problems' metadata; they have: .*bucket"):
        train_rl(config(tiny_llama_dir, tmp_path / "rl", eval__by="bukcet"), log_fn=lambda *_: None)
    assert not (tmp_path / "rl").exists()
    with pytest.raises(ValueError, match="eval.by field 'bukcet'"):
        run_sft(config(tiny_llama_dir, tmp_path / "sft", eval__by="bucket, bukcet"))
    assert not (tmp_path / "sft").exists()


def test_a_run_out_of_time_says_why_a_resume_does_nothing(tiny_llama_dir, tmp_path):
    """Stopped by rl.time_budget_s, resumed with the same budget: no step runs, and it says why."""
    CALLS.update(n=0, stop_after=None)
    cfg = config(tiny_llama_dir, tmp_path / "t", rl__time_budget_s=1e-9)
    assert train_rl(cfg, log_fn=lambda *_: None)["steps"] == 1
    log = []
    assert train_rl(cfg, resume=True, log_fn=log.append)["steps"] == 1
    assert any("rl.time_budget_s=1e-09 is spent already" in line and "larger rl.time_budget_s=" in line for line in log)
