"""model.fsdp: the policy, the KL reference and a PPO critic sharded with FSDP2 over 2 gloo ranks
on CPU give the single-process result on the same global batch, and write whole checkpoints.

What could go wrong, and what would see it: FSDP's default reduce-scatter averages gradients
where ours sums them (the gradients and the logged grad_norm would be half); a gradient norm
taken over one rank's shard only (grad_norm, and the clipped gradients: rl.grad_clip is small
enough to bite); a rank with fewer micro-batches than the other skipping a collective (a hang,
ended by the process group's timeout); a checkpoint holding one rank's shard (from_pretrained
fails on the shapes); a resumed optimizer with the wrong moments or step count (the weights
after step 3; the critic test saves before the first update); rollouts decoded with stale
weights (the torchrun test's later steps would sample other completions than the run without
FSDP).
"""

import json
import os
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from rlvr.config import ConfigError, load_config
from rlvr.train import checkpoint
from rlvr.train import distributed as dist_utils
from rlvr.train import state
from rlvr.train.critic import HEAD
from rlvr.train.update import frozen_logprobs, update
from tests.train.test_invariance import RANK_SPLIT, make_batch
from tests.train.test_torchrun import torchrun

STREAM = SimpleNamespace(state=dict, load=lambda _: None)  # no prompts are drawn here
# fp32 on both sides, differing only in the order of additions (which rows share a micro-batch,
# a reduce-scatter per micro-batch vs one all-reduce, full logits vs the fused head): a few ulp.
# Gradients are compared at that precision (as tests/train/test_invariance.py does). Weights get
# more room because Adam divides each gradient by its own RMS: where a gradient is ~1e-7, its
# rounding becomes a visible share of that element's step (we see up to 7e-6 = lr * 7e-4). The
# bound, lr / 200, is still far below what a real fault does: move many weights by about lr.
TOL = dict(atol=1e-6, rtol=1e-5)
LR = 1e-2
WEIGHT_TOL = dict(atol=LR / 200, rtol=1e-5)


def config(model_dir, fsdp: bool, *extra):
    return load_config(None, [f"model.name_or_path={model_dir}", f"model.fsdp={str(fsdp).lower()}",
                              "rl.micro_batch_size=3", "rl.max_new_tokens=12", "rl.clip_low=0.1", "rl.clip_high=0.1",
                              f"rl.lr={LR}", "rl.warmup_steps=0", "rl.steps=3", "rl.grad_clip=0.05", "rl.kl_coef=0.1",
                              "rl.aggregation=seq_mean_token_mean",
                              "model.autocast=off", *extra])  # float32 unless a test asks: TOL is float32's


def train(model_dir, fsdp: bool, rows: slice, out: Path) -> dict:
    """Three updates on `rows` of the fixed batch, with a checkpoint and a resume after the second;
    returns the whole weights and the grad_norm of each step (every rank gets the same)."""
    cfg = config(model_dir, fsdp)
    torch.manual_seed(0)
    tr = state.build_trainer(cfg, None)
    batch = make_batch(tr.model.config.vocab_size).select(rows)
    batch.ref_logprobs = frozen_logprobs(tr.ref_model, batch, cfg)
    norms = []
    for step in range(3):
        if step == 2:  # resume from the checkpoint just written: weights and optimizer moments
            folder = dist_utils.from_rank0(lambda: str(checkpoint.latest(out)))
            tr = state.build_trainer(cfg, Path(folder))
            state.restore(tr, STREAM, Path(folder), cfg, log_fn=lambda *_: None)
        norms.append(update(tr, batch, cfg, on_policy=False)["grad_norm"])
        if step == 0:  # summed over ranks, then clipped with the global norm
            grads = {n: p.grad.full_tensor() if fsdp else p.grad.clone() for n, p in tr.model.named_parameters()}
        tr.scheduler.step()
        if step == 1:
            state.save(tr, STREAM, cfg, out, step + 1, 0.0)
    weights = dist_utils.full_state_dict(tr.model) if fsdp else tr.model.state_dict()
    return {"weights": {k: v.detach().clone() for k, v in weights.items()}, "grad_norms": norms, "grads": grads,
            "sharded": dist_utils.is_sharded(tr.model)}


