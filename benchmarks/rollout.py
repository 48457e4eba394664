"""Rollout throughput: rlvr's HF engine vs `model.generate`, same model, prompts, batch, lengths.

    python benchmarks/rollout.py [--model embedded|PATH] [--batch 128] [--new-tokens 64]

Both sides sample at temperature 1 with EOS disabled (min length = max length), so they decode
exactly the same number of tokens; the embedded model is random-init, which is the worst case
for us (no early stops to drop). Prints a table and one JSON line.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--batch", type=int, default=128)
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
    row = {"model": args.model, "batch": args.batch, "new_tokens": args.new_tokens,
           "ours_tok_s": round(n_tokens / ours), "hf_tok_s": round(n_tokens / theirs), "ratio": round(theirs / ours, 2)}
    print(f"{'engine':<20}{'seconds':>10}{'tokens/s':>12}")
    print(f"{'rlvr HFEngine':<20}{ours:>10.3f}{row['ours_tok_s']:>12}")
    print(f"{'model.generate':<20}{theirs:>10.3f}{row['hf_tok_s']:>12}")
    print(f"ratio (ours / generate): {row['ratio']}x")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
