"""`rlvr demo | sft | train | eval | compare | report` — the command line.

Recipes are YAML files (see recipes/); a bare name like `demo` means the recipe shipped with
rlvr. Any field can be overridden as `section.field=value`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from rlvr.config import RECIPES, ConfigError, save_config
from rlvr.rewards.guard import WorkerStartError


def recipe_path(name: str) -> Path:
    p = Path(name)
    if p.is_file() or p.suffix in (".yaml", ".yml"):  # a folder named like a shipped recipe is not one
        return p
    shipped = RECIPES / f"{name}.yaml"
    if shipped.exists():
        return shipped
    names = ", ".join(sorted(q.stem for q in RECIPES.glob("*.yaml")))
    raise SystemExit(f"error: no recipe file {name!r}; give a path to a YAML file or one of: {names}")


def _load(recipe: str, overrides: list[str], for_eval: bool = False, **changes):
    from rlvr.config import load_config

    cfg = load_config(recipe_path(recipe), overrides, for_eval=for_eval)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def need_heldout(cfg, why: str) -> None:
    """A jsonl task is evaluated on task.eval_path only: refuse before training, not after it."""
    if cfg.task.name == "jsonl" and not cfg.task.eval_path:
        raise ConfigError(f"task.name=jsonl without task.eval_path: {why}, and a jsonl task's held-out problems are "
                          "task.eval_path; set it to a JSONL file of problems kept out of training")


def check_fresh(path: Path) -> None:
    if path.exists() and any(path.iterdir()):
        raise SystemExit(f"error: {path} already exists and is not empty; choose another with output_dir=... "
                         "(rlvr never writes over an earlier run)")


def cmd_sft(args) -> None:
    run_sft(_load(args.recipe, args.overrides))


def run_sft(cfg):
    """SFT to a plateau, save the model, evaluate it; returns (sft.json contents, held-out EvalResult)."""
    from rlvr.eval.evaluate import check_by, eval_kwargs, eval_problems
    from rlvr.logging import MetricsLog
    from rlvr.models import count_parameters, enable_checkpointing, eos_token_ids, load_policy, run_autocast
    from rlvr.rewards import resolve
    from rlvr.rollout.hf import HFEngine
    from rlvr.tasks import load_task
    from rlvr.train.sft import train_sft

    import torch

    out = Path(cfg.output_dir)
    check_fresh(out)
    reward = resolve(cfg.task.reward)
    data = load_task(cfg.task, need=("sft", "heldout"))
    check_by(eval_problems(data.heldout, cfg.eval), eval_kwargs(cfg.eval)["by"])  # before training, not after
    torch.manual_seed(cfg.seed)
    model, tok = load_policy(cfg.model.name_or_path, seed=cfg.model.init_seed, dtype=cfg.model.dtype)
    autocast = run_autocast(cfg.model)
    enable_checkpointing(model, cfg.model.gradient_checkpointing)
    out.mkdir(parents=True, exist_ok=True)  # only now that every input has been checked
    save_config(cfg, out / "config.yaml")
    print(f"model {cfg.model.name_or_path}: {count_parameters(model) / 1e6:.2f} M parameters")
    print(f"task: {data.description}")
    engine = HFEngine(model, tok, eos_token_ids(tok, model), autocast=autocast)
    res = train_sft(model, tok, engine, data.sft_train, data.sft_val, reward, cfg.task.template, cfg.sft,
                    MetricsLog(out / "metrics.jsonl"), seed=cfg.seed, autocast=autocast,
                    eval_batch_size=cfg.eval.batch_size)
    print(f"SFT budget: {res.examples} worked solutions, {res.steps} steps ({res.epochs:.1f} epochs), "
          f"{res.seconds:.0f} s; stopped at {res.stopped_because}")
    if res.curve:  # no validation set: no checks
        print("SFT plateau (validation greedy accuracy by step): "
              + ", ".join(f"{s}:{100 * a:.1f}%" + (f" ({100 * cut:.1f}% cut)" if cut >= 0.0005 else "")
                          for (s, a), cut in zip(res.curve, res.val_truncated))
              + f"; best {100 * res.best_val_accuracy:.1f}% at step {res.best_step}")
    model.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    summary = {"sft": dataclasses.asdict(res), "model": str(out / "model")}
    # written as soon as the model is whole, so that a stop in the evaluation below loses no
    # training: sft.json marks SFT done, and a resumed demo reuses the model and redoes the eval
    _write_json(out / "sft.json", summary)
    print(f"saved {out / 'model'}")
    heldout = None
    if data.heldout:
        heldout = held_out_eval(engine, tok, eval_problems(data.heldout, cfg.eval), reward, cfg, out / "eval",
                                "after SFT", str(out / "model"))
        summary["heldout"] = {k: v for k, v in heldout.to_json().items() if k not in ("ids", "scores")}
        _write_json(out / "sft.json", summary)
    return summary, heldout


def _write_json(path: Path, obj) -> None:
    from rlvr.logging import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2))


def cmd_train(args) -> dict:
    from rlvr.train.rl import train_rl

    cfg = _load(args.recipe, args.overrides)
    if cfg.sft.before_rl:  # SFT, then RL from its model, with evals and a paired test (as the demo)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("sft.before_rl=true runs SFT in one process; under torchrun run `rlvr sft` first, "
                             "then `rlvr train RECIPE sft.before_rl=false model.name_or_path=OUT/model`")
        from rlvr.demo import run_demo

        return run_demo(cfg, resume=args.resume)
    if args.eval:
        need_heldout(cfg, "`rlvr train` evaluates the model at the end (pass --no-eval to skip that)")
    result = train_rl(cfg, resume=args.resume)
    if args.eval and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 evaluates
        from rlvr.train.run_dir import keep_earlier_eval

        keep_earlier_eval(Path(cfg.output_dir) / "eval")  # a resumed run's earlier one: kept, renamed
        eval_model(result["checkpoint"], cfg, Path(cfg.output_dir) / "eval")
    return result


def held_out_eval(engine, tok, samples, reward, cfg, out: Path | None, label: str, model_name: str):
    """The recipe's held-out evaluation, printed, and written to OUT/eval.json + OUT/samples.jsonl."""
    from rlvr.eval.evaluate import eval_kwargs, evaluate, format_details, format_table

    ev = evaluate(engine, tok, samples, reward, cfg.task.template, cfg.eval.max_new_tokens, cfg.eval.batch_size,
                  samples_path=out / "samples.jsonl" if out else None, **eval_kwargs(cfg.eval, cfg.task.reward))
    print(format_table({label: ev}))
    print(format_details(ev))
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps({"model": model_name, "task": dataclasses.asdict(cfg.task),
                                                   "problems_sha256": problems_fingerprint(samples),
                                                   **ev.to_json()}, indent=2))
    return ev


