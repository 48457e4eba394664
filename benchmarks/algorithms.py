"""Every algorithm recipe trained on the embedded task from one SFT start, same seed, same
time budget; held-out accuracy with 95% CIs and McNemar's paired test against the start.

    python benchmarks/algorithms.py [--budget 480] [--sft-model runs/demo/sft/model]
                                    [--recipes grpo dr-grpo dapo ppo rloo reinforce-pp] [--out DIR]

The SFT phase is the demo's (2,000 worked solutions to a validation plateau, ~3 min on 2 CPU
cores); pass --sft-model to reuse one. Each recipe then runs RL for at most `--budget` seconds
of training time (its own `rl.steps` and schedule otherwise), so slower algorithms (a critic,
a reference model, every group trained) get fewer steps, as they would on the user's clock.
Prints a table and one JSON line. Run it alone: two CPU-heavy jobs on 2 cores distort timings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RECIPES = ["grpo", "dr-grpo", "dapo", "ppo", "rloo", "reinforce-pp"]


def main() -> None:
    from rlvr.cli import eval_model, recipe_path, run_sft
    from rlvr.config import load_config
    from rlvr.eval.compare import paired_compare
    from rlvr.eval.stats import format_p
    from rlvr.train.rl import train_rl

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=480.0, help="RL seconds per recipe")
    ap.add_argument("--sft-model", help="start every recipe from this model (default: run the demo's SFT)")
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    ap.add_argument("--set", nargs="*", default=[], metavar="SECTION.FIELD=VALUE",
                    help="overrides applied to every recipe (e.g. rl.prompts_per_step=32)")
    ap.add_argument("--out", default=f"runs/bench-algorithms-{time.strftime('%Y%m%d-%H%M%S')}")
    args = ap.parse_args()
    out = Path(args.out)

    base = load_config(recipe_path("demo"), [f"output_dir={out / 'sft'}"])
    if args.sft_model:
        start = args.sft_model
        before = eval_model(start, base, None)
    else:
        sft, before = run_sft(base)
        start = sft["model"]

    rows = []
    for name in args.recipes:
        cfg = load_config(recipe_path(name), [f"model.name_or_path={start}", "sft.before_rl=false",
                                              f"rl.time_budget_s={args.budget}", f"output_dir={out / name}",
                                              *args.set])
        print(f"== {name}")
        t0 = time.perf_counter()
        rl = train_rl(cfg)
        after = eval_model(rl["checkpoint"], cfg, out / name / "eval")
        if after.ids != before.ids or after.settings != before.settings:
            raise SystemExit(f"{name}: its evaluation used other problems or settings than the start's; "
                             "run every recipe with the same eval: section")
        test = paired_compare(before.scores, after.scores, "start", name)  # McNemar (greedy) or paired bootstrap
        rows.append({"recipe": name, "steps": rl["steps"], "rl_seconds": rl["rl_seconds"],
                     "accuracy": after.overall.accuracy, "ci95": after.overall.ci95, "n": after.overall.n,
                     "difference": test.difference, "difference_ci95": test.ci95, "p_value": test.p_value,
                     "test": test.test,
                     "mean_length": after.overall.mean_length, "minutes": (time.perf_counter() - t0) / 60,
                     "by_bucket": {k: v.accuracy for k, v in after.by_bucket.items()}})

    b = before.overall
    print(f"\nstart (SFT): {100 * b.accuracy:.1f}% [{100 * b.ci95[0]:.1f}, {100 * b.ci95[1]:.1f}] "
          f"on n = {b.n} held-out problems, mean length {b.mean_length:.1f}; RL budget {args.budget:.0f} s each")
    print(f"{'recipe':<14}{'steps':>6}{'accuracy [95% CI]':>22}{'gain [95% CI]':>24}{'p':>12}{'length':>8}"
          f"{'min':>6}  learned")
    for r in rows:
        acc = f"{100 * r['accuracy']:.1f} [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"
        gain = f"{100 * r['difference']:+.1f} [{100 * r['difference_ci95'][0]:+.1f}, {100 * r['difference_ci95'][1]:+.1f}]"
        learned = "yes" if r["difference"] > 0 and r["p_value"] < 0.01 else "NO"
        print(f"{r['recipe']:<14}{r['steps']:>6}{acc:>22}{gain:>24}{format_p(r['p_value']):>12}"
              f"{r['mean_length']:>8.1f}{r['minutes']:>6.1f}  {learned}")
    result = {"start_accuracy": b.accuracy, "start_ci95": b.ci95, "n": b.n, "budget_s": args.budget,
              "recipes": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "algorithms.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({r["recipe"]: {"accuracy": round(r["accuracy"], 4), "gain": round(r["difference"], 4),
                                    "p": r["p_value"], "steps": r["steps"]} for r in rows}))


if __name__ == "__main__":
    main()
