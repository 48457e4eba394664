"""The fast Llama-family decoder against the Hugging Face forward it replaces.

Tiny random models of each supported family (2 layers, 4 query heads over 2 KV heads so GQA is
exercised), plus the embedded Qwen3. Norm weights and biases are perturbed away from their
init (ones / zeros) so a forgotten q_norm, k_norm or Qwen2 q/k/v bias would show.
"""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

from rlvr.models import build_embedded, under_autocast
from rlvr.rollout import fast_decoder
from rlvr.rollout.hf import HFEngine, SamplingParams

ARCHS = ["qwen3", "llama", "qwen2", "embedded"]
PROMPTS = [[3, 4, 5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17], [20], [21, 22, 23, 24], [30, 31]]


class IdTokenizer:
    """Just what HFEngine needs from a tokenizer, for the models without a real one."""

    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def make_model(arch: str):
    """(model, tokenizer) in eval mode, float32, deterministic."""
    if arch == "embedded":
        model, tokenizer = build_embedded(seed=0)
        return model.eval(), tokenizer
    shape = dict(vocab_size=50, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, bos_token_id=None, eos_token_id=1, pad_token_id=0)
    linear_rope = {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}  # scaled, and a small base
    config, cls = {"qwen3": (Qwen3Config(head_dim=16, **shape), Qwen3ForCausalLM),
                   "llama": (LlamaConfig(**shape), LlamaForCausalLM),
                   "llama_scaled_rope": (LlamaConfig(rope_parameters=linear_rope, **shape), LlamaForCausalLM),
                   "llama_biased": (LlamaConfig(attention_bias=True, mlp_bias=True, **shape), LlamaForCausalLM),
                   "qwen2": (Qwen2Config(**shape), Qwen2ForCausalLM)}[arch]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = cls(config)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias") or "norm" in name:
                    p.add_(0.3 * torch.randn_like(p))
    return model.eval(), IdTokenizer()


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> input_ids, mask [B, P], prompts aligned to the right."""
    P = max(map(len, prompts))
    ids = torch.zeros((len(prompts), P), dtype=torch.long)
    mask = torch.zeros((len(prompts), P), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p) :], mask[i, P - len(p) :] = torch.tensor(p), 1
    return ids, mask


def test_supports_the_llama_family_only():
    assert all(fast_decoder.supports(make_model(a)[0]) for a in ARCHS)
    sliding = Qwen2Config(vocab_size=50, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=8,
                          max_window_layers=1)
    assert not fast_decoder.supports(Qwen2ForCausalLM(sliding))
    small = dict(vocab_size=50, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4)
    assert not fast_decoder.supports(LlamaForCausalLM(LlamaConfig(hidden_act="gelu", **small)))
    # dynamic NTK recomputes frequencies from each call's positions: a per-decode table cannot follow
    dynamic = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    assert not fast_decoder.supports(LlamaForCausalLM(LlamaConfig(rope_parameters=dynamic, **small)))


@pytest.mark.parametrize("arch", [*ARCHS, "llama_biased"])
@torch.no_grad()
def test_fused_projections_match_the_modules(arch):
    # The decoder runs q/k/v as one matmul over concatenated weights, Qwen3's q_norm and k_norm as
    # one norm over all heads, and the MLP with its residual add inside down_proj's matmul; each
    # must give what the separate modules give.
    model, _ = make_model(arch)
    c = model.config
    decoder = fast_decoder.FastDecoder(model, torch.ones((1, 1), dtype=torch.long), 1)
    x = torch.randn(3, 5, c.hidden_size, generator=torch.Generator().manual_seed(0))  # [b, s, H]
    h, kvh, d = decoder.heads, decoder.kv_heads, decoder.head_dim
    for layer, fused in zip(model.model.layers, decoder.fused):
        attn = layer.self_attn
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)  # [b, s, h d], [b, s, kvh d] x2
        qkv = torch.nn.functional.linear(x, fused.qkv, fused.qkv_bias)  # [b, s, (h + 2 kvh) d]
        torch.testing.assert_close(qkv, torch.cat([q, k, v], dim=-1), atol=1e-5, rtol=0)
        if fused.qk_norm is not None:
            qk = fast_decoder._rms_norm(qkv.view(3, 5, -1, d)[:, :, : h + kvh], fused.qk_norm, decoder.eps)
            expected = torch.cat([attn.q_norm(q.view(3, 5, h, d)), attn.k_norm(k.view(3, 5, kvh, d))], dim=2)
            torch.testing.assert_close(qk, expected, atol=1e-5, rtol=0)  # [b, s, h + kvh, d]
        flat = x.view(15, -1)  # [b s, H]; the residual add rides on down_proj's matmul
        got = fast_decoder._linear_add(flat, decoder._gated(layer.mlp, flat), layer.mlp.down_proj)
        torch.testing.assert_close(got, flat + layer.mlp(flat), atol=1e-5, rtol=0)


def fed_tokens(steps: int = 4):
    """3 left-padded prompts and `steps` tokens to feed after them -> ids, mask [B, P], fed
    [B, steps], full_mask and positions [B, P+steps] for one cache-free reference forward."""
    ids, mask = left_pad(PROMPTS[:3])  # [3, P]
    fed = torch.randint(2, 50, (ids.shape[0], steps), generator=torch.Generator().manual_seed(0))  # [B, steps]
    full_mask = torch.cat([mask, torch.ones_like(fed)], dim=1)  # [B, P+steps]
    positions = (full_mask.cumsum(1) - 1).clamp(min=0)  # [B, P+steps]
    return ids, mask, fed, full_mask, positions


@pytest.mark.parametrize("arch", [*ARCHS, "llama_scaled_rope", "llama_biased"])
@torch.no_grad()
def test_logits_match_hf_forward(arch):
    # Reference: one cache-free HF forward over prompt + the tokens fed in later; the fast
    # decoder's prefill must give its logits at column P-1 and decode step t those at P+t.
    model, _ = make_model(arch)
    ids, mask, fed, full_mask, positions = fed_tokens()
    B, P, steps = ids.shape[0], ids.shape[1], fed.shape[1]
    ref = model(input_ids=torch.cat([ids, fed], 1), attention_mask=full_mask, position_ids=positions).logits

    decoder = fast_decoder.FastDecoder(model, mask, steps)
    torch.testing.assert_close(decoder.prefill(ids, positions[:, :P]), ref[:, P - 1], atol=1e-4, rtol=0)
    rows = torch.arange(B)
    for t in range(steps):
        if t == 2:  # drop the middle row, as the engine drops finished rows
            decoder.select(torch.tensor([0, 2]))
            rows = rows[[0, 2]]
        got = decoder.step(fed[rows, t], positions[rows, P + t : P + t + 1])  # [b, V]
        torch.testing.assert_close(got, ref[rows, P + t], atol=1e-4, rtol=0)


@torch.no_grad()
def test_reads_live_weights():
    # The trainer updates the policy in place between rollouts; the next decode must see it.
    model, _ = make_model("qwen3")
    ids, mask = left_pad(PROMPTS[:2])  # [2, P]
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # [2, P]
    before = fast_decoder.FastDecoder(model, mask, 1).prefill(ids, positions)  # [2, V]
    for p in model.parameters():
        p.mul_(1.1)  # an "optimizer step"
    after = fast_decoder.FastDecoder(model, mask, 1).prefill(ids, positions)  # [2, V]
    ref = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]  # [2, V]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref, atol=1e-4, rtol=0)


def greedy(model, tokenizer, eos: list[int], new_tokens: int, fast: bool, monkeypatch):
    if not fast:
        monkeypatch.setattr(fast_decoder, "supports", lambda model: False)
    engine = HFEngine(model, tokenizer, eos_token_ids=eos)
    out = engine.generate(PROMPTS, 2, SamplingParams(max_new_tokens=new_tokens, temperature=0.0))
    monkeypatch.undo()
    assert all(a.token_ids == b.token_ids for a, b in out)  # greedy copies of one prompt agree
    return [group[0] for group in out]


def eos_in_some_rows(free) -> int:
    """A token that greedy completions `free` (decoded with no EOS) hold in most rows but not in
    all: declared EOS, it ends some rows early and leaves others to run to the length limit."""
    counts = torch.bincount(torch.tensor([t for c in free for t in set(c.token_ids)]))
    eos = int(torch.where(counts < len(free), counts, 0).argmax())
    assert 0 < counts[eos] < len(free)
    return eos


def assert_same_completions(out, expected, atol: float = 1e-4) -> None:
    """The same tokens and finish reasons, and logprobs within `atol`, group by group."""
    for group, group_expected in zip(out, expected, strict=True):
        for a, b in zip(group, group_expected, strict=True):
            assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
            torch.testing.assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=atol, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_fallback_and_model_generate(arch, monkeypatch):
    model, tokenizer = make_model(arch)
    eos = [model.config.eos_token_id]
    fast = greedy(model, tokenizer, eos, 12, True, monkeypatch)
    slow = greedy(model, tokenizer, eos, 12, False, monkeypatch)
    for prompt, a, b in zip(PROMPTS, fast, slow):
        with torch.no_grad():
            ref = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                 do_sample=False, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
        assert a.token_ids == b.token_ids == ref[0, len(prompt) :].tolist()
        assert a.finish_reason == b.finish_reason and a.text == b.text


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("arch", ["qwen3", "embedded"])
def test_finish_reason_and_eos_kept(arch, fast, monkeypatch):
    # Greedy decoding is a prefix-stable function of the prompt, so declaring a token EOS must cut
    # every row right after its first occurrence ("stop") and leave the others whole ("length").
    model, tokenizer = make_model(arch)
    free = greedy(model, tokenizer, [-1], 10, fast, monkeypatch)
    eos = eos_in_some_rows(free)
    cut = greedy(model, tokenizer, [eos], 10, fast, monkeypatch)
    for whole, c in zip(free, cut):
        if eos in whole.token_ids:
            assert c.token_ids == whole.token_ids[: whole.token_ids.index(eos) + 1] and c.finish_reason == "stop"
        else:
            assert c.token_ids == whole.token_ids and c.finish_reason == "length"
        assert len(c.logprobs) == len(c.token_ids)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_sampled_logprobs_match_hf_forward(arch):
    model, tokenizer = make_model(arch)
    engine = HFEngine(model, tokenizer, eos_token_ids=[model.config.eos_token_id])
    out = engine.generate(PROMPTS, 3, SamplingParams(max_new_tokens=8, temperature=0.7, seed=1))
    for prompt, group in zip(PROMPTS, out):
        for c in group:
            seq = torch.tensor([prompt + c.token_ids])  # [1, T]
            logits = model(input_ids=seq).logits[0, len(prompt) - 1 : -1]  # [L, V] predicts each response token
            expected = torch.log_softmax(logits / 0.7, dim=-1).gather(1, seq[0, len(prompt) :, None])[:, 0]  # [L]
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("fast", [True, False])
@torch.no_grad()
def test_each_distinct_prompt_is_prefilled_once(fast, monkeypatch):
    # A group's samples share their prompt: the engine prefills each distinct prompt once (here 6,
    # for 7 prompts, one listed twice, x 3 samples = 21 rows) and repeats its cache. Each row must
    # still decode from its own prompt, as the HF forward over prompt + response says.
    from rlvr.rollout import hf

    model, tokenizer = make_model("qwen3")
    if not fast:
        monkeypatch.setattr(fast_decoder, "supports", lambda model: False)
    cls = fast_decoder.FastDecoder if fast else hf._HFDecoder
    prefill, rows = cls.prefill, []
    monkeypatch.setattr(cls, "prefill", lambda self, ids, pos: rows.append(len(ids)) or prefill(self, ids, pos))
    prompts = [*PROMPTS, PROMPTS[2]]
    engine = HFEngine(model, tokenizer, eos_token_ids=[model.config.eos_token_id])
    out = engine.generate(prompts, 3, SamplingParams(max_new_tokens=6, temperature=1.0, seed=3))
    assert rows == [len(PROMPTS)]
    for prompt, group in zip(prompts, out):
        for c in group:
            seq = torch.tensor([prompt + c.token_ids])  # [1, T]
            logits = model(input_ids=seq).logits[0, len(prompt) - 1 : -1]  # [L, V]
            expected = torch.log_softmax(logits, dim=-1).gather(1, seq[0, len(prompt) :, None])[:, 0]  # [L]
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)
    assert len({tuple(c.token_ids) for group in out for c in group}) > len(prompts)  # rows sample independently


# ---- static steps (rollout.cuda_graph; the CUDA graph itself: tests/gpu) ---------------------


@pytest.mark.parametrize("arch", [*ARCHS, "llama_biased"])
@torch.no_grad()
def test_static_steps_match_hf_forward(arch):
    # The fixed-shape step a CUDA graph replays writes at a column held on the device and attends
    # over the whole cache, the columns not written yet masked: its logits must be HF's. The cache
    # has 3 columns more than are ever written, so a missing mask would weigh them in and show.
    model, _ = make_model(arch)
    ids, mask, fed, full_mask, positions = fed_tokens()
    P, steps = ids.shape[1], fed.shape[1]
    ref = model(input_ids=torch.cat([ids, fed], 1), attention_mask=full_mask, position_ids=positions).logits

    decoder = fast_decoder.FastDecoder(model, mask, steps + 3, static=True)
    assert not decoder.keys.any() and not decoder.values.any()  # zeroed: no NaN in an unwritten column
    torch.testing.assert_close(decoder.prefill(ids, positions[:, :P]), ref[:, P - 1], atol=1e-4, rtol=0)
    assert int(decoder.column) == P
    for t in range(steps):
        got = decoder.step(fed[:, t], positions[:, P + t : P + t + 1])  # [B, V]
        torch.testing.assert_close(got, ref[:, P + t], atol=1e-4, rtol=0)
    assert int(decoder.column) == P + steps  # advanced on the device, as a replayed graph advances it


@pytest.mark.parametrize("arch", ["qwen3", "embedded"])
def test_the_static_engine_decodes_as_the_default_one(arch, monkeypatch):
    # HFEngine(cuda_graph=True) on a CPU runs the static steps without a graph, finished rows kept
    # in the batch to the end. Greedy, with an EOS that ends some rows early: the same tokens,
    # finish reasons and logprobs as the default engine, which drops finished rows.
    model, tokenizer = make_model(arch)
    eos = [eos_in_some_rows(greedy(model, tokenizer, [-1], 10, True, monkeypatch))]
    params = SamplingParams(max_new_tokens=10, temperature=0.0)
    plain = HFEngine(model, tokenizer, eos_token_ids=eos).generate(PROMPTS, 2, params)
    static = HFEngine(model, tokenizer, eos_token_ids=eos, cuda_graph=True).generate(PROMPTS, 2, params)
    assert {c.finish_reason for group in plain for c in group} == {"stop", "length"}
    assert_same_completions(static, plain)


@pytest.mark.parametrize("arch", ["qwen3", "embedded"])
def test_a_seed_gives_each_row_the_same_samples_however_the_batch_runs(arch):
    """Sampling with a seed: a row's tokens come from its own random numbers, so they do not
    depend on which other rows ended first (and left the batch), on fixed-shape steps that keep
    finished rows (rollout.cuda_graph), or on max_batch cutting the call. With one draw per live
    row per step, each of these gave other samples (a reviewer: 18 of 24 changed)."""
    model, tokenizer = make_model(arch)
    params = SamplingParams(max_new_tokens=12, temperature=1.0, seed=3)
    eos = [model.config.eos_token_id, 5, 7]  # frequent: rows end at many different steps
    plain = HFEngine(model, tokenizer, eos_token_ids=eos).generate(PROMPTS, 4, params)
    lengths = {len(c.token_ids) for group in plain for c in group}
    assert len(lengths) > 3 and {c.finish_reason for group in plain for c in group} == {"stop", "length"}
    for engine in (HFEngine(model, tokenizer, eos_token_ids=eos, cuda_graph=True),
                   HFEngine(model, tokenizer, eos_token_ids=eos, max_batch=5)):
        assert_same_completions(engine.generate(PROMPTS, 4, params), plain)
    assert [c.token_ids for c in plain[0]] != [c.token_ids for c in HFEngine(model, tokenizer, eos_token_ids=eos)
                                              .generate(PROMPTS, 4, SamplingParams(12, 1.0, seed=4))[0]]


@torch.no_grad()
def test_static_engine_samples_with_hf_logprobs():
    # Sampling (rows end at different steps and stay in the batch): each token's logprob is the HF
    # forward's over its own prompt and response
    model, tokenizer = make_model("qwen3")
    engine = HFEngine(model, tokenizer, eos_token_ids=[model.config.eos_token_id], cuda_graph=True)
    out = engine.generate(PROMPTS, 3, SamplingParams(max_new_tokens=8, temperature=0.7, seed=1))
    for prompt, group in zip(PROMPTS, out):
        for c in group:
            seq = torch.tensor([prompt + c.token_ids])  # [1, T]
            logits = model(input_ids=seq).logits[0, len(prompt) - 1 : -1]  # [L, V]
            expected = torch.log_softmax(logits / 0.7, dim=-1).gather(1, seq[0, len(prompt) :, None])[:, 0]  # [L]
            torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)


# ---- under bf16 autocast over float32 weights (model.autocast=bfloat16) -----------------------

BF16 = torch.bfloat16


@pytest.mark.parametrize("arch", [*ARCHS, "llama_biased"])
@torch.no_grad()
def test_autocast_decode_matches_hf_forward_under_autocast(arch, monkeypatch):
    """What HF's forward computes under torch.autocast: bf16 matmuls and logits, keys and values
    cached in bf16, and a residual stream that stays float32 (every layer norm's input; folding
    the residual add into a bf16 addmm would round it each layer, which HF does not)."""
    model, _ = make_model(arch)
    ids, mask, fed, full_mask, positions = fed_tokens()
    P, steps = ids.shape[1], fed.shape[1]
    with torch.autocast("cpu", dtype=BF16):
        ref = model(input_ids=torch.cat([ids, fed], 1), attention_mask=full_mask, position_ids=positions).logits

    norm_inputs = []  # dtypes of what each input / post-attention / final norm receives: the residual stream
    rms_norm = fast_decoder._rms_norm

    def spy(x, weight, eps):
        if x.shape[-1] == model.config.hidden_size:
            norm_inputs.append(x.dtype)
        return rms_norm(x, weight, eps)

    monkeypatch.setattr(fast_decoder, "_rms_norm", spy)
    decoder = fast_decoder.FastDecoder(model, mask, steps, autocast=BF16)
    assert decoder.keys.dtype == decoder.values.dtype == BF16 and not decoder.fused_ops
    got = [decoder.prefill(ids, positions[:, :P])]  # [B, V] each
    for t in range(steps):
        got.append(decoder.step(fed[:, t], positions[:, P + t : P + t + 1]))
    got = torch.stack(got, 1)  # [B, 1 + steps, V]
    assert got.dtype == ref.dtype == BF16
    # a bf16 logit of size ~1 has a step of 2^-8..2^-7: allow about two steps (measured up to one)
    torch.testing.assert_close(got.float(), ref[:, P - 1 :].float(), atol=4e-3, rtol=1e-2)
    assert norm_inputs and set(norm_inputs) == {torch.float32}


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen2"])
@pytest.mark.parametrize("precision", ["autocast", "bf16 weights"])
@torch.no_grad()
def test_a_long_bf16_decode_is_hf_decode(arch, precision):
    """In bf16 the fast decoder computes what HF's own incremental decode computes, step after
    step: 40 fed tokens, logprobs of the next token compared. With the float32 path's fused
    kernels (attention scores from a bf16 bmm, addmm residual adds, addcmul RoPE) each step
    rounded differently: on these tiny models 3-9e-4 nats mean and 2-3e-3 at worst over 40
    steps, and on wider ones (a reviewer's, 60 steps) 0.03 mean and 0.2 at worst from the
    trainer's logprobs, against 0.008 for HF's own decode. Now they agree to the bit."""
    from rlvr.rollout.hf import _HFDecoder

    model, _ = make_model(arch)
    autocast = BF16 if precision == "autocast" else None
    if autocast is None:
        model = model.to(BF16)
    ids, mask = left_pad(PROMPTS[:3])  # [B, P]
    fed = torch.randint(2, 50, (3, 40), generator=torch.Generator().manual_seed(1))  # [B, N]
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # [B, P]

    def logprobs(decoder):
        out, nxt = [], positions[:, -1:] + 1  # [B, 1]
        logits = decoder.prefill(ids, positions)
        for t in range(fed.shape[1]):
            out.append(torch.log_softmax(logits.float(), -1).gather(1, fed[:, t : t + 1]))
            logits = decoder.step(fed[:, t], nxt)
            nxt = nxt + 1
        return torch.cat(out, 1)  # [B, N]

    with under_autocast(autocast, torch.device("cpu")):
        ours = logprobs(fast_decoder.FastDecoder(model, mask, fed.shape[1], autocast=autocast))
        theirs = logprobs(_HFDecoder(model, mask))
    gap = (ours - theirs).abs()
    assert gap.max() < 1e-4, (gap.mean(), gap.max())  # measured: 0 on each; fused: 3-9e-4 mean, 2-3e-3 max


@pytest.mark.parametrize("fast", [True, False])
@torch.no_grad()
def test_engine_under_autocast_samples_with_the_trainers_bf16_logprobs(fast, monkeypatch):
    """The engine decodes under the run's autocast, so each token's sampling logprob is that of the
    trainer's forward under autocast (bf16 logits, float32 log-softmax), up to rounding; and not
    the float32 engine's logprob for the same token."""
    from rlvr.train.forward import token_stats
    from rlvr.types import RolloutBatch

    built = []  # the fast decoders the engine builds: their caches must be bf16 under autocast

    class Recorded(fast_decoder.FastDecoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self.keys.dtype)

    monkeypatch.setattr(fast_decoder, "FastDecoder", Recorded)
    if not fast:
        monkeypatch.setattr(fast_decoder, "supports", lambda model: False)
    model, tokenizer = make_model("qwen3")
    params = SamplingParams(max_new_tokens=8, temperature=0.7, seed=1)
    eos = [model.config.eos_token_id]
    mixed = HFEngine(model, tokenizer, eos_token_ids=eos, autocast=BF16).generate(PROMPTS, 3, params)
    assert built == ([BF16] if fast else [])
    plain = HFEngine(model, tokenizer, eos_token_ids=eos).generate(PROMPTS, 3, params)
    compared = 0
    for prompt, group, group32 in zip(PROMPTS, mixed, plain):
        for c, c32 in zip(group, group32):
            seq = torch.tensor([prompt + c.token_ids])  # [1, T]
            on = torch.ones_like(seq, dtype=torch.bool)
            batch = RolloutBatch(seq, on, on, torch.zeros(seq.shape), torch.zeros(1), torch.zeros(1), torch.zeros(1))
            lp, _ = token_stats(model, batch, 0.7, autocast=BF16)  # [1, T]
            # measured: 0 through HF's forward, up to 3.6e-3 through the fast decoder (a bf16 step of its logits)
            torch.testing.assert_close(torch.tensor(c.logprobs), lp[0, len(prompt) :], atol=1e-2, rtol=0)
            if c.token_ids == c32.token_ids:
                compared += 1
                assert c.logprobs != c32.logprobs
    assert compared > len(PROMPTS)  # most samples agree on the tokens, so the last check ran


@pytest.mark.parametrize("fast", [True, False])
def test_autocast_casts_each_weight_once_per_call_not_per_step(fast, monkeypatch):
    """Decoding is memory-bound: re-reading every float32 weight to cast it at each step would
    cost more than the bf16 matmuls save. Autocast's cast cache prevents that within one region,
    but not under inference_mode, so the engine decodes under no_grad when autocast is on."""
    from torch.profiler import profile

    if not fast:
        monkeypatch.setattr(fast_decoder, "supports", lambda model: False)
    model, tokenizer = make_model("qwen3")
    weights = {tuple(p.shape) for p in model.parameters() if p.dim() == 2}  # activations are [rows, ...]: 12 rows here
    casts = []
    for new_tokens in (2, 10):
        engine = HFEngine(model, tokenizer, eos_token_ids=[-1], autocast=BF16)
        with profile(record_shapes=True) as prof:
            engine.generate(PROMPTS, 2, SamplingParams(max_new_tokens=new_tokens, temperature=1.0, seed=0))
        casts.append(sum(e.name == "aten::_to_copy" and bool(e.input_shapes) and tuple(e.input_shapes[0]) in weights
                         for e in prof.events()))
    assert casts[0] > 0 and casts[0] == casts[1]


def test_engine_load_weights_takes_pairs_a_tensor_at_a_time():
    # a decoding copy of a sharded policy is refreshed from distributed.iter_full_state's
    # (name, tensor) pairs, so no whole second state dict is built; a state dict works too, and
    # a source that leaves a weight out or names one the model lacks is an error (raised once
    # it is seen: the copy may then be partly refreshed)
    model, tokenizer = make_model("qwen3")
    source, _ = make_model("qwen3")
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)
    engine = HFEngine(model, tokenizer, eos_token_ids=[model.config.eos_token_id])
    engine.load_weights((name, tensor) for name, tensor in source.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    engine.load_weights(dict(list(source.state_dict().items())))
    with pytest.raises(ValueError, match="no tensor for"):
        engine.load_weights(list(source.state_dict().items())[1:])
    with pytest.raises(ValueError, match="is not a weight"):
        engine.load_weights([("lm_head.weigth", source.lm_head.weight)])
