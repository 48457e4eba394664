"""rlvr.eval.report: failure-mode checks on synthetic curves with a known onset, and the report
files of synthetic run folders (train-style, demo-style, sparse, missing metrics)."""

import doctest
import json
import random

import pytest

from rlvr.eval import flags as report_flags
from rlvr.eval.flags import (check_entropy_collapse, check_heldout_decline, check_length_blowup,
                             check_reward_hacking, check_truncation_rise)
from rlvr.eval.report import write_report

STEPS = 60
PLOTS = {"reward.png", "accuracy.png", "length.png", "truncated.png", "entropy.png", "kl.png", "clip_frac.png",
         "grad_norm.png", "heldout.png"}


def healthy_rows(n: int = STEPS) -> list[dict]:
    """A run with no failure: reward and accuracy rise together by 0.005 a step, length and
    entropy alternate around a flat level, held-out accuracy rises every 10 steps. The period-2
    wiggles stand in for noise and keep every window mean computable by hand."""
    rows = []
    for s in range(1, n + 1):
        odd = s % 2
        rows.append({"phase": "rl", "step": s, "elapsed_s": 3.0 * s, "reward": 0.3 + 0.005 * s, "reward_std": 0.45,
                     "accuracy": 0.3 + 0.005 * s, "length_mean": 50.0 + odd, "length_max": 80.0 + 2 * odd,
                     "truncated": 0.01 * odd, "entropy": 0.5 + 0.02 * odd, "kl": 0.001 * s, "approx_kl": 0.0005,
                     "clip_frac": 0.02, "grad_norm": 1.0 + 0.1 * odd, "lr": 1e-5, "kept_rollouts": 64,
                     "time_rollout": 1.0, "time_update": 2.0, "tokens_per_s": 1000.0})
        if s % 10 == 0:
            rows[-1]["heldout_accuracy"] = 0.4 + 0.002 * s
    return rows


def noisy(rows: list[dict], key: str, sd: float, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{**r, key: r[key] + rng.gauss(0, sd)} for r in rows]


def with_values(rows: list[dict], key: str, fn) -> list[dict]:
    """rows with `key` replaced by fn(step)."""
    return [{**r, key: fn(r["step"])} for r in rows]


def rollout(step: int, prompt: str, completion: str, reward: float) -> dict:
    return {"step": step, "prompt": prompt, "answer": "4", "completion": completion, "reward": reward,
            "finish_reason": "stop"}


