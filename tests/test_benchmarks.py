"""The benchmarks stay runnable: each one, at a toy size, ends with its JSON line. Their figures
are measured by hand on a quiet machine (README, "Benchmarks"); here only that they run and
count right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from rollout import sampled_tokens  # noqa: E402


def test_sampled_tokens_counts_up_to_the_first_eos():
    # prompt of 2 columns, then 5 new ones; EOS is 9, pad is 0 (model.generate pads after EOS)
    seqs = torch.tensor([[5, 5, 1, 2, 9, 0, 0],    # 3 tokens, the third is EOS
                         [5, 5, 1, 2, 3, 4, 6],    # never ends: all 5
                         [0, 5, 9, 0, 0, 0, 0],    # EOS first: 1
                         [5, 5, 1, 9, 9, 0, 0]])   # a second EOS after the first is not counted: 2
    assert sampled_tokens(seqs, 2, [9], stop_at_eos=True) == 3 + 5 + 1 + 2
    assert sampled_tokens(seqs, 2, [9], stop_at_eos=False) == 4 * 5


def test_rollout_benchmark_runs_and_ends_with_its_json_line():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rollout.py"), "--prompts", "2", "--group", "2",
                          "--new-tokens", "4", "--repeats", "1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["batch"] == 4 and row["ours_mean_len"] == row["hf_mean_len"] == 4.0  # EOS disabled: every token
    assert row["ours_tok_s"] > 0 and row["hf_tok_s"] > 0 and row["matmuls_only_of_limit"] > 0
    # the fractions are tokens/s over the same limit
    assert abs(row["ours_of_limit"] - row["ours_tok_s"] / row["limit_tok_s"]) < 2e-3


def test_ch6_benchmark_stops_at_its_time_budget_and_reports_the_steps_done():
    # a toy depth and length; a budget of 1 s ends training after its first step (a step takes longer)
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ch6_shapes.py"), "--layers", "1",
                          "--max-new-tokens", "4", "--steps", "5", "--time-budget", "1", "--set", "rl.lr=2e-6"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["steps"] == 1 and row["layers"] == 1 and row["device"] == "cpu" and row["overrides"] == ["rl.lr=2e-6"]
    assert row["s_per_step"] > row["rollout_s"] > 0 and row["tok_s"] > 0


def test_gpu_check_refuses_a_machine_without_a_gpu(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "PYTHON": sys.executable})  # GPUs are hidden from the suite
    assert out.returncode != 0 and "no CUDA GPU visible" in out.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()  # it stopped before any stage
