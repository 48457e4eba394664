"""Peak memory of one policy-gradient backward pass: rlvr's fused output layer vs the naive
logits -> log_softmax -> gather (a plain Hugging Face forward; OpenRLHF, verl without its fused
kernels and older TRL), side by side, on a random-init model with Qwen3-0.6B's shapes
(vocabulary 151,936, width 1024, tied embeddings). When TRL is installed, also TRL's own fused
LM head (trl.trainer.utils.add_fused_lm_head, which its GRPOTrainer uses since 1.x: tiles, log
probs and entropy, no [B, T, V] logits), so the comparison with the trainer we measure against
elsewhere is there too.

    python benchmarks/memory.py                      # CPU: 2 layers, 4 x 256 tokens (a minute)
    python benchmarks/memory.py --layers 28 --batch 8 --seq 1024   # GPU: the full depth
    python benchmarks/memory.py --autocast           # also under bf16 autocast over float32 weights

Each variant runs in a fresh process. On a CPU the figure is the peak resident memory minus the
resident memory once the model and its gradient buffers exist (so only what the update itself
allocates counts); on a GPU, torch.cuda.max_memory_allocated over the same baseline. The weights
are bf16 on a GPU and float32 on a CPU; with --autocast each variant runs a second time with
float32 weights and the forward under bf16 autocast (model.autocast=bfloat16, the GPU default),
printed beside the first; its figure includes autocast's bf16 copies of the weights. Ends with one
JSON line: {"naive_mb", "fused_mb", "ratio", ...} (with TRL also "trl_mb" and "ratio_trl", fused
over TRL's; with --autocast also "naive_autocast_mb", "fused_autocast_mb", "ratio_autocast", ...).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> dict:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    sys.path.insert(0, str(ROOT))
    from rlvr.models import under_autocast
    from rlvr.train.forward import _fused_parts, token_stats
    from rlvr.types import RolloutBatch

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    autocast = torch.bfloat16 if args.autocast else None  # over float32 weights, as models.resolve_precision
    dtype = torch.bfloat16 if cuda and autocast is None else torch.float32
    config = Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=args.layers,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True,
                         max_position_embeddings=max(4096, args.seq))
    model = Qwen3ForCausalLM(config).to(device=device, dtype=dtype)
    if args.checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    for p in model.parameters():  # gradient buffers belong to the baseline, not to the update
        p.grad = torch.zeros_like(p)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g)
    attn = torch.ones_like(ids, dtype=torch.bool)
    resp = attn.clone()
    resp[:, : args.seq // 4] = False  # a prompt, then the response
    batch = RolloutBatch(ids, attn, resp, torch.zeros(ids.shape), torch.zeros(args.batch), torch.zeros(args.batch),
                         torch.arange(args.batch))
    if args.variant == "fused":  # its one-time 5-token check of the output layer, not measured; nothing
        _fused_parts(model)       # else runs before the baseline, for any variant
    if args.variant == "trl":  # as GRPOTrainer sets up its policy (log probs and entropy)
        from trl.trainer.utils import add_fused_lm_head

        add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_mb() * 2**20
    t0 = time.perf_counter()
    mask = resp.to(device)
    if args.variant == "naive":
        with under_autocast(autocast, device):
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits  # [B, T, V]
        logp = torch.log_softmax(logits.float(), dim=-1)  # [B, T, V] float32
        lp = logp[:, :-1].gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)
        lp = torch.cat([lp.new_zeros(args.batch, 1), lp], 1)
    elif args.variant == "trl":  # labels -100 off the response, as GRPOTrainer scores completions
        labels = ids.masked_fill(~resp, -100).to(device)
        with under_autocast(autocast, device):
            out = model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=labels, fused_lm_head=True)
        lp = torch.cat([out.log_probs.new_zeros(args.batch, 1), out.log_probs.float()], 1)  # [B, T]: token t at t
    else:
        lp, _ = token_stats(model, batch, 1.0, autocast=autocast)
    loss = -(lp * mask).sum() / mask.sum()
    loss.backward()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss: KiB on Linux
    return {"variant": args.variant, "peak_mb": peak / 2**20, "seconds": time.perf_counter() - t0, "loss": float(loss),
            "device": str(device), "dtype": str(dtype).replace("torch.", "") + (" + bf16 autocast" if autocast else "")}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2, help="decoder layers (Qwen3-0.6B has 28)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing in both variants")
    ap.add_argument("--autocast", action="store_true",
                    help="also run each variant under bf16 autocast over float32 weights, printed beside the first")
    ap.add_argument("--variant", choices=["naive", "fused", "trl"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    print(f"Qwen3-0.6B shapes, {args.layers} layers, batch {args.batch} x {args.seq} tokens"
          f"{', gradient checkpointing' if args.checkpointing else ''}; one forward + backward")
    precisions = ["plain", "autocast"] if args.autocast else ["plain"]
    results = {}  # (precision, variant) -> the child's row
    import importlib.util

    variants = ("naive", "fused") + (("trl",) if importlib.util.find_spec("trl") else ())
    for variant in variants:
        for precision in precisions:
            cmd = [sys.executable, __file__, "--variant", variant, "--layers", str(args.layers), "--batch",
                   str(args.batch), "--seq", str(args.seq)] + (["--checkpointing"] if args.checkpointing else [])
            cmd += ["--autocast"] if precision == "autocast" else []
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{variant} ({precision}) failed:\n{done.stderr[-2000:]}")
            r = results[precision, variant] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{variant:<6} {r['dtype']:<24} peak {r['peak_mb']:8.0f} MB above the model and its gradients"
                  f"   {r['seconds']:6.1f} s   loss {r['loss']:.4f}")
    logits_mb = args.batch * args.seq * 151936 * 4 / 2**20
    ratios = {p: results[p, "fused"]["peak_mb"] / results[p, "naive"]["peak_mb"] for p in precisions}
    print("fused / naive = " + ", ".join(f"{ratios[p]:.2f} ({results[p, 'fused']['dtype']})" for p in precisions)
          + f" (target <= 0.5); one float32 [B, T, V] logits tensor is {logits_mb:.0f} MB")
    if "trl" in variants:
        print("fused / TRL's fused head = " + ", ".join(
            f"{results[p, 'fused']['peak_mb'] / results[p, 'trl']['peak_mb']:.2f}" for p in precisions))
    plain = {v: results["plain", v] for v in ("naive", "fused")}
    row = {"naive_mb": round(plain["naive"]["peak_mb"], 1), "fused_mb": round(plain["fused"]["peak_mb"], 1),
           "ratio": round(ratios["plain"], 3), "layers": args.layers, "batch": args.batch, "seq": args.seq,
           "device": plain["fused"]["device"], "naive_s": round(plain["naive"]["seconds"], 2),
           "fused_s": round(plain["fused"]["seconds"], 2)}
    if "trl" in variants:
        row.update(trl_mb=round(results["plain", "trl"]["peak_mb"], 1), trl_s=round(results["plain", "trl"]["seconds"], 2),
                   ratio_trl=round(plain["fused"]["peak_mb"] / results["plain", "trl"]["peak_mb"], 3))
    if args.autocast:
        for v in variants:
            row[f"{v}_autocast_mb"] = round(results["autocast", v]["peak_mb"], 1)
            row[f"{v}_autocast_s"] = round(results["autocast", v]["seconds"], 2)
        row["ratio_autocast"] = round(ratios["autocast"], 3)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