def _rank_main(rank: int, model_dir, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=120))  # a collective one rank skips fails, not hangs
    try:
        torch.set_num_threads(1)
        # unequal shares: 4 rows (2 micro-batches) on rank 0, 7 rows (3) on rank 1
        rows = slice(0, RANK_SPLIT) if rank == 0 else slice(RANK_SPLIT, None)
        torch.save(train(model_dir, True, rows, Path(out_dir) / "run"), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_sharded_ranks_train_as_one_process(tiny_llama_dir, tmp_path):
    mp.spawn(_rank_main, args=(tiny_llama_dir, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    whole = train(tiny_llama_dir, False, slice(None), tmp_path / "single")
    assert ranks[0]["sharded"] and not whole["sharded"]
    # clipping bit at every step, so a shard-only norm would also have moved the weights differently
    assert min(whole["grad_norms"]) > 0.05
    for r in ranks:
        torch.testing.assert_close(torch.tensor(r["grad_norms"]), torch.tensor(whole["grad_norms"]), **TOL)
        for name, g in whole["grads"].items():
            torch.testing.assert_close(r["grads"][name], g, **TOL, msg=lambda m, name=name: f"{name}: {m}")
        assert r["weights"].keys() == whole["weights"].keys()
        for name, w in whole["weights"].items():
            torch.testing.assert_close(r["weights"][name], w, **WEIGHT_TOL, msg=lambda m, name=name: f"{name}: {m}")
    # the checkpoint after step 2, written by rank 0 from gathered weights, loads as it is
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "checkpoints" / "step-000002")
    single = AutoModelForCausalLM.from_pretrained(tmp_path / "single" / "checkpoints" / "step-000002")
    for (name, a), (_, b) in zip(saved.state_dict().items(), single.state_dict().items()):
        torch.testing.assert_close(a, b, **WEIGHT_TOL, msg=lambda m, name=name: f"{name}: {m}")


def autocast_update(model_dir, fsdp: bool, rows: slice) -> dict:
    """One update under model.autocast=bfloat16 with a KL reference: the whole gradients, the
    grad_norm, the dtypes of the stored weights and AdamW moments, the dtype a layer's weight has
    while it computes, and the dtype of the engine's decoding weights."""
    from torch.distributed.tensor import DTensor

    cfg = config(model_dir, fsdp, "model.autocast=bfloat16")
    torch.manual_seed(0)
    tr = state.build_trainer(cfg, None)
    computes_in = set()
    q_proj = tr.model.model.layers[0].self_attn.q_proj
    q_proj.register_forward_pre_hook(lambda module, args: computes_in.add(module.weight.dtype))
    batch = make_batch(tr.model.config.vocab_size).select(rows)
    batch.ref_logprobs = frozen_logprobs(tr.ref_model, batch, cfg)
    grad_norm = update(tr, batch, cfg, on_policy=False)["grad_norm"]

    def local(t):
        return t.to_local() if isinstance(t, DTensor) else t

    return {"grads": {n: p.grad.full_tensor() if fsdp else p.grad.clone() for n, p in tr.model.named_parameters()},
            "grad_norm": grad_norm, "weights": {local(p).dtype for p in tr.model.parameters()},
            "moments": {local(v).dtype for s in tr.optimizer.state.values() for k, v in s.items() if k != "step"},
            "computes_in": computes_in, "decodes_in": {p.dtype for p in tr.engine.model.parameters()}}


def _autocast_rank_main(rank: int, model_dir, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=120))
    try:
        torch.set_num_threads(1)
        rows = slice(0, RANK_SPLIT) if rank == 0 else slice(RANK_SPLIT, None)
        torch.save(autocast_update(model_dir, True, rows), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sharded_ranks_under_bf16_autocast_keep_float32_state(tiny_llama_dir, tmp_path):
    """model.fsdp with bf16 autocast: FSDP2's mixed precision gathers bf16 copies of the float32
    shards to compute with (the engine decodes a bf16 copy too), reduces gradients in float32 into
    float32 shards, and AdamW keeps float32 moments. Every weight computes in bf16 there (norms and
    embeddings too), so the gradients agree with one process under autocast to bf16 precision
    (measured: 1.3e-2 relative at most, cosine 0.9999), not to the few ulp of the float32 test."""
    mp.spawn(_autocast_rank_main, args=(tiny_llama_dir, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    whole = autocast_update(tiny_llama_dir, False, slice(None))
    assert whole["computes_in"] == whole["decodes_in"] == {torch.float32}  # autocast casts as it goes
    for r in ranks:
        assert r["computes_in"] == r["decodes_in"] == {torch.bfloat16}
        assert r["weights"] == r["moments"] == whole["weights"] == whole["moments"] == {torch.float32}
        assert r["grad_norm"] == pytest.approx(whole["grad_norm"], rel=2e-2)
        for name, g in whole["grads"].items():
            assert r["grads"][name].dtype == torch.float32
            assert (r["grads"][name] - g).norm() / g.norm() < 4e-2, name


def first_char_parity_on_rank0(completion: str, sample):
    """Rank 0: parity of the response's first character, so nearly every group has spread; rank 1:
    a flat 0, so it has nothing to train on and only joins the collectives."""
    return float(ord(completion[0]) % 2) if completion and os.environ.get("RANK", "0") == "0" else 0.0


def test_torchrun_with_fsdp_matches_the_replicated_run(tiny_llama_dir, tmp_path):
    """The whole loop under torchrun: rollouts decoded by the engine's unsharded copy (refreshed
    after each update), a sharded KL reference (grpo), a rank with nothing to train on (its
    groups are uniform) that still joins every collective, checkpoints, a resume, the final
    evaluation. Same seeds as the same run without FSDP (which test_invariance.py ties to one
    process), so the same rollouts, metrics and weights."""
    common = ("rl.skip_uniform_groups=true", "task.reward=tests.train.test_fsdp:first_char_parity_on_rank0")
    plain = torchrun(tmp_path / "plain", tiny_llama_dir, *common, "rl.steps=3", "--no-eval")
    assert plain.returncode == 0, plain.stderr[-3000:]
    first = torchrun(tmp_path / "fsdp", tiny_llama_dir, *common, "model.fsdp=true", "rl.steps=2", "--no-eval")
    assert first.returncode == 0, first.stderr[-3000:]
    again = torchrun(tmp_path / "fsdp", tiny_llama_dir, *common, "model.fsdp=true", "rl.steps=3", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]

    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("plain", "fsdp")}
    assert [r["step"] for r in rows["fsdp"]] == [1, 2, 3]
    assert all(r["grad_norm"] > 0 and r["kept_rollouts"] <= 8 for r in rows["fsdp"])  # rank 0's rows only
    assert rows["fsdp"][-1]["kl"] > 0  # the reference is not the policy any more
    for a, b in zip(rows["plain"], rows["fsdp"]):
        assert a["kept_rollouts"] == b["kept_rollouts"] and a["generated_tokens"] == b["generated_tokens"]
        for key in ("reward", "grad_norm", "loss", "kl", "entropy"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    last = Path("checkpoints") / "step-000003"
    want, got = (load_file(str(tmp_path / name / last / "model.safetensors")) for name in ("plain", "fsdp"))
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], **WEIGHT_TOL, msg=lambda m, name=name: f"{name}: {m}")
    AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / last)  # whole weights, loadable as they are
    assert json.loads((tmp_path / "fsdp" / "eval" / "eval.json").read_text())["n"] == 8


def test_fsdp_refuses_what_it_cannot_shard(tiny_llama_dir):
    with pytest.raises(ConfigError, match="model.fsdp with model.lora_r"):
        config(tiny_llama_dir, True, "model.lora_r=4")
    with pytest.raises(ConfigError, match="model.fsdp with critic.shared"):
        config(tiny_llama_dir, True, "rl.advantage=gae", "rl.skip_uniform_groups=false", "critic.shared=true")


def test_torchrun_ppo_with_a_sharded_critic(tiny_llama_dir, tmp_path):
    """PPO (gae) with its own critic, sharded too: the critic's batch is padded with blank rows to
    the same length on both ranks (rl.mask_truncated drops a different number of rows on each;
    here 3 in step 2), and its checkpoint folder is written from gathered weights."""
    common = ("rl.advantage=gae", "rl.skip_uniform_groups=false", "rl.mask_truncated=true",
              "task.reward=tests.train.test_fsdp:first_char_parity_on_rank0", "rl.steps=2")
    for name, extra in (("plain", ()), ("fsdp", ("model.fsdp=true",))):
        done = torchrun(tmp_path / name, tiny_llama_dir, *extra, *common, "--no-eval")
        assert done.returncode == 0, done.stderr[-3000:]
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("plain", "fsdp")}
    assert any(r["kept_rollouts"] for r in rows["fsdp"])
    for a, b in zip(rows["plain"], rows["fsdp"]):
        for key in ("grad_norm", "critic_grad_norm", "value_loss", "value_clip_frac"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key
    folder = Path("checkpoints") / "step-000002" / "critic"
    want, got = (load_file(str(tmp_path / name / folder / "model.safetensors")) for name in ("plain", "fsdp"))
    want.update({f"head.{k}": v for k, v in torch.load(tmp_path / "plain" / folder / HEAD).items()})
    got.update({f"head.{k}": v for k, v in torch.load(tmp_path / "fsdp" / folder / HEAD).items()})
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], **WEIGHT_TOL, msg=lambda m, name=name: f"{name}: {m}")
    AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp" / folder)
