"""`rlvr demo`: the whole pipeline on the embedded default, on a CPU, in minutes.

SFT on a small set of worked solutions until it plateaus -> held-out eval -> GRPO on many
answer-only problems (including longer ones than SFT saw) -> held-out eval -> a before/after
table with 95% CIs and a paired significance test, and OUT/summary.json.

`rlvr train RECIPE` runs the same pipeline when the recipe sets `sft.before_rl: true`, with the
recipe's algorithm in place of the demo's GRPO (recipes/dapo.yaml, ppo.yaml, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

from rlvr.config import Config


def run_demo(cfg: Config, resume: bool = False) -> dict:
    """SFT -> eval -> RL -> eval -> paired comparison. With `resume`, a finished SFT phase (its
    sft.json, written as soon as its model is saved) is reused and re-evaluated, an unfinished
    one starts over (SFT is not resumable mid-phase), and RL continues from its last checkpoint.
    Earlier evaluations and summary.json are kept under names that say what they scored."""
    from rlvr.cli import check_fresh, eval_model, need_heldout
    from rlvr.config import save_config
    from rlvr.eval.compare import paired_compare
    from rlvr.eval.evaluate import format_table
    from rlvr.train import checkpoint, run_dir
    from rlvr.train.rl import train_rl

    need_heldout(cfg, "SFT then RL (sft.before_rl, rlvr demo) evaluates the model before and after RL")
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    # this folder is an SFT-then-RL run whatever started it (`rlvr demo` reads demo.yaml, which
    # does not set sft.before_rl): `rlvr train OUT/config.yaml output_dir=NEW` repeats it
    cfg = dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, before_rl=True))
    sft_cfg = dataclasses.replace(cfg, output_dir=str(out / "sft"), sft=dataclasses.replace(cfg.sft, before_rl=False))
    again = f"rlvr train {out / 'config.yaml'} --resume"  # continues exactly: the file holds every setting
    if resume:
        if not (out / "config.yaml").exists():
            raise FileNotFoundError(f"--resume: no SFT-then-RL run under {out} (no config.yaml); start without --resume")
        changes = run_dir.check_resume_config(out, cfg)  # refuses another model, task or algorithm
        for change in changes:
            print(f"--resume with a changed setting: {change}")
        if changes:  # the next resume compares with these; those of the steps so far stay beside them
            run_dir.record_config(out, cfg, _step(checkpoint.latest(out / "rl")))
    else:
        check_fresh(out)
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    sft, before = _sft_phase(out, sft_cfg, resume, again)
    print(f"== 2/4 RL ({cfg.rl.advantage} advantages, {cfg.rl.loss}) on answer-only problems")
    rl_cfg = dataclasses.replace(sft_cfg, model=dataclasses.replace(cfg.model, name_or_path=sft["model"]),
                                 output_dir=str(out / "rl"))
    rl = train_rl(rl_cfg, resume=resume and (out / "rl").exists(),  # RL may have failed before it began
                  resume_command=again)
    print("== 3/4 held-out evaluation of the RL model")
    run_dir.keep_earlier_eval(out / "rl" / "eval")
    with _say_on_stop(f"during the held-out eval after RL (RL is done: {rl['checkpoint']}); `{again}` redoes it"):
        after = eval_model(rl["checkpoint"], rl_cfg, out / "rl" / "eval")
    print("== 4/4 before / after")
    print(format_table({"after SFT (before RL)": before, "after RL": after}))
    if before.ids != after.ids:
        raise ValueError("the evaluations before and after RL used different problems (eval.limit or the task "
                         "changed between the phases); run both with the same settings")
    test = paired_compare(before.scores, after.scores, "before RL", "after RL")
    minutes = (time.perf_counter() - t0) / 60
    print(test.sentence)
    print(f"SFT {sft['sft']['seconds']:.0f} s, RL {rl['rl_seconds']:.0f} s ({rl['steps']} steps), "
          + (f"this session {minutes:.1f} min (resumed: earlier sessions not counted)" if resume else
             f"total {minutes:.1f} min"))
    summary = {
        "before": _brief(before), "after": _brief(after),
        "paired_test": {"test": test.test, "p_value": test.p_value, "difference": test.difference, "ci95": test.ci95,
                        "n": before.overall.n, "verdict": test.sentence},
        "sft_seconds": sft["sft"]["seconds"], "rl_seconds": rl["rl_seconds"], "rl_steps": rl["steps"],
        # a resumed run's wall time is this session's alone: no total (sft_seconds and rl_seconds
        # are over every session)
        **({"session_minutes": minutes, "resumed": True} if resume else {"total_minutes": minutes}),
        "sft": sft["sft"], "checkpoint": rl["checkpoint"],
    }
    if (out / "summary.json").exists():  # from before the resume: kept, named for the checkpoint it scored
        earlier = json.loads((out / "summary.json").read_text()).get("checkpoint") or "earlier"
        kept = run_dir.free_name(out / f"summary-{Path(earlier).name}.json")
        (out / "summary.json").rename(kept)
        print(f"kept the earlier {out / 'summary.json'} as {kept}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'summary.json'}")
    return summary


def _sft_phase(out: Path, sft_cfg: Config, resume: bool, again: str):
    """Step 1 and its held-out eval: (sft.json's contents, the EvalResult). On --resume a finished
    SFT (its sft.json) is reused and only re-evaluated; an unfinished one starts over, its folder
    kept aside. A stop says what `again` will do; an input error before SFT wrote anything leaves
    no folder behind that would refuse the corrected command."""
    from rlvr.cli import eval_model, run_sft
    from rlvr.train import run_dir

    if resume and (out / "sft" / "sft.json").exists():
        sft = json.loads((out / "sft" / "sft.json").read_text())
        print(f"== resuming {out}: SFT done; held-out eval of its model")
        run_dir.keep_earlier_eval(out / "sft" / "eval")
        with _say_on_stop(f"during the held-out eval of the SFT model; `{again}` reuses the model and redoes it"):
            before = eval_model(sft["model"], sft_cfg, out / "sft" / "eval")
    else:
        if resume and (out / "sft").exists():  # stopped mid-SFT: it starts over, its partial folder kept aside
            aside = run_dir.free_name(out / "sft-stopped")
            (out / "sft").rename(aside)
            print(f"== resuming {out}: SFT had not finished, and is not resumable mid-phase: it starts again "
                  f"(the stopped one's metrics are in {aside})")
        print(f"== {out}\n== 1/4 supervised fine-tuning on worked solutions")
        try:
            sft, before = run_sft(sft_cfg)
        except BaseException as e:
            how = "stopped" if isinstance(e, KeyboardInterrupt) else f"failed ({type(e).__name__}: {e})"
            if (out / "sft" / "sft.json").exists():  # the model is saved: only its evaluation was cut short
                print(f"\n{how} during the held-out eval of the SFT model (saved in {out / 'sft' / 'model'}); "
                      f"`{again}` reuses it and redoes the eval")
            elif (out / "sft").exists():
                print(f"\n{how} during SFT, which is not resumable mid-phase: `{again}` starts SFT again from "
                      "scratch, then goes on to RL")
            elif not resume:  # an input error before SFT wrote anything: leave no folder
                (out / "config.yaml").unlink()  # behind that would refuse the corrected command
                out.rmdir()
            raise
    return sft, before


@contextlib.contextmanager
def _say_on_stop(where: str):
    """On Ctrl-C or an error inside: say where the run stopped and how to go on, then re-raise."""
    try:
        yield
    except (KeyboardInterrupt, Exception) as e:
        print(f"\n{'stopped' if isinstance(e, KeyboardInterrupt) else f'failed ({type(e).__name__}: {e})'} {where}")
        raise


def _step(ckpt: Path | None) -> int:
    return int(ckpt.name.removeprefix("step-")) if ckpt else 0


def _brief(result) -> dict:
    """An EvalResult for summary.json, without the per-problem lists (they are in eval.json)."""
    return {k: v for k, v in result.to_json().items() if k not in ("ids", "scores")}
