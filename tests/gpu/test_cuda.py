"""What only a CUDA GPU can check: `make gpu-test` (RLVR_TEST_GPU=1 pytest -m gpu tests/gpu).

Skipped without a GPU, so also in CI and in the plain suite, which hides GPUs (tests/conftest.py).
The CPU suite checks the same code paths on the CPU; these check what differs on a GPU: the
precision rlvr picks there (bf16 autocast over float32 master weights), the fast decoder and the
engine against the Hugging Face forward on CUDA (float32, and under autocast, where HF's attention
runs through SDPA's fused kernels), decode steps captured as a CUDA graph (rollout.cuda_graph), a
whole RL run on the GPU, and the process group torchrun joins there (gloo for the loop's CPU
tensors, NCCL for CUDA ones).
"""

import json

import pytest
import torch

from rlvr.rollout import fast_decoder
from rlvr.rollout.hf import HFEngine, SamplingParams
from tests.rollout.test_fast_decoder import (ARCHS, PROMPTS, assert_same_completions, eos_in_some_rows, fed_tokens,
                                             greedy, make_model)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU and RLVR_TEST_GPU=1")]
BF16 = torch.bfloat16
CUDA = torch.device("cuda")


def bf16_gpu() -> bool:
    return torch.cuda.is_bf16_supported(including_emulation=False)


def test_the_gpu_defaults():
    """model.dtype=auto and model.autocast=auto on this GPU: float32 master weights, bf16 autocast
    where the GPU has bf16 (Ampere and newer), and the model placed on it."""
    from rlvr.models import default_device, load_policy, resolve_precision

    p = resolve_precision()
    assert p.weights == torch.float32 and p.autocast == (BF16 if bf16_gpu() else None)
    assert default_device().type == "cuda"
    model, _ = load_policy("embedded")
    assert {q.device.type for q in model.parameters()} == {"cuda"}


def decode(model, autocast=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(the fast decoder's logits after the prompt and after each fed token [B, 1 + steps, V], the
    HF forward's over the same columns), both on the GPU."""
    ids, mask, fed, full_mask, positions = (t.to(CUDA) for t in fed_tokens())
    P, steps = ids.shape[1], fed.shape[1]
    with torch.autocast("cuda", dtype=autocast, enabled=autocast is not None):
        ref = model(input_ids=torch.cat([ids, fed], 1), attention_mask=full_mask, position_ids=positions).logits
    decoder = fast_decoder.FastDecoder(model, mask, steps, autocast=autocast)
    got = [decoder.prefill(ids, positions[:, :P])]
    got += [decoder.step(fed[:, t], positions[:, P + t : P + t + 1]) for t in range(steps)]
    return torch.stack(got, 1), ref[:, P - 1 :]


def test_attention_gradients_stay_finite_once_rlvr_loads_a_model():
    """pytorch/pytorch#196678: on H100/H200 cuDNN's attention backward gave NaN query gradients
    with an explicit mask at a length of 64 mod 128 when every logsumexp is below -88.7 (torch
    2.11-2.13). load_policy switches cuDNN attention off on CUDA (models.avoid_cudnn_attention);
    here the issue's own shapes go through SDPA after it, and what cuDNN gives is printed."""
    import math

    from rlvr.models import load_policy

    def grad_q():
        torch.manual_seed(0)
        L, D = 704, 64
        q = torch.randn(1, 1, L, D, device=CUDA, dtype=BF16) * 0.1
        k = torch.randn(1, 1, L, D, device=CUDA, dtype=BF16) * 0.1
        v = torch.randn(1, 1, L, D, device=CUDA, dtype=BF16)
        q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(D)  # every logit about -120
        q.requires_grad_()
        mask = torch.ones(L, L, dtype=torch.bool, device=CUDA).tril()[None, None]
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.backward(torch.randn_like(out))
        return q.grad

    was = torch.backends.cuda.cudnn_sdp_enabled()
    try:
        torch.backends.cuda.enable_cudnn_sdp(True)
        print(f"cuDNN attention on: {int((~torch.isfinite(grad_q())).sum())} non-finite query gradients")
        load_policy("embedded")
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.isfinite(grad_q()).all()
    finally:
        torch.backends.cuda.enable_cudnn_sdp(was)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_fast_decoder_matches_hf_forward_on_cuda(arch):
    model, _ = make_model(arch)
    got, ref = decode(model.to(CUDA))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)  # the CPU test's tolerance: float32, no TF32


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_fast_decoder_under_autocast_matches_hf_on_cuda(arch):
    if not bf16_gpu():
        pytest.skip("this GPU has no bf16")
    model, _ = make_model(arch)
    got, ref = decode(model.to(CUDA), BF16)
    assert got.dtype == ref.dtype == BF16
    # bf16 logits of size ~1 step by 2^-8..2^-7; HF's attention here is a fused SDPA kernel and
    # ours two matmuls, so allow a few steps (the CPU test allows two)
    torch.testing.assert_close(got.float(), ref.float(), atol=8e-3, rtol=2e-2)


@pytest.mark.parametrize("autocast", [None, BF16])
@torch.no_grad()
def test_engine_logprobs_are_the_trainers_on_cuda(autocast):
    """Each sampled token's logprob, as the engine returns it for the importance ratio, is what
    the trainer's forward (train/forward.py: token_stats) gives that token on the GPU."""
    from rlvr.train.forward import token_stats
    from rlvr.types import RolloutBatch

    if autocast is not None and not bf16_gpu():
        pytest.skip("this GPU has no bf16")
    model, tokenizer = make_model("qwen3")
    model.to(CUDA)
    engine = HFEngine(model, tokenizer, eos_token_ids=[model.config.eos_token_id], autocast=autocast)
    out = engine.generate(PROMPTS, 3, SamplingParams(max_new_tokens=8, temperature=0.7, seed=1))
    for prompt, group in zip(PROMPTS, out):
        for c in group:
            seq = torch.tensor([prompt + c.token_ids])  # [1, T]
            on = torch.ones_like(seq, dtype=torch.bool)
            batch = RolloutBatch(seq, on, on, torch.zeros(seq.shape), torch.zeros(1), torch.zeros(1), torch.zeros(1))
            lp, _ = token_stats(model, batch, 0.7, autocast=autocast)  # [1, T] on the GPU
            expected = lp[0, len(prompt) :].float().cpu()
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4 if autocast is None else 1e-2, rtol=0)
    assert len({tuple(c.token_ids) for group in out for c in group}) > len(PROMPTS)  # rows sample independently