def problems_fingerprint(samples) -> str:
    """A hash of the problems themselves (id, prompt, answer, in order): two evals that carry the
    same one scored the same problems, whatever file or hub split they came from."""
    import hashlib

    return hashlib.sha256(json.dumps([[s.id, s.prompt, s.answer] for s in samples]).encode()).hexdigest()


def eval_model(model_path: str, cfg, out: Path | None):
    from rlvr.eval.evaluate import check_by, eval_kwargs, eval_problems
    from rlvr.models import eos_token_ids, load_policy, run_autocast
    from rlvr.rewards import resolve
    from rlvr.rollout.hf import HFEngine
    from rlvr.tasks import load_task

    data = load_task(cfg.task, need=("heldout",))
    samples = eval_problems(data.heldout, cfg.eval)
    check_by(samples, eval_kwargs(cfg.eval)["by"])  # before the model loads
    model, tok = load_policy(model_path, dtype=cfg.model.dtype)
    engine = HFEngine(model, tok, eos_token_ids(tok, model),
                      autocast=run_autocast(cfg.model))
    return held_out_eval(engine, tok, samples, resolve(cfg.task.reward), cfg, out, Path(model_path).name or model_path,
                         model_path)


def cmd_eval(args) -> None:
    inside = model_in_run(args.model)
    if inside:
        raise SystemExit(f"error: {args.model} is a run folder, not a model; give a model in it, e.g. its last: "
                         f"--model {inside}")
    # refused before any model loads; --out RUN/eval would replace the run's own final eval
    out = Path(args.out) if args.out else None
    taken = [out / name for name in ("eval.json", "samples.jsonl") if out and (out / name).exists()]
    if taken:
        raise SystemExit(f"error: {taken[0]} already exists; give another --out, or remove it first "
                         "(rlvr eval never writes over an earlier evaluation)")
    overrides = list(args.overrides)
    if args.task:
        overrides.append(f"task.name={args.task}")
    for flag, name in (("samples", "samples"), ("temperature", "temperature"), ("seeds", "seeds"), ("by", "by")):
        if getattr(args, flag) is not None:
            overrides.append(f"eval.{name}={getattr(args, flag)}")
    recipe = args.recipe
    if recipe is None and args.task is None:  # a model rlvr trained: the recipe of its run, so it
        recipe = run_recipe(args.model)        # is scored with the template and task it trained on
        if recipe is not None:
            print(f"recipe: {recipe} (the run's own; --recipe overrides it)")
    if recipe is None:  # the book's MATH-500 evaluation for the math tasks, else the demo's
        recipe = "math-qwen3-0.6b" if args.task in ("math", "math500", "gsm8k") else "demo"
        if args.task == "gsm8k" and args.by is None:
            overrides.append("eval.by=")  # GSM8K problems have no subject or level
    cfg = _load(recipe, overrides, for_eval=True)
    eval_model(args.model, cfg, out)


