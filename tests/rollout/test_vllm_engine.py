"""The vLLM engine against a real vLLM, on tiny random Qwen3 and Llama models this file builds.

Skipped where vllm cannot be imported (the main install and CI). In the separate environment
of the README ("vLLM rollouts"), on a CPU, about 40 s:
    OMP_NUM_THREADS=1 ../vllm-env/bin/python -m pytest -m vllm tests/rollout/test_vllm_engine.py
The first three tests need no vLLM and run everywhere.
"""

import sys

import pytest
import torch

from rlvr.config import ConfigError, load_config
from rlvr.rollout.hf import SamplingParams, _nucleus
from rlvr.rollout.vllm import buckets

# fp32 on both sides; vLLM's CPU kernels (attention, fused qkv / gate-up matmuls, its own RMSNorm)
# round differently from the HF forward. Measured gap on this model: ~1e-6; 1e-4 still catches a
# wrong temperature, a missing top-p renormalisation or stale weights (all change logprobs by > 1e-2).
LOGPROB_ATOL = 1e-4
# vLLM in bf16 against the policy's forward under bf16 autocast: each side rounds its bf16 logits
# (and attention) in its own kernels. Measured up to 4e-3 at init and 3.8e-2 after the test's
# update, whose logits reach ~5 (a bf16 step of 0.03 there); stale weights are 0.6 to 3.6 off.
BF16_LOGPROB_ATOL = 6e-2
PROMPTS = ["12+34=", "7*8=", "100-1=", "(2+3)*4="]
# runs through the trainer: no torch.compile (slow to start on a CPU) and a small KV cache
VLLM_ARGS_FOR_THIS_CPU = ["rollout.vllm_args.enforce_eager=true", f"rollout.vllm_args.kv_cache_memory_bytes={32 << 20}"]


def test_buckets_group_tensors_up_to_the_limit():
    named = [(f"w{i}", torch.zeros(n)) for i, n in enumerate([10, 10, 30, 5, 5, 1])]  # fp32: 4 bytes each
    groups = list(buckets(named, limit=80))
    assert [[name for name, _ in g] for g in groups] == [["w0", "w1"], ["w2"], ["w3", "w4", "w5"]]  # 80, 120 alone, 44


def test_engine_vllm_without_vllm_names_the_field_and_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm now fails, whether it is installed or not
    with pytest.raises(ConfigError, match=r"rollout\.engine=vllm needs vLLM: pip install 'rlvr\[vllm\]'"):
        load_config(None, ["rollout.engine=vllm"])
    with pytest.raises(ConfigError, match="rollout.engine='vlm' is unknown; use hf or vllm"):
        load_config(None, ["rollout.engine=vlm"])