@pytest.mark.parametrize("autocast", [None, BF16])
@torch.no_grad()
def test_a_replayed_cuda_graph_step_is_the_eager_static_step(autocast):
    """fast_decoder.CudaGraphStep: captured at the first step (after a warm-up that must not
    advance the cache column), then replayed with new inputs; each replay gives the logits the
    static step gives eagerly, and advances the column on the device."""
    if autocast is not None and not bf16_gpu():
        pytest.skip("this GPU has no bf16")
    model, _ = make_model("qwen3")
    model.to(CUDA)
    ids, mask, fed, full_mask, positions = (t.to(CUDA) for t in fed_tokens(steps=6))
    P, steps = ids.shape[1], fed.shape[1]
    runs = []
    with torch.autocast("cuda", dtype=autocast or BF16, enabled=autocast is not None):  # one region, as the engine's
        for graphed in (False, True):
            decoder = fast_decoder.FastDecoder(model, mask, steps, autocast=autocast, static=True)
            decoder.prefill(ids, positions[:, :P])
            graph, out = None, []
            for t in range(steps):
                tok, pos = fed[:, t], positions[:, P + t : P + t + 1]
                if graphed:
                    graph = graph or fast_decoder.CudaGraphStep(decoder, tok, pos)
                    out.append(graph(tok, pos).clone())  # the graph's output tensor is rewritten by the next replay
                else:
                    out.append(decoder.step(tok, pos))
            assert int(decoder.column) == P + steps
            runs.append(torch.stack(out, 1).float())  # [B, steps, V]
    torch.testing.assert_close(runs[1], runs[0], atol=1e-5 if autocast is None else 2e-2, rtol=0)


def test_the_cuda_graph_engine_decodes_as_the_default_one(monkeypatch):
    """rollout.cuda_graph through HFEngine: one graph per decode, captured at its first step;
    greedy tokens, finish reasons and logprobs as the default engine's, EOS ending rows early."""
    model, tokenizer = make_model("qwen3")
    model.to(CUDA)
    eos = [eos_in_some_rows(greedy(model, tokenizer, [-1], 10, True, monkeypatch))]
    built = []
    init = fast_decoder.CudaGraphStep.__init__
    monkeypatch.setattr(fast_decoder.CudaGraphStep, "__init__", lambda self, *a: built.append(1) or init(self, *a))
    params = SamplingParams(max_new_tokens=10, temperature=0.0)
    plain = HFEngine(model, tokenizer, eos_token_ids=eos).generate(PROMPTS, 2, params)
    graphed = HFEngine(model, tokenizer, eos_token_ids=eos, cuda_graph=True).generate(PROMPTS, 2, params)
    assert built == [1]
    assert {c.finish_reason for group in plain for c in group} == {"stop", "length"}
    assert_same_completions(graphed, plain)


