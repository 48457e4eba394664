"""`torchrun --nproc-per-node 2 -m rlvr train ...` on CPU (gloo): two real processes, each
sampling its share of the prompts, gradients summed across them, rank 0 writing the run.
The run itself checks at the end that both ranks hold identical weights (it raises if not);
tests/train/test_invariance.py checks the gradient equals the single-process one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def parity_on_rank0(completion, sample):
    """Length parity on rank 0; a flat 0 on rank 1, whose groups then have no spread at all."""
    return float(len(completion) % 2) if os.environ.get("RANK", "0") == "0" else 0.0


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def command(out, model_dir, *extra, launcher=("--standalone", "--nproc-per-node", "2")) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", "rlvr",
            "train", "grpo", f"model.name_or_path={model_dir}", f"output_dir={out}", "sft.before_rl=false",
            "task.template=auto", "task.reward=tests.train.test_recipes:parity_reward", "task.rl_problems=200",
            "task.eval_per_bucket=4", "rl.prompts_per_step=4", "rl.group_size=4", "rl.max_new_tokens=12",
            "rl.reward_truncated=true", "rl.micro_batch_size=3", "rl.save_every=1", "rl.time_budget_s=0",
            "eval.max_new_tokens=12", *extra]


def torchrun(out, model_dir, *extra, timeout=300):
    return subprocess.run(command(out, model_dir, *extra), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def test_two_processes_train_and_resume(tiny_llama_dir, tmp_path):
    out = tmp_path / "run"
    done = torchrun(out, tiny_llama_dir, "rl.steps=2", "--no-eval")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]  # one row per step, written once (rank 0)
    # each rank trains on its 2 prompts x 4 rollouts; the logged row sums both ranks: 16
    assert all(r["kept_rollouts"] == 16 and r["kl"] >= 0 for r in rows)
    first = load_file(str(out / "checkpoints" / "step-000002" / "model.safetensors"))

    again = torchrun(out, tiny_llama_dir, "rl.steps=3", "--resume")  # continue the same run, then evaluate on rank 0
    assert again.returncode == 0, again.stderr[-3000:]
    last = load_file(str(out / "checkpoints" / "step-000003" / "model.safetensors"))
    assert any(not (first[k] == last[k]).all() for k in first)
    assert json.loads((out / "eval" / "eval.json").read_text())["n"] == 8
    state = torch.load(out / "checkpoints" / "step-000003" / "trainer_state.pt", weights_only=False)
    assert len(state["rng_by_rank"]) == 2


def test_a_rank_with_nothing_to_train_on_still_joins_the_update(tiny_llama_dir, tmp_path):
    """Rank 1's groups are all uniform and skipped; rank 0's are not. Rank 1 must still take part
    in every all-reduce of the update (with an empty share), or both ranks would hang."""
    out = tmp_path / "run"
    done = torchrun(out, tiny_llama_dir, "rl.steps=2", "rl.skip_uniform_groups=true",
                    "task.reward=tests.train.test_torchrun:parity_on_rank0", "--no-eval", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # only rank 0's rows can be kept (at most its 2 prompts x 4 rollouts); in some step they were
    kept = [r["kept_rollouts"] for r in rows]
    assert max(kept) <= 8 and max(kept) > 0, kept
    assert all(r["grad_norm"] > 0 for r in rows if r["kept_rollouts"])


def test_lora_ranks_start_from_the_same_adapters(tiny_llama_dir, tmp_path):
    """LoRA's A matrices are random: every rank must build the same ones (the run seeds the build
    alike on all ranks, then each rank's sampling apart), or the summed gradients mean nothing.
    The run checks the replicas right after the build and again at the end."""
    out = tmp_path / "run"
    done = torchrun(out, tiny_llama_dir, "rl.steps=1", "model.lora_r=4", "--no-eval", timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "metrics.jsonl").read_text())["kept_rollouts"] == 16


def prompt_parity(completion, sample):
    """Scores the problem, not the completion: an evaluation's accuracy is then known in advance,
    whoever decodes which problem in which batch."""
    return float(len(sample.prompt) % 2)


def _eval_rank(rank: int, model_dir: str, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from rlvr.config import load_config
    from rlvr.models import load_policy
    from rlvr.rollout.hf import HFEngine
    from rlvr.tasks import load_task
    from rlvr.train.rl import periodic_eval

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        cfg = load_config(None, [f"model.name_or_path={model_dir}", "task.eval_per_bucket=5", "eval.max_new_tokens=4"])
        model, tok = load_policy(model_dir)
        engine = HFEngine(model, tok, eos_token_ids=list(range(len(tok))))  # every token ends a row: none is cut
        heldout = load_task(cfg.task, need=("heldout",)).heldout
        scored = []  # the problems this rank scored

        def reward(completion, sample):
            scored.append(sample.id)
            return prompt_parity(completion, sample)

        accuracy = periodic_eval(engine, tok, heldout, reward, cfg)
        torch.save((accuracy, scored), os.path.join(out_dir, f"acc{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_periodic_eval_is_split_across_ranks_and_covers_every_problem(tiny_llama_dir, tmp_path):
    """rl.eval_every under torchrun: each rank scores every other held-out problem (real gloo
    ranks, a real engine), and both report the accuracy over all of them, what one process
    would report, not over their own share."""
    import torch.multiprocessing as mp

    from rlvr.config import load_config
    from rlvr.eval.evaluate import eval_problems
    from rlvr.tasks import load_task

    mp.spawn(_eval_rank, args=(str(tiny_llama_dir), str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    cfg = load_config(None, ["task.eval_per_bucket=5"])
    problems = eval_problems(load_task(cfg.task, need=("heldout",)).heldout, cfg.eval)
    expected = sum(prompt_parity("", p) for p in problems) / len(problems)
    shares = [sum(prompt_parity("", p) for p in problems[r::2]) / len(problems[r::2]) for r in range(2)]
    assert len(problems) == 10 and expected not in shares  # either rank's share alone would show
    results = [torch.load(tmp_path / f"acc{r}.pt") for r in range(2)]
    assert [accuracy for accuracy, _ in results] == [expected, expected]
    assert [scored for _, scored in results] == [[p.id for p in problems[r::2]] for r in range(2)]  # half each


def test_two_nodes_train_as_two_processes(tiny_llama_dir, tmp_path):
    """Multi-node: two torchrun launchers, each a node of one process (here both on this machine),
    meet at a c10d rendezvous. Both ranks have LOCAL_RANK 0; the global rank decides which prompts
    each samples and who writes the run (rank 0), and the run checks at its end that both ranks
    hold the same weights. (Across machines, output_dir must be on a file system both can read
    for --resume.)"""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    launcher = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "rlvr-two-nodes"]
    nodes = [subprocess.Popen(command(out, tiny_llama_dir, "rl.steps=2", "--no-eval", launcher=launcher), cwd=ROOT,
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [node.communicate(timeout=300) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), [err[-2000:] for _, err in logs]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["kept_rollouts"] == 16 for r in rows)  # both ranks' shares
    state = torch.load(out / "checkpoints" / "step-000002" / "trainer_state.pt", weights_only=False)
    assert len(state["rng_by_rank"]) == 2


def test_more_ranks_on_a_node_than_gpus_is_refused_with_the_fix(monkeypatch):
    # torchrun --nproc-per-node 2 on a one-GPU node: NCCL needs a GPU per rank, and without this
    # check rank 1 would die in torch.cuda.set_device with "invalid device ordinal"
    import pytest

    from rlvr.train import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError, match=r"local rank 1, but this node has 1 visible GPU.*--nproc-per-node 1 "
                                           r"or fewer, or CUDA_VISIBLE_DEVICES= to train on the CPU"):
        distributed.init_from_env()
    assert not torch.distributed.is_initialized()