def model_in_run(path: str) -> Path | None:
    """For a folder rlvr wrote that is a run, not a model (no config.json, no LoRA adapter): the
    last model in it, its latest checkpoint (train, or a demo's rl/) or its SFT model; else None."""
    from rlvr.train import checkpoint

    here = Path(path).expanduser()
    if not here.is_dir() or (here / "config.json").exists() or (here / "adapter_config.json").exists():
        return None
    sft = [m for m in (here / "model", here / "sft" / "model") if (m / "config.json").exists()]
    return checkpoint.latest(here) or checkpoint.latest(here / "rl") or (sft[0] if sft else None)


def run_recipe(model_path: str) -> str | None:
    """The config.yaml of the run a model folder belongs to: RUN/model (sft), RUN/checkpoints/step-N
    (train), RUN/sft/model and RUN/rl/checkpoints/step-N (demo); None for anything else."""
    here = Path(model_path).expanduser()
    if not here.is_dir():
        return None
    for folder in (here, here.parent, here.parent.parent):
        if (folder / "config.yaml").is_file():
            return str(folder / "config.yaml")
    return None


def cmd_compare(args) -> None:
    from rlvr.eval.compare import compare_runs

    compare_runs(args.a, args.b)


def cmd_report(args) -> None:
    from rlvr.eval.report import write_report

    path = write_report(Path(args.run), Path(args.out) if args.out else None)
    print(f"wrote {path}")


