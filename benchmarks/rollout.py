"""Rollout throughput: rlvr's HF engine vs `model.generate`, same model, prompts, batch, lengths.

    python benchmarks/rollout.py [--model embedded|PATH] [--batch 512] [--new-tokens 64]

The default batch is the RL demo's rollout batch (recipes/demo.yaml: 64 prompts x 8 = 512
rows), the size the engine decodes at in training. Smaller batches pay the fixed per-step
Python and dispatch cost (about 1.2 ms on the 2-core CPU) over fewer rows; pass --batch to
see them.

Both sides sample at temperature 1 with EOS disabled (min length = max length), so they decode
exactly the same number of tokens; the embedded model is random-init, which is the worst case
for us (no early stops to drop). Also prints the machine's limit for this model: the measured
float32 matmul rate (a large square matmul, best of several) divided by the model's FLOPs per
generated token (2 x parameters touched per token + attention over the mean context), and the
fraction of it each engine reaches. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from rlvr.models import load_policy
from rlvr.rollout.hf import HFEngine, SamplingParams
from rlvr.tasks.arithmetic import make_samples


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--batch", type=int, default=512)  # the demo's 64 prompts x 8 (see the docstring)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_policy(args.model)
    model.eval()
    prompts = [tok(s.prompt + "\n")["input_ids"] for s in make_samples(args.batch, "train", 0, 1, 4, False)]
    # no EOS for either side: every row decodes exactly new_tokens tokens
    engine = HFEngine(model, tok, eos_token_ids=[-1])
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=1.0)
    ours = timed(lambda: engine.generate(prompts, 1, params), args.repeats)

    tok.padding_side = "left"
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")

    def hf():
        with torch.no_grad():
            model.generate(**enc, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, pad_token_id=tok.pad_token_id)

    theirs = timed(hf, args.repeats)
    n_tokens = args.batch * args.new_tokens
    rate = matmul_flops()
    context = sum(len(p) for p in prompts) / len(prompts) + args.new_tokens / 2
    limit = rate / flops_per_token(model, context)  # tokens/s if every FLOP ran at the matmul rate
    row = {"model": args.model, "batch": args.batch, "new_tokens": args.new_tokens,
           "ours_tok_s": round(n_tokens / ours), "hf_tok_s": round(n_tokens / theirs), "ratio": round(theirs / ours, 2),
           "matmul_gflop_s": round(rate / 1e9, 1), "limit_tok_s": round(limit),
           "ours_of_limit": round(n_tokens / ours / limit, 3), "hf_of_limit": round(n_tokens / theirs / limit, 3)}
    print(f"{'engine':<20}{'seconds':>10}{'tokens/s':>12}{'of limit':>10}")
    print(f"{'rlvr HFEngine':<20}{ours:>10.3f}{row['ours_tok_s']:>12}{100 * row['ours_of_limit']:>9.1f}%")
    print(f"{'model.generate':<20}{theirs:>10.3f}{row['hf_tok_s']:>12}{100 * row['hf_of_limit']:>9.1f}%")
    print(f"ratio (ours / generate): {row['ratio']}x; limit {row['limit_tok_s']} tokens/s "
          f"({row['matmul_gflop_s']} GFLOP/s float32 matmul, {flops_per_token(model, context) / 1e6:.2f} MFLOP per token)")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