def write_run(path, rows, rollouts=(), lines_after=()):
    path.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + "".join(lines_after)
    (path / "metrics.jsonl").write_text(text)
    if rollouts:
        (path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    return path


def test_doctests():
    assert doctest.testmod(report_flags).failed == 0


# ---------------------------------------------------------------------------- checks

def test_healthy_run_raises_no_flag():
    rows = noisy(noisy(healthy_rows(), "length_mean", 2.0), "entropy", 0.03, seed=1)
    assert [c.fn(rows) for c in report_flags.CHECKS] == [None] * len(report_flags.CHECKS)


@pytest.mark.parametrize("fn, key, values, window", [
    # Length doubles every 10 steps from step 30: the raw curve passes 1.5x the early 50 tokens
    # at step 35.8; the centred rolling mean (steps s-4..s+5) passes it at step 36.
    (check_length_blowup, "length_mean", lambda s: 50 * 2 ** (max(0, s - 30) / 10), (30, 40)),
    # A jump to 1.7x at step 30, just over the 1.5x threshold: the window mean 50 + 35 f passes 75
    # once f > 5/7 of it is past the jump, 8 steps of 10, at step 33.
    (check_length_blowup, "length_mean", lambda s: 50 if s < 30 else 85, (32, 34)),
    # Entropy 0.5, then x0.7 per step from step 40: a quarter (0.125) is reached by step 44.
    (check_entropy_collapse, "entropy", lambda s: 0.5 * 0.7 ** max(0, s - 40), (40, 50)),
    # A drop to 0.2x at step 40, just under the 0.25x threshold: 0.5 - 0.4 f < 0.125 once f > 15/16,
    # so only when the whole window is past the drop, at step 44.
    (check_entropy_collapse, "entropy", lambda s: 0.5 if s < 40 else 0.1, (43, 45)),
    # Truncation 1%, then +2 points a step from step 30: 10% at step 34.5.
    (check_truncation_rise, "truncated", lambda s: 0.01 + 0.02 * max(0, s - 30), (30, 40)),
    # 1% -> 12% at step 30: the window passes 10% when 9 of 10 steps are past the jump, step 34.
    (check_truncation_rise, "truncated", lambda s: 0.01 if s < 30 else 0.12, (33, 35)),
])
def test_check_fires_near_the_known_onset(fn, key, values, window):
    flag = fn(with_values(healthy_rows(), key, values))
    assert flag is not None and window[0] <= flag.step <= window[1], flag
    assert str(flag.step) in flag.message
    assert fn(healthy_rows()) is None


@pytest.mark.parametrize("fn, key, values", [
    (check_length_blowup, "length_mean", lambda s: 50 + 0.25 * s),  # 1.3x by the end: below 1.5x
    (check_entropy_collapse, "entropy", lambda s: 0.5 - 0.003 * s),  # to 0.32 = 0.64x: a slow healthy decline
    (check_truncation_rise, "truncated", lambda s: 0.15),  # always 15%: high, but not rising
    (check_truncation_rise, "truncated", lambda s: 0.01 + 0.001 * s),  # tripled, but only to 7%
    # the first steps are the baseline, never judged against themselves: entropy 0.05 for 6 steps
    # (early mean 0.23, a quarter 0.0575, which the steps-1-6 window mean 0.05 is under), then 0.5
    (check_entropy_collapse, "entropy", lambda s: 0.05 if s <= 6 else 0.5),
])
def test_check_stays_quiet_below_its_threshold(fn, key, values):
    assert fn(with_values(healthy_rows(), key, values)) is None


def test_reward_hacking_when_reward_climbs_and_accuracy_stays_flat():
    # Accuracy stays at 0.3; reward rises 0.01 a step from step 20, +0.1 (the threshold) at step 30.
    rows = with_values(with_values(healthy_rows(), "accuracy", lambda s: 0.3), "reward",
                       lambda s: 0.3 + 0.01 * max(0, s - 20))
    flag = check_reward_hacking(noisy(rows, "accuracy", 0.005))
    assert flag is not None and 25 <= flag.step <= 32, flag
    # the same reward with accuracy rising alongside it is learning, not hacking
    assert check_reward_hacking(with_values(rows, "accuracy", lambda s: 0.3 + 0.01 * max(0, s - 20))) is None


def heldout_rows(heldout: list[float], reward) -> list[dict]:
    rows = with_values(healthy_rows(), "reward", reward)
    for r in rows:
        r.pop("heldout_accuracy", None)
        if r["step"] % 10 == 0:
            r["heldout_accuracy"] = heldout[r["step"] // 10 - 1]
    return rows


def test_heldout_decline_while_reward_rises():
    # Best 60% at step 30; step 40 is 2 points down (not yet), step 50 is 5 down with a higher
    # reward: the decline begins there and the last eval (52%) is still 8 down.
    falling = [0.50, 0.55, 0.60, 0.58, 0.55, 0.52]
    flag = check_heldout_decline(heldout_rows(falling, lambda s: 0.3 + 0.005 * s))
    assert flag is not None and flag.step == 50 and "52.0%" in flag.message, flag
    # reward falling too: the model got worse, but the reward is not misleading
    assert check_heldout_decline(heldout_rows(falling, lambda s: 0.6 - 0.005 * s)) is None
    # last eval only 2 points below the best: within noise
    assert check_heldout_decline(heldout_rows([0.50, 0.55, 0.60, 0.58, 0.57, 0.58], lambda s: 0.3 + 0.005 * s)) is None


def test_checks_need_enough_steps():
    rows = with_values(healthy_rows(12), "length_mean", lambda s: 50 * s)
    assert check_length_blowup(rows) is None
    assert [c["status"] for c in report_flags.run_checks(rows)][0] == "not checked"


# ---------------------------------------------------------------------------- report files

def test_healthy_report_files_and_series(tmp_path):
    rollouts = [rollout(1, "2+2", "2+2=4 \\boxed{4}", 1.0), rollout(1, "2+2", "<script>alert(1)</script>", 0.0),
                rollout(60, "2+2", "late and right \\boxed{4}", 1.0), rollout(60, "2+2", "late and wrong", 0.0)]
    run = write_run(tmp_path / "run", healthy_rows(), rollouts)
    out = tmp_path / "out"
    page = write_report(run, out).read_text()
    assert {p.name for p in out.glob("*.png")} == PLOTS
    for name in PLOTS:
        assert (out / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert page.count("data:image/png;base64,") == len(PLOTS)
    assert "src='http" not in page and "<link" not in page
    data = json.loads((out / "report.json").read_text())
    assert data["flags"] == [] and data["steps"] == STEPS
    assert [c["status"] for c in data["checks"]] == ["none detected"] * 5
    assert page.count("none detected") == 5
    # Window means of the synthetic series: reward over steps 1-10 is 0.3 + 0.005 * 5.5 = 0.3275,
    # over steps 51-60 0.3 + 0.005 * 55.5 = 0.5775; kl 0.001 * 5.5 and 0.001 * 55.5; length
    # alternates 51, 50 so every 10-step window averages 50.5; held-out has 6 points, all in one window.
    s = data["series"]
    assert (s["reward"]["first"], s["reward"]["last"]) == pytest.approx((0.3275, 0.5775))
    assert (s["kl"]["first"], s["kl"]["last"]) == pytest.approx((0.0055, 0.0555))
    assert (s["length_mean"]["first"], s["length_mean"]["last"]) == pytest.approx((50.5, 50.5))
    assert (s["length_max"]["min"], s["length_max"]["max"]) == (80.0, 82.0)
    assert s["heldout_accuracy"]["n"] == 6 and s["heldout_accuracy"]["first"] == pytest.approx(0.47)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "early (step 1)" in page and "late (step 60)" in page and "late and wrong" in page
    assert "3.0 min" in page  # wall time from elapsed_s: 180 s


def test_flagged_run_reports_the_flag(tmp_path):
    rows = with_values(healthy_rows(), "length_mean", lambda s: 50 * 2 ** (max(0, s - 30) / 10))
    out = write_report(write_run(tmp_path / "run", rows)).parent
    assert out == tmp_path / "run" / "report"  # the default out_dir
    data = json.loads((out / "report.json").read_text())
    expected = check_length_blowup(rows)
    assert data["flags"] == [{"name": "length blow-up", "step": expected.step, "message": expected.message}]
    page = (out / "report.html").read_text()
    assert "<tr class='flagged'><td>length blow-up" in page and f"flagged at step {expected.step}" in page
    assert page.index("Failure modes") < page.index("Training curves")


SUMMARY = {
    "before": {"accuracy": 0.612, "ci95": [0.58142, 0.64172], "n": 1000, "mean_length": 54.107,
               "by_bucket": {"seen": {"accuracy": 0.862, "ci95": [0.82900, 0.88948], "n": 500, "mean_length": 40.1},
                             "longer": {"accuracy": 0.362, "ci95": [0.32108, 0.40503], "n": 500}}},
    "after": {"accuracy": 0.73, "ci95": [0.70164, 0.75660], "n": 1000, "mean_length": 54.253,
              "by_bucket": {"seen": {"accuracy": 0.886, "ci95": [0.85515, 0.91096], "n": 500},
                            "longer": {"accuracy": 0.574, "ci95": [0.53025, 0.61662], "n": 500}}},
    "paired_test": {"test": "McNemar exact", "p_value": 1e-20, "difference": 0.118, "ci95": [0.09330, 0.14256],
                    "gained": 145, "lost": 27, "n": 1000},
    "sft_seconds": 188.6, "rl_seconds": 271.2, "total_minutes": 7.75,
}


def test_demo_style_report_shows_before_after(tmp_path):
    run = tmp_path / "demo"
    write_run(run / "rl", healthy_rows(5))
    write_run(run / "sft", [{"phase": "sft", "step": s, "loss": 4.0 / s, "lr": 1e-4} for s in range(1, 40)])
    (run / "summary.json").write_text(json.dumps(SUMMARY))
    out = tmp_path / "out"
    page = write_report(run, out).read_text()
    for cell in ["61.2% [58.1, 64.2]", "73.0% [70.2, 75.7]", "86.2% [82.9, 88.9]", "88.6% [85.5, 91.1]",
                 "36.2% [32.1, 40.5]", "57.4% [53.0, 61.7]"]:
        assert cell in page, cell
    assert "+11.8 points (95% CI +9.3 to +14.3), McNemar exact p &lt; 1e-6" in page
    assert "7.8 min (SFT 189 s, RL 271 s)" in page
    assert (out / "sft_loss.png").exists() and "heldout.png" not in json.loads((out / "report.json").read_text())["plots"]
    assert page.count("not checked") == 5  # 5 RL steps: too few for any verdict
    assert "no rollouts.jsonl" in page


def test_sparse_train_run_does_not_crash(tmp_path):
    rows = healthy_rows(30)
    rows[0] = {"phase": "rl", "step": 1, "reward": 0.3, "accuracy": 0.3, "value_loss": 0.2}  # PPO critic warm-up
    rows[5]["entropy"] = None  # a non-finite value, logged as null
    for key in ("kl", "approx_kl", "clip_frac"):  # never logged by this run
        for r in rows:
            r.pop(key, None)
    run = write_run(tmp_path / "run", rows, lines_after=['{"phase": "rl", "step": 31, "rew'])  # half-written
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text(json.dumps({"accuracy": 0.5, "ci95": [0.4, 0.6], "n": 100}))
    out = tmp_path / "out"
    page = write_report(run, out).read_text()
    assert not (out / "kl.png").exists() and not (out / "clip_frac.png").exists()
    assert (out / "entropy.png").exists() and (out / "value_loss.png").exists()
    assert "final model" in page and "50.0% [40.0, 60.0]" in page
    data = json.loads((out / "report.json").read_text())
    assert data["steps"] == 30 and data["series"]["entropy"]["n"] == 28


def test_missing_metrics_is_a_clear_error(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl") as e:
        write_report(tmp_path)
    assert str(tmp_path) in str(e.value) and "rlvr train" in str(e.value)
    assert not (tmp_path / "report").exists()


def test_a_sample_with_a_format_bonus_but_a_wrong_answer_is_shown_as_wrong(tmp_path):
    """rollouts.jsonl logs `correct` (the task reward alone): a wrong answer with a shaping bonus
    (reward 0.2 from format_soft) is not listed under "correct", as reward > 0 would have it."""
    wrong = {**rollout(1, "2+2", "<answer>5</answer> formatted but wrong", 0.2), "correct": False}
    right = {**rollout(1, "2+2", "right \\boxed{4}", 1.2), "correct": True}
    page = write_report(write_run(tmp_path / "run", healthy_rows(), [wrong, right]), tmp_path / "out").read_text()
    correct_part, wrong_part = page.split("early (step 1), wrong")
    assert "right \\boxed{4}" in correct_part and "formatted but wrong" in wrong_part
    assert "formatted but wrong" not in correct_part