def cmd_verify(args) -> None:
    """Re-score saved completions: each line {"gold", "response"[, "problem"]} gains "correct"."""
    from rlvr.rewards.math import verify_batch

    path = Path(args.file)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if args.timeout <= 0 or args.workers < 1:
        raise ValueError("--timeout must be > 0 seconds and --workers >= 1")
    from rlvr.tasks.jsonl import iter_jsonl

    rows = []
    for n, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path} line {n}: expected a JSON object with \"gold\" and \"response\"")
        if isinstance(row.get("gold"), (int, float)) and not isinstance(row.get("gold"), bool):
            row["gold"] = str(row["gold"])
        for key in ("gold", "response"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"{path} line {n}: field {key!r} is missing or not a string; "
                                 'each line needs {"gold": "...", "response": "..."}')
        rows.append(row)
    verdicts = verify_batch([(r["gold"], r["response"], r.get("problem")) for r in rows],
                            mode="lenient" if args.lenient else "strict", workers=args.workers, timeout=args.timeout)
    text = "".join(json.dumps({**r, "correct": v}, ensure_ascii=False) + "\n" for r, v in zip(rows, verdicts))
    if args.out:
        out = Path(args.out)
        if out.resolve() == path.resolve():
            raise ValueError(f"--out {out} is the input file; write the scores to another file")
        from rlvr.logging import write_text_atomic

        write_text_atomic(out, text)
        print(f"{sum(verdicts)}/{len(verdicts)} correct; wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if verdicts.failures:  # scored incorrect, but not judged: say how many, so a rate is read with it
        print(f"{verdicts.failures} of {len(verdicts)} checks did not finish (over --timeout {args.timeout:g} s, or an "
              "error in the checker) and are marked incorrect", file=sys.stderr)


def cmd_demo(args) -> None:
    from rlvr.demo import run_demo

    overrides = list(args.overrides) + ([f"output_dir={args.out}"] if args.out else [])
    run_demo(_load("demo", overrides), resume=args.resume)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="rlvr", description="RL from verifiable rewards for language models.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="SFT -> eval -> GRPO -> eval on the embedded tiny model (CPU, minutes)")
    p.add_argument("--out", help="output folder (default: runs/demo)")
    p.add_argument("--resume", action="store_true", help="continue a stopped demo in --out (give the same "
                   "overrides; `rlvr train OUT/config.yaml --resume` needs none)")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    p.set_defaults(fn=cmd_demo)
    p = sub.add_parser("sft", help="supervised fine-tuning on worked solutions")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=cmd_sft)
    p = sub.add_parser("train", help="RL from a recipe (GRPO, Dr. GRPO, DAPO, PPO, RLOO, REINFORCE++)")
    p.add_argument("recipe")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    p.add_argument("--no-eval", dest="eval", action="store_false", help="skip the held-out eval at the end")
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("eval", help="greedy held-out accuracy of a model")
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--task", help="task name (default: the recipe's)")
    p.add_argument("--recipe", help="recipe for task, reward and eval settings (default: math-qwen3-0.6b for "
                                    "--task math500 / math / gsm8k: book prompt, math verifier, greedy up to 2048 "
                                    "tokens, by subject and level; demo otherwise)")
    p.add_argument("--out", help="folder for eval.json and samples.jsonl (refused if it holds either already)")
    p.add_argument("--samples", type=int, help="k completions per problem (avg@k, pass@k, maj@k, best@k)")
    p.add_argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    p.add_argument("--seeds", type=int, help="repeat the sampling with this many seeds")
    p.add_argument("--by", help="comma-separated metadata fields to break scores down by")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("compare", help="paired comparison of two evals on the same problems")
    p.add_argument("a", help="eval.json, or a folder holding one (a run, its eval/ or rl/eval/)")
    p.add_argument("b")
    p.set_defaults(fn=cmd_compare)
    p = sub.add_parser("report", help="HTML page and PNG plots of a training run")
    p.add_argument("run", help="run folder (with metrics.jsonl, or a demo folder)")
    p.add_argument("--out", help="output folder (default: RUN/report)")
    p.set_defaults(fn=cmd_report)
    p = sub.add_parser("verify", help="re-score completions: JSONL lines {gold, response} gain \"correct\"")
    p.add_argument("file", help="JSONL with \"gold\" and \"response\" (and optionally \"problem\") per line")
    p.add_argument("--out", help="write here instead of stdout")
    p.add_argument("--lenient", action="store_true",
                   help="accept an unboxed final answer (\"the answer is X\", or the last number)")
    p.add_argument("--workers", type=int, default=2, help="verifier processes (default 2)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per check; a timeout scores false")
    p.set_defaults(fn=cmd_verify)
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in sub.choices:  # overrides may follow options: `rlvr train demo --resume rl.lr=1`
        # parse_intermixed_args refuses a parser with subparsers, not the subcommand's own parser
        args = sub.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
    else:
        args = ap.parse_args(argv)  # no command, or help: argparse's own message
    try:
        args.fn(args)
    except (ConfigError, OSError, ValueError, KeyError, ImportError, WorkerStartError) as e:  # OSError: a path, a hub id
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
