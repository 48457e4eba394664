"""Rollout throughput: rlvr's HF engine vs `model.generate`, same model, prompts, batch, lengths.

    python benchmarks/rollout.py                     # worst case: random init, no EOS, 64 tokens
    python benchmarks/rollout.py --model runs/demo/sft/model --eos --new-tokens 96   # the demo's RL rollouts

The batch is the RL demo's rollout batch (recipes/demo.yaml): 64 prompts x 8 samples = 512 rows,
the size the engine decodes at in training; `model.generate` gets the same 64 prompts with
num_return_sequences=8. Both decode 512 rows; our engine prefills each distinct prompt once and
repeats its KV cache for the prompt's 8 rows, `generate` prefills all 512. Smaller batches pay the fixed per-step Python and dispatch cost (about
1.2 ms on the 2-core CPU) over fewer rows; pass --prompts to see them.

Both sides sample at temperature 1. Two settings:
- default: EOS disabled on both sides, so both decode exactly --new-tokens tokens per row. With
  the random-init embedded model this is the worst case for us: no row ever stops early.
- --eos: both stop rows at EOS, the RL workload with a trained checkpoint. `model.generate`
  keeps finished rows in the batch (padding them) until the last row ends; our engine drops
  them. Throughput counts the tokens each side actually sampled up to and including EOS.

Also prints the machine's limit for this model: the measured float32 matmul rate (a large
square matmul, best of several) divided by the model's FLOPs per generated token (2 x
parameters touched per token + attention over the mean context), and the fraction of it each
engine reaches; and a ceiling on that fraction from the same run: a decode of only its matmuls
at this batch (the dense layers, and attention's two batched matmuls over the growing KV cache,
in the engine's order and layout; see matmul_step_seconds), with sampling, norms, RoPE, cache
writes and dispatch counted as free. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from rlvr.models import eos_token_ids, load_policy
from rlvr.rollout.hf import HFEngine, SamplingParams
from rlvr.tasks.arithmetic import make_samples


def timed(fn, count, repeats: int) -> tuple[float, int, object]:
    """The call with the best rate among `repeats` after a warm-up: (its seconds, its tokens as
    `count(result)` says, its result). Each call's rate is its own tokens over its own time: with
    EOS on, calls sample different lengths, and the fastest call is apt to be a short one."""
    fn()  # warm-up
    best = (0.0, 0.0, 0, None)  # (rate, seconds, tokens, result)
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        tokens = count(out)
        if tokens / seconds > best[0]:
            best = (tokens / seconds, seconds, tokens, out)
    return best[1:]


def matmul_flops(n: int = 1024, seconds: float = 1.0) -> float:
    """Measured float32 FLOP/s of an n x n matmul on this machine (best of the repeats)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def flops_per_token(model, context: float) -> float:
    """Forward FLOPs to generate one token: 2 per weight it multiplies (every matrix except the
    input embedding lookup; a tied output layer counts once) plus attention: q.k and p.v over
    `context` cached positions, 2 x 2 x heads x head_dim per position and layer."""
    c = model.config
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings() is not None and model.get_output_embeddings().weight is embed
    weights = sum(p.numel() for p in model.parameters() if p.dim() >= 2) - (0 if tied else embed.numel())
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return 2 * weights + 4 * c.num_hidden_layers * c.num_attention_heads * head_dim * context