def test_make_engine_hands_the_runs_autocast_to_either_engine(monkeypatch):
    """model.autocast reaches the rollouts: the HF engine decodes under it, vLLM computes in it."""
    from rlvr.config import RolloutConfig
    from rlvr.models import build_embedded
    from rlvr.rollout import make_engine
    from rlvr.rollout import vllm as vllm_rollout

    model, tok = build_embedded()
    assert make_engine(RolloutConfig(), model, tok, [1], autocast=torch.bfloat16).autocast == torch.bfloat16
    assert make_engine(RolloutConfig(), model, tok, [1]).autocast is None
    given = {}
    monkeypatch.setattr(vllm_rollout, "VLLMEngine", lambda *args, **kwargs: given.update(kwargs))
    make_engine(RolloutConfig(engine="vllm", vllm_args={"enforce_eager": True}), model, tok, [1], autocast=torch.bfloat16)
    assert given["dtype"] == torch.bfloat16 and given["enforce_eager"] is True  # rollout.vllm_args reach vllm.LLM


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def policy(request):
    """The embedded Qwen3 (tied input/output embeddings) or a Llama with GQA and its own output
    layer; both 2 layers with head_dim 32 (a size vLLM's CPU attention supports)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlvr.models import build_char_tokenizer, build_embedded

    if request.param == "qwen3":
        model, tok = build_embedded(seed=0)
        return model.eval(), tok
    tok = build_char_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tok


@pytest.fixture(scope="module")
def engine(policy):
    pytest.importorskip("vllm")
    from rlvr.rollout.vllm import VLLMEngine

    model, tok = policy
    # stop on EOS and on a few frequent characters, so that a random model stops early in some
    # rollouts and runs to max_new_tokens in others (EOS alone is 1 token in ~100)
    stop = [tok.eos_token_id, *tok.convert_tokens_to_ids(list("0123456789"))]
    rng = torch.random.get_rng_state()
    eng = VLLMEngine(model, tok, stop, bucket_bytes=512 << 10, enforce_eager=True, kv_cache_memory_bytes=32 << 20,
                     max_num_seqs=32)
    assert torch.equal(torch.random.get_rng_state(), rng)  # vLLM's seeding did not touch the trainer's RNG
    return eng


def policy_logprobs(model, prompt: list[int], tokens: list[int], params: SamplingParams) -> torch.Tensor:
    """[L] logprob of each completion token under the policy's own forward, with the sampling
    transform (temperature, top-p renormalisation) the engines apply."""
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float()  # [L, V]: position t predicts token t+1
    logprobs = torch.log_softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1:
        logprobs = _nucleus(logprobs, params.top_p)
    return logprobs.gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


def prompt_ids(tok) -> list[list[int]]:
    return [tok(p)["input_ids"] for p in PROMPTS]


@pytest.mark.vllm
def test_groups_shapes_and_finish_reasons(engine, policy):
    _, tok = policy
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
    groups = engine.generate(prompt_ids(tok), 4, params)
    assert len(groups) == len(PROMPTS) and all(len(g) == 4 for g in groups)
    stop = set(engine.eos)
    for group in groups:
        assert len({tuple(c.token_ids) for c in group}) > 1  # the G samples of a prompt differ
        for c in group:
            assert len(c.logprobs) == len(c.token_ids) and all(lp <= 0 for lp in c.logprobs)
            assert c.text == tok.decode(c.token_ids, skip_special_tokens=True)
            assert not stop & set(c.token_ids[:-1])  # nothing sampled after a stop token
            if c.finish_reason == "stop":
                assert c.token_ids[-1] in stop and len(c.token_ids) <= 12  # the stop token is kept, as HF's engine does
            else:
                assert c.finish_reason == "length" and len(c.token_ids) == 12
    reasons = {c.finish_reason for g in groups for c in g}
    assert reasons == {"stop", "length"}
    again = engine.generate(prompt_ids(tok), 4, params)  # a seed fixes the samples
    assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in groups]


@pytest.mark.vllm
def test_seeds_give_each_prompt_its_own_stream_and_leave_the_global_rng(engine, policy):
    """A seeded call (an evaluation chunk) draws its own streams: a nearby seed, as the next chunk
    gets, replays none of them for another prompt; seeded and greedy calls leave torch's global
    RNG where it was, while an unseeded call samples from it (two such calls differ)."""
    _, tok = policy
    prompts = [tok("1+1=")["input_ids"]] * 2  # one prompt twice: only the seeds tell its rows apart
    rng = torch.random.get_rng_state()
    first = engine.generate(prompts, 4, SamplingParams(max_new_tokens=16, temperature=1.0, seed=10))
    nearby = engine.generate(prompts, 4, SamplingParams(max_new_tokens=16, temperature=1.0, seed=12))
    engine.generate(prompts, 1, SamplingParams(max_new_tokens=4, temperature=0.0))
    assert torch.equal(torch.random.get_rng_state(), rng)
    rows = [tuple(c.token_ids) for g in first + nearby for c in g]
    assert len(set(rows)) == len(rows)  # 16 samples of one prompt, no stream used twice
    unseeded = [engine.generate(prompts, 2, SamplingParams(max_new_tokens=16, temperature=1.0)) for _ in range(2)]
    assert [c.token_ids for c in unseeded[0][0]] != [c.token_ids for c in unseeded[1][0]]
    assert not torch.equal(torch.random.get_rng_state(), rng)


@pytest.mark.vllm
@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8)])
def test_logprobs_are_the_policys_sampling_logprobs(engine, policy, temperature, top_p):
    model, tok = policy
    params = SamplingParams(max_new_tokens=10, temperature=temperature, top_p=top_p, seed=0)
    prompts = prompt_ids(tok)
    groups = engine.generate(prompts, 3, params)
    for prompt, group in zip(prompts, groups):
        for c in group:
            expected = policy_logprobs(model, prompt, c.token_ids, params)
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=LOGPROB_ATOL, rtol=0)


@pytest.mark.vllm
def test_updated_weights_reach_vllm_in_buckets(engine, policy):
    model, tok = policy
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=1)
    prompts = prompt_ids(tok)
    engine.generate(prompts, 2, params)  # whatever was pending is pushed here
    pushes = engine.weight_pushes
    engine.generate(prompts, 2, params)
    assert engine.weight_pushes == pushes  # nothing changed: nothing sent

    old = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)  # a real optimizer step: in-place updates
    ids = torch.tensor(prompts[0])[None]
    model(ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)

    groups = engine.generate(prompts, 2, params)
    sent = engine.weight_pushes - pushes
    state = model.state_dict()
    assert sent == len(list(buckets(state.items(), engine.bucket_bytes)))  # one call per bucket
    assert 1 < sent <= len(state) // 3  # a few batched calls (512 KiB each here), not one per tensor
    for prompt, group in zip(prompts, groups):
        for c in group:
            new = policy_logprobs(model, prompt, c.token_ids, params)
            torch.testing.assert_close(torch.tensor(c.logprobs), new, atol=LOGPROB_ATOL, rtol=0)
    # and the old weights would have given clearly different logprobs for the same tokens
    model.load_state_dict(old)
    c, prompt = groups[0][0], prompts[0]
    stale = policy_logprobs(model, prompt, c.token_ids, params)
    assert (torch.tensor(c.logprobs) - stale).abs().max() > 100 * LOGPROB_ATOL
    engine.generate(prompts[:1], 2, params)  # load_state_dict bumped the versions: the old weights go back
    assert engine.weight_pushes > pushes + sent


@pytest.mark.vllm
def test_bf16_engine_over_float32_master_weights(policy):
    """model.autocast=bfloat16 with vLLM (make_engine passes dtype=bfloat16): vLLM computes in
    bf16 over the trainer's float32 weights, so its logprobs are the policy's under bf16
    autocast, to bf16 rounding; a push after an update sends bf16 copies, and vLLM follows it."""
    pytest.importorskip("vllm")
    import copy

    from rlvr.rollout import vllm as vllm_rollout

    model, tok = policy
    model = copy.deepcopy(model)  # this test updates it; the module's engine keeps the original
    stop = [tok.eos_token_id, *tok.convert_tokens_to_ids(list("0123456789"))]
    engine = vllm_rollout.VLLMEngine(model, tok, stop, bucket_bytes=512 << 10, enforce_eager=True,
                                     kv_cache_memory_bytes=32 << 20, max_num_seqs=32, dtype=torch.bfloat16)
    sent = []  # dtypes of the tensors each push hands vLLM
    rpc = engine.llm.collective_rpc

    def spy(fn, args=(), **kwargs):
        if fn is vllm_rollout._load_bucket:
            sent.extend(t.dtype for _, t in args[0])
        return rpc(fn, args=args, **kwargs)

    engine.llm.collective_rpc = spy
    params = SamplingParams(max_new_tokens=10, temperature=1.0, seed=0)
    prompts = prompt_ids(tok)

    def check(groups, atol):
        for prompt, group in zip(prompts, groups):
            for c in group:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    expected = policy_logprobs(model, prompt, c.token_ids, params)
                torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=atol, rtol=0)

    check(engine.generate(prompts, 3, params), BF16_LOGPROB_ATOL)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    ids = torch.tensor(prompts[0])[None]
    model(ids, labels=ids).loss.backward()
    opt.step()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    check(engine.generate(prompts, 3, params), BF16_LOGPROB_ATOL)
    assert sent and set(sent) == {torch.bfloat16}


def parity_reward(completion, sample):
    """Rewards by length parity: groups have spread, so every step moves the weights."""
    return float(len(completion) % 2)


@pytest.mark.vllm
def test_rl_steps_sample_with_the_updated_policy(tmp_path):
    """rollout.engine=vllm through the trainer: step 2's rollouts come after an update, and
    the engine's logprobs still equal the trainer's (logprob_mismatch, mean |difference|)."""
    pytest.importorskip("vllm")
    import json

    from rlvr.train.rl import train_rl

    cfg = load_config(None, ["rollout.engine=vllm", f"output_dir={tmp_path}", "task.rl_problems=200",
                             *VLLM_ARGS_FOR_THIS_CPU,
                             "task.eval_per_bucket=4", "task.reward=tests.rollout.test_vllm_engine:parity_reward",
                             "rl.steps=2", "rl.prompts_per_step=2", "rl.group_size=4", "rl.max_new_tokens=12",
                             "rl.reward_truncated=true", "rl.skip_uniform_groups=false", "rl.lr=1e-2",
                             "rl.skip_zero_advantage_rows=false"])  # the mismatch over every row
    train_rl(cfg, log_fn=lambda *_: None)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["generated_tokens"] > 0 for r in rows)
    mismatch = [r["logprob_mismatch"] for r in rows]
    assert max(mismatch) < LOGPROB_ATOL, mismatch  # with the push disabled, step 2 measured 0.17


@pytest.mark.vllm
@pytest.mark.parametrize("fsdp", [False, True])
def test_torchrun_ranks_sample_with_their_own_vllm(tmp_path, fsdp):
    """Two torchrun ranks, each with its own vLLM joined to the run's gloo group (external
    launcher): every rank samples its share, pushes its updated weights into its own engine (step
    2's logprobs still equal its trainer's), and the run ends cleanly, vLLM's shutdown and the
    process group's teardown in the right order. With FSDP each engine is handed the sharded
    policy and gathers its weights a tensor at a time (no whole copy of the policy is kept)."""
    pytest.importorskip("vllm")
    import json
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "rlvr",
           "train", "grpo", "sft.before_rl=false", f"output_dir={tmp_path}", "rollout.engine=vllm", *VLLM_ARGS_FOR_THIS_CPU,
           "task.rl_problems=200", "task.eval_per_bucket=4", "task.reward=tests.rollout.test_vllm_engine:parity_reward",
           "rl.steps=2", "rl.prompts_per_step=4", "rl.group_size=4", "rl.max_new_tokens=12", "rl.reward_truncated=true",
           "rl.skip_uniform_groups=false", "rl.lr=1e-2", "rl.skip_zero_advantage_rows=false", "rl.save_every=2", f"model.fsdp={str(fsdp).lower()}", "--no-eval"]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Invalid process group" not in done.stderr  # vLLM shut down before the group was destroyed
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["kept_rollouts"] == 16 for r in rows)  # 2 prompts x 4 rollouts on each of the 2 ranks
    mismatch = [r["logprob_mismatch"] for r in rows]
    assert max(mismatch) < LOGPROB_ATOL, mismatch