@torch.no_grad()
def test_the_cuda_graph_engine_under_autocast_replays_its_eager_steps(monkeypatch):
    """The path a GPU run takes (model.autocast=auto: bf16, one autocast region per generate call,
    no_grad, the bf16 weight copies read from autocast's cache inside the graph): the graphed
    engine gives what the same fixed-shape steps give run eagerly (CudaGraphStep swapped for a
    pass-through), so the batch and every kernel's shapes are the same on both sides."""
    if not bf16_gpu():
        pytest.skip("this GPU has no bf16")

    class Eager:
        def __init__(self, decoder, tokens, positions):
            self.decoder = decoder

        def __call__(self, tokens, positions):
            return self.decoder.step(tokens, positions)

    model, tokenizer = make_model("qwen3")
    model.to(CUDA)
    params = SamplingParams(max_new_tokens=10, temperature=0.0)
    eos = [model.config.eos_token_id]
    graphed = HFEngine(model, tokenizer, eos_token_ids=eos, autocast=BF16, cuda_graph=True).generate(PROMPTS, 2, params)
    monkeypatch.setattr(fast_decoder, "CudaGraphStep", Eager)
    eager = HFEngine(model, tokenizer, eos_token_ids=eos, autocast=BF16, cuda_graph=True).generate(PROMPTS, 2, params)
    assert_same_completions(graphed, eager, atol=2e-3)


def test_train_rl_on_the_gpu_with_its_default_precision(tiny_llama_dir, tmp_path):
    """Two RL steps as a user runs them on a GPU (model.autocast=auto): rollouts, the KL reference,
    the update and the checkpoint, on the device; the checkpoint holds float32 master weights."""
    from safetensors.torch import load_file

    from rlvr.train import checkpoint
    from rlvr.train.rl import train_rl
    from tests.train.test_rl_plumbing import CALLS
    from tests.train.test_rl_plumbing import config as rl_config

    CALLS.update(n=0, stop_after=None)
    torch.cuda.reset_peak_memory_stats()
    cfg = rl_config(tiny_llama_dir, tmp_path / "run", rl__steps=2, rl__kl_coef=0.05, model__autocast="auto")
    assert train_rl(cfg, log_fn=lambda *_: None)["steps"] == 2
    assert torch.cuda.max_memory_allocated() > 0  # the run used the GPU
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["grad_norm"] > 0 for r in rows)
    # the engine's and the trainer's logprobs: the same forward up to rounding (CPU, float32: < 1e-4)
    assert max(r["logprob_mismatch"] for r in rows) < (2e-3 if bf16_gpu() else 1e-4), rows
    saved = load_file(str(checkpoint.latest(tmp_path / "run") / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}


def test_the_torchrun_group_reduces_cpu_and_cuda_tensors(tiny_llama_dir, tmp_path):
    """train/distributed.py: init_from_env joins a `cpu:gloo,cuda:nccl` group on GPUs, since the
    loop's counts and normalisers are CPU tensors and NCCL moves only CUDA ones. With two GPUs:
    a real two-process torchrun run; with one (NCCL takes one GPU per rank): that group, one rank."""
    import torch.distributed as dist

    if torch.cuda.device_count() >= 2:
        from tests.train.test_torchrun import torchrun

        done = torchrun(tmp_path / "run", tiny_llama_dir, "rl.steps=2", "--no-eval")
        assert done.returncode == 0, done.stderr[-3000:]
        rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [1, 2] and all(r["kept_rollouts"] == 16 for r in rows)
        return
    torch.cuda.set_device(0)
    dist.init_process_group("cpu:gloo,cuda:nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        cpu, gpu = torch.arange(3.0), torch.arange(3.0, device=CUDA)
        dist.all_reduce(cpu)
        dist.all_reduce(gpu)
        assert cpu.tolist() == gpu.tolist() == [0.0, 1.0, 2.0]
    finally:
        dist.destroy_process_group()
