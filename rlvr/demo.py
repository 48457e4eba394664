"""`rlvr demo`: the whole pipeline on the embedded default, on a CPU, in minutes.

SFT on a small set of worked solutions until it plateaus -> held-out eval -> GRPO on many
answer-only problems (including longer ones than SFT saw) -> held-out eval -> a before/after
table with 95% CIs and a paired significance test, and OUT/summary.json.

`rlvr train RECIPE` runs the same pipeline when the recipe sets `sft.before_rl: true`, with the
recipe's algorithm in place of the demo's GRPO (recipes/dapo.yaml, ppo.yaml, ...).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from rlvr.config import Config


def run_demo(cfg: Config, resume: bool = False) -> dict:
    """SFT -> eval -> RL -> eval -> paired comparison. With `resume`, a finished SFT phase is
    reused (and re-evaluated) and RL continues from its last checkpoint."""
    from rlvr.cli import check_fresh, eval_model, need_heldout, run_sft
    from rlvr.config import save_config
    from rlvr.eval.compare import paired_compare
    from rlvr.eval.evaluate import format_table
    from rlvr.train.rl import train_rl

    need_heldout(cfg, "SFT then RL (sft.before_rl, rlvr demo) evaluates the model before and after RL")
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    sft_cfg = dataclasses.replace(cfg, output_dir=str(out / "sft"), sft=dataclasses.replace(cfg.sft, before_rl=False))
    if resume:
        if not (out / "sft" / "sft.json").exists():
            raise FileNotFoundError(f"--resume: {out / 'sft'} holds no finished SFT phase; start again in a new "
                                    "output_dir")
        sft = json.loads((out / "sft" / "sft.json").read_text())
        print(f"== resuming {out}: SFT done; held-out eval of its model")
        before = eval_model(sft["model"], sft_cfg, out / "sft" / "eval")
    else:
        check_fresh(out)
        out.mkdir(parents=True, exist_ok=True)
        # this folder is an SFT-then-RL run whatever started it (`rlvr demo` reads demo.yaml, which
        # does not set sft.before_rl): `rlvr train OUT/config.yaml output_dir=NEW` repeats it
        save_config(dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, before_rl=True)), out / "config.yaml")
        print(f"== {out}\n== 1/4 supervised fine-tuning on worked solutions")
        try:
            sft, before = run_sft(sft_cfg)
        except BaseException:
            if not (out / "sft").exists():  # an input error before SFT wrote anything: leave no folder
                (out / "config.yaml").unlink()  # behind that would refuse the corrected command
                out.rmdir()
            raise
    print(f"== 2/4 RL ({cfg.rl.advantage} advantages, {cfg.rl.loss}) on answer-only problems")
    rl_cfg = dataclasses.replace(sft_cfg, model=dataclasses.replace(cfg.model, name_or_path=sft["model"]),
                                 output_dir=str(out / "rl"))
    rl = train_rl(rl_cfg, resume=resume and (out / "rl").exists())  # RL may have failed before it began
    print("== 3/4 held-out evaluation of the RL model")
    after = eval_model(rl["checkpoint"], rl_cfg, out / "rl" / "eval")
    print("== 4/4 before / after")
    print(format_table({"after SFT (before RL)": before, "after RL": after}))
    if before.ids != after.ids:
        raise ValueError("the evaluations before and after RL used different problems (eval.limit or the task "
                         "changed between the phases); run both with the same settings")
    test = paired_compare(before.scores, after.scores, "before RL", "after RL")
    minutes = (time.perf_counter() - t0) / 60
    print(test.sentence)
    print(f"SFT {sft['sft']['seconds']:.0f} s, RL {rl['rl_seconds']:.0f} s ({rl['steps']} steps), total {minutes:.1f} min")
    summary = {
        "before": _brief(before), "after": _brief(after),
        "paired_test": {"test": test.test, "p_value": test.p_value, "difference": test.difference, "ci95": test.ci95,
                        "n": before.overall.n, "verdict": test.sentence},
        "sft_seconds": sft["sft"]["seconds"], "rl_seconds": rl["rl_seconds"], "rl_steps": rl["steps"],
        "total_minutes": minutes, "sft": sft["sft"], "checkpoint": rl["checkpoint"],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'summary.json'}")
    return summary


def _brief(result) -> dict:
    """An EvalResult for summary.json, without the per-problem lists (they are in eval.json)."""
    return {k: v for k, v in result.to_json().items() if k not in ("ids", "scores")}