def matmul_step_seconds(model, rows: int, prompt_len: int, new_tokens: int, repeats: int = 2) -> tuple[float, float]:
    """(dense, attention) seconds per decode step of a decode made of only its matmuls, run as
    the engine runs one: `new_tokens` steps at `rows` rows, each layer's dense matmuls (one
    [rows, in] x [in, out] product per 2-D weight) then its attention, q.k and p.v as batched
    matmuls over the filled columns of a preallocated [layers, rows, kv heads, length, d] cache
    (fast_decoder.FastDecoder._attention), then the output layer. Interleaved like this, the
    cache is read as the engine reads it: timed alone and hot, attention looks ~2x cheaper.
    Best of `repeats` decodes."""
    c = model.config
    embed = model.get_input_embeddings().weight
    layers = [[p.detach() for p in layer.parameters() if p.dim() == 2] for layer in model.model.layers]
    head = model.get_output_embeddings().weight.detach()  # tied or not, it multiplies once per token
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
    d = getattr(c, "head_dim", None) or c.hidden_size // heads
    T = prompt_len + new_tokens
    keys = torch.randn(len(layers), rows, kv_heads, T, d)  # [L, b, kvh, T, d]
    values = torch.randn_like(keys)
    q = torch.randn(rows, kv_heads, heads // kv_heads, d)  # [b, kvh, g, d]
    x = {w.shape[1]: torch.randn(rows, w.shape[1]) for ws in layers for w in ws} | {embed.shape[1]: torch.randn(rows, embed.shape[1])}
    best = (float("inf"), 0.0)
    with torch.inference_mode():
        for _ in range(repeats):
            dense = attention = 0.0
            for S in range(prompt_len + 1, T + 1):
                for i, weights in enumerate(layers):
                    t0 = time.perf_counter()
                    for w in weights:
                        x[w.shape[1]] @ w.t()
                    t1 = time.perf_counter()
                    scores = torch.matmul(q, keys[i, :, :, :S].transpose(-1, -2))  # [b, kvh, g, S]
                    torch.matmul(scores, values[i, :, :, :S])  # [b, kvh, g, d]
                    t2 = time.perf_counter()
                    dense, attention = dense + t1 - t0, attention + t2 - t1
                t0 = time.perf_counter()
                x[head.shape[1]] @ head.t()
                dense += time.perf_counter() - t0
            if dense + attention < sum(best):
                best = (dense, attention)
    return best[0] / new_tokens, best[1] / new_tokens


def sampled_tokens(sequences: torch.Tensor, prompt_len: int, eos: list[int], stop_at_eos: bool) -> int:
    """Tokens model.generate sampled per row, up to and including the first EOS when rows stop
    there (columns after it are padding). sequences [B, P + N] -> count."""
    new = sequences[:, prompt_len:]  # [B, N]
    if not stop_at_eos:
        return new.numel()
    is_eos = torch.isin(new, torch.tensor(eos))  # [B, N]
    ended = is_eos.cumsum(1) - is_eos.long() > 0  # [B, N] True after a row's first EOS
    return int((~ended).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--prompts", type=int, default=64)  # x --group = the demo's 512 rows (see the docstring)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--eos", action="store_true", help="stop rows at EOS on both sides (use a trained --model)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_policy(args.model)
    model.eval()
    prompts = [tok(s.prompt + "\n")["input_ids"] for s in make_samples(args.prompts, "train", 0, 1, 5, False)]
    eos = eos_token_ids(tok, model) if args.eos else [-1]  # -1: no token ends a row
    engine = HFEngine(model, tok, eos_token_ids=eos)
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0)
    ours, ours_tokens, groups = timed(lambda: engine.generate(prompts, args.group, params),
                                      lambda out: sum(len(c.token_ids) for g in out for c in g), args.repeats)

    tok.padding_side = "left"
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    # no EOS on generate's side either: none in its config (a min_new_tokens processor would add
    # work at every step that our engine does not do; measured 2.5-4.5% of generate's time)
    stop = {} if args.eos else {"eos_token_id": None}

    def hf():
        with torch.no_grad():
            return model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                  max_new_tokens=args.new_tokens, num_return_sequences=args.group,
                                  pad_token_id=tok.pad_token_id, **stop)

    prompt_len = enc["input_ids"].shape[1]
    theirs, hf_tokens, sequences = timed(hf, lambda out: sampled_tokens(out, prompt_len, eos, args.eos), args.repeats)
    if not args.eos and sequences.shape[1] != prompt_len + args.new_tokens:
        sys.exit(f"generate stopped early ({sequences.shape[1] - prompt_len} of {args.new_tokens} tokens) with EOS off")
    rows = args.prompts * args.group
    rate = matmul_flops()
    context = sum(len(p) for p in prompts) / len(prompts) + ours_tokens / rows / 2
    per_token = flops_per_token(model, context)
    limit = rate / per_token  # tokens/s if every FLOP ran at the matmul rate
    prompt_len = max(len(p) for p in prompts)  # the engine left-pads every row to it
    dense, attention = matmul_step_seconds(model, rows, prompt_len, round(ours_tokens / rows))
    ours_rate, hf_rate = ours_tokens / ours, hf_tokens / theirs
    row = {"model": args.model, "eos": args.eos, "batch": rows, "new_tokens": args.new_tokens,
           "ours_tok_s": round(ours_rate), "hf_tok_s": round(hf_rate), "ratio": round(ours_rate / hf_rate, 2),
           "ours_mean_len": round(ours_tokens / rows, 1), "hf_mean_len": round(hf_tokens / rows, 1),
           "matmul_gflop_s": round(rate / 1e9, 1), "limit_tok_s": round(limit),
           "ours_of_limit": round(ours_rate / limit, 3), "hf_of_limit": round(hf_rate / limit, 3),
           "dense_only_of_limit": round(rows / dense / limit, 3),
           "matmuls_only_of_limit": round(rows / (dense + attention) / limit, 3)}
    print(f"{rows} rows ({args.prompts} prompts x {args.group}), up to {args.new_tokens} new tokens, "
          f"{'stop at EOS' if args.eos else 'EOS disabled'}, model {args.model}")
    print(f"{'engine':<20}{'seconds':>10}{'tokens':>10}{'tokens/s':>12}{'of limit':>10}")
    print(f"{'rlvr HFEngine':<20}{ours:>10.3f}{ours_tokens:>10}{row['ours_tok_s']:>12}{100 * row['ours_of_limit']:>9.1f}%")
    print(f"{'model.generate':<20}{theirs:>10.3f}{hf_tokens:>10}{row['hf_tok_s']:>12}{100 * row['hf_of_limit']:>9.1f}%")
    print(f"ratio (ours / generate, tokens/s): {row['ratio']}x; limit {row['limit_tok_s']} tokens/s "
          f"({row['matmul_gflop_s']} GFLOP/s float32 matmul, {per_token / 1e6:.2f} MFLOP per token)")
    print(f"a decode of only its matmuls, at this batch and mean length, would reach "
          f"{100 * row['matmuls_only_of_limit']:.0f}% of the limit ({1e3 * dense:.2f} ms dense at "
          f"{100 * row['dense_only_of_limit']:.0f}%, {1e3 * attention:.2f} ms attention over the cache)")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
