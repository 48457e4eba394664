"""`rlvr report RUN_DIR`: one self-contained HTML page that says whether an RL run went well.

It reads what the trainer left behind -- metrics.jsonl (one row per RL step), rollouts.jsonl
(sampled completions), eval/eval.json (final eval) or, for a demo / `sft.before_rl` run,
summary.json (before/after) with rl/ and sft/ subfolders -- and writes into RUN_DIR/report/:

  report.html  failure-mode checks first, the eval table, the curves (PNG as data URIs), and
               completions early vs late, correct vs wrong; no external resources
  *.png        the same curves as files
  report.json  the flags and a summary of every plotted series, for scripts and tests

The failure-mode checks live in flags.py. Any file or metric may be missing; only a run
folder without metrics.jsonl is an error.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

from rlvr.eval.stats import format_p

from rlvr.eval.flags import (EARLY_STEPS, ENTROPY, HACKING, HELDOUT, LENGTH, TRUNCATION, WINDOW, is_number, rolling_mean,
                             run_checks, series, summarize)

SAMPLES_PER_CELL = 3  # completions shown per (early/late, correct/wrong) cell


# ---------------------------------------------------------------------------- plots

@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    ylabel: str
    lines: tuple[tuple[str, str], ...]  # (metric key, legend label)
    flag: str | None = None  # the check whose onset is marked on it
    log_y: bool = False  # for a quantity that falls by orders of magnitude (SFT loss)


PLOTS = [
    Plot("reward.png", "Reward of training rollouts", "mean reward", (("reward", "reward"),), HACKING),
    Plot("accuracy.png", "Accuracy of training rollouts (task reward alone)", "fraction correct",
         (("accuracy", "accuracy"),)),
    Plot("length.png", "Response length", "tokens", (("length_mean", "mean"), ("length_max", "max")), LENGTH),
    Plot("truncated.png", "Responses cut at max_new_tokens", "fraction of responses", (("truncated", "truncated"),),
         TRUNCATION),
    Plot("entropy.png", "Policy entropy", "nats per token", (("entropy", "entropy"),), ENTROPY),
    Plot("kl.png", "KL divergence", "KL per token", (("kl", "to the reference"), ("approx_kl", "old -> new (k3)"))),
    Plot("clip_frac.png", "Clip fraction", "fraction of tokens clipped", (("clip_frac", "clip_frac"),)),
    Plot("grad_norm.png", "Gradient norm before clipping", "L2 norm", (("grad_norm", "grad_norm"),)),
    Plot("value_loss.png", "Critic value loss (PPO)", "loss", (("value_loss", "value_loss"),)),
]
SFT_PLOT = Plot("sft_loss.png", "SFT loss (before RL)", "cross-entropy per token (log scale)", (("loss", "loss"),),
               log_y=True)
COLORS = ("tab:blue", "tab:orange")


def _new_axes(title: str, ylabel: str):
    fig = Figure(figsize=(7, 3.2), dpi=100, layout="constrained")
    ax = fig.subplots()
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _mark(ax, flag: dict | None) -> None:
    if flag:
        ax.axvline(flag["step"], color="crimson", ls="--", lw=1.2, label=f"{flag['name']} (step {flag['step']})")


def draw(rows: list[dict], plot: Plot, flag: dict | None = None) -> bytes | None:
    """Raw per-step values faint, their rolling mean bold; None when no line has data."""
    fig, ax = _new_axes(plot.title, plot.ylabel)
    found = [(label, color, *series(rows, key)) for (key, label), color in zip(plot.lines, COLORS)]
    found = [(label, color, steps, values) for label, color, steps, (values,) in found if steps]
    if not found:
        return None
    for i, (label, color, steps, values) in enumerate(found):
        ax.plot(steps, values, color=color, lw=0.8, alpha=0.3)
        ax.plot(steps, rolling_mean(values), color=color, lw=2.2, label=f"{label} (rolling mean, {WINDOW} steps)")
        if min(values) == max(values):  # e.g. KL with kl_coef = 0: say so rather than draw a bare line
            ax.annotate(f"{label}: {values[0]:g} at every step", (0.5, 0.55 - 0.12 * i), xycoords="axes fraction",
                        ha="center", color=color)
    if plot.log_y and all(v > 0 for *_, values in found for v in values):
        ax.set_yscale("log")
    elif all(v >= 0 for *_, values in found for v in values):
        ax.set_ylim(bottom=0)  # a rate, a length, a norm: its distance from 0 is part of the picture
    _mark(ax, flag)
    ax.legend(fontsize=8)
    return _png(fig)


def draw_heldout(rows: list[dict], flag: dict | None = None) -> bytes | None:
    """Periodic held-out accuracy (each point already averages the held-out set, so it is drawn
    as it is, bold) against the rolling training accuracy (faint) for context."""
    h_steps, (heldout,) = series(rows, "heldout_accuracy")
    if not h_steps:
        return None
    fig, ax = _new_axes("Held-out accuracy (periodic eval)", "accuracy")
    steps, (accuracy,) = series(rows, "accuracy")
    if steps:
        ax.plot(steps, rolling_mean(accuracy), color="tab:gray", lw=1.2, alpha=0.6,
                label=f"training rollouts (rolling mean, {WINDOW} steps)")
    ax.plot(h_steps, heldout, color="tab:green", lw=2.2, marker="o", label="held-out")
    _mark(ax, flag)
    ax.legend(fontsize=8)
    return _png(fig)


# ---------------------------------------------------------------------------- the run folder

@dataclass
class Run:
    """What a run folder holds; empty or None where a file is missing."""

    root: Path
    rows: list[dict]  # RL metric rows
    sft_rows: list[dict]  # SFT metric rows (a demo's sft/ phase)
    rollouts: list[dict]
    summary: dict | None  # demo / sft.before_rl: before and after RL
    final_eval: dict | None  # eval/eval.json of a `rlvr train` run
    found: list[str]  # the files read, relative to root


def _read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a file, one per line; [] if it is missing. A line that is not a JSON
    object (the half-written last line of a live run) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def load_run(run_dir: Path) -> Run:
    """A `rlvr train` folder (metrics.jsonl at the top) or a demo one (rl/metrics.jsonl)."""
    run_dir = Path(run_dir)
    rl_dir = next((d for d in (run_dir, run_dir / "rl") if (d / "metrics.jsonl").is_file()), None)
    if rl_dir is None:
        raise FileNotFoundError(
            f"{run_dir}: no metrics.jsonl here or in {run_dir / 'rl'}; expected the folder of a `rlvr train` run "
            "(metrics.jsonl, one JSON row per RL step) or of `rlvr demo` (rl/metrics.jsonl)")
    metrics = _read_jsonl(rl_dir / "metrics.jsonl")
    paths = {"metrics": rl_dir / "metrics.jsonl", "rollouts": rl_dir / "rollouts.jsonl",
             "summary": run_dir / "summary.json", "eval": rl_dir / "eval" / "eval.json",
             "sft": run_dir / "sft" / "metrics.jsonl"}
    sft_rows = [r for r in metrics if r.get("phase") == "sft"] + _read_jsonl(paths["sft"])
    return Run(run_dir, [r for r in metrics if r.get("phase", "rl") != "sft"], sft_rows,
               _read_jsonl(paths["rollouts"]), _read_json(paths["summary"]), _read_json(paths["eval"]),
               [str(p.relative_to(run_dir)) for p in paths.values() if p.is_file()])


def _wall_time(run: Run) -> str:
    s = run.summary or {}
    if is_number(s.get("total_minutes")):
        parts = [f"SFT {s['sft_seconds']:.0f} s" if is_number(s.get("sft_seconds")) else "",
                 f"RL {s['rl_seconds']:.0f} s" if is_number(s.get("rl_seconds")) else ""]
        return f"{s['total_minutes']:.1f} min" + (f" ({', '.join(p for p in parts if p)})" if any(parts) else "")
    elapsed = [r["elapsed_s"] for r in run.rows if is_number(r.get("elapsed_s"))]
    return f"RL {elapsed[-1] / 60:.1f} min" if elapsed else "unknown"


# ---------------------------------------------------------------------------- HTML

CSS = """body{font:14px/1.45 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0}th{background:#f4f4f4}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
.flagged{background:#fde2e1}.ok td:last-child{color:#277a3e}.skip td:last-child,p.skip{color:#888}
img{max-width:100%;display:block;margin:.8em 0}.meta{color:#555}
pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap;margin:.2em 0 .8em}"""

esc = html.escape


def _header_html(run: Run) -> str:
    steps = [r["step"] for r in run.rows if is_number(r.get("step"))]
    last = f", last step {max(steps)}" if steps else ""
    return (f"<h1>RL run report</h1><p class='meta'>run <code>{esc(str(run.root))}</code> &middot; "
            f"{len(run.rows)} RL steps logged{last} &middot; wall time {esc(_wall_time(run))}<br>"
            f"found: {esc(', '.join(run.found))}</p>")


def _checks_html(checks: list[dict]) -> str:
    css = {"flagged": "flagged", "none detected": "ok", "not checked": "skip"}
    rows = "".join(
        f"<tr class='{css[c['status']]}'><td>{esc(c['name'])}</td><td>{esc(c['rule'])}</td><td><b>{esc(c['status'])}"
        + (f" at step {c['flag']['step']}" if c["flag"] else "") + f"</b><br>{esc(c['detail'])}</td></tr>"
        for c in checks)
    return f"<h2>Failure modes</h2><table><tr><th>check</th><th>rule</th><th>result</th></tr>{rows}</table>"


def _acc_ci(s: dict | None) -> str:
    """'61.2% [58.1, 64.2]', the CLI table's format; a dash where a value is missing."""
    if not s or not is_number(s.get("accuracy")):
        return "&mdash;"
    ci = s.get("ci95")
    if isinstance(ci, list) and len(ci) == 2 and all(is_number(v) for v in ci):
        return f"{100 * s['accuracy']:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return f"{100 * s['accuracy']:.1f}%"


def _num(s: dict | None, key: str, fmt: str) -> str:
    return format(s[key], fmt) if s and is_number(s.get(key)) else "&mdash;"


def _eval_rows(columns: dict[str, dict]) -> str:
    """One table row for the whole set and one per bucket; a column per named result."""
    first = next(iter(columns.values()))
    buckets = dict.fromkeys(k for c in columns.values() for k in (c.get("by_bucket") or {}))
    out = ""
    for name in ["all", *buckets]:
        cells = [c if name == "all" else (c.get("by_bucket") or {}).get(name) for c in columns.values()]
        n = first if name == "all" else next((c for c in cells if c), None)
        out += (f"<tr><td>{esc(name)}</td><td>{_num(n, 'n', 'd')}</td>"
                + "".join(f"<td>{_acc_ci(c)}</td><td>{_num(c, 'mean_length', '.1f')}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{esc(k)}: accuracy [95% CI]</th><th>length</th>" for k in columns)
    return f"<table><tr><th>held-out</th><th>n</th>{head}</tr>{out}</table>"


def _paired_line(test: dict) -> str:
    if not is_number(test.get("difference")):
        return ""
    d, ci = 100 * test["difference"], test.get("ci95") or []
    text = f"after &minus; before: {d:+.1f} points"
    if len(ci) == 2 and all(is_number(v) for v in ci):
        text += f" (95% CI {100 * ci[0]:+.1f} to {100 * ci[1]:+.1f})"
    if is_number(test.get("p_value")):
        text += f", {esc(str(test.get('test', 'paired test')))} {esc(format_p(test['p_value']))}"
    if is_number(test.get("n")):
        text += f", n = {test['n']}"
    if is_number(test.get("gained")) and is_number(test.get("lost")):
        text += f" ({test['gained']} problems gained, {test['lost']} lost)"
    return f"<p>{text}</p>"


def _eval_html(run: Run) -> str:
    if run.summary and (run.summary.get("before") or run.summary.get("after")):
        columns = {"before RL": run.summary.get("before") or {}, "after RL": run.summary.get("after") or {}}
        return ("<h2>Held-out evaluation: before / after RL</h2>" + _eval_rows(columns)
                + _paired_line(run.summary.get("paired_test") or {}))
    if run.final_eval:
        return "<h2>Held-out evaluation: final model</h2>" + _eval_rows({"final": run.final_eval})
    return "<h2>Held-out evaluation</h2><p class='skip'>no summary.json or eval/eval.json in this run.</p>"


def _plots_html(images: dict[str, bytes]) -> str:
    if not images:
        return "<h2>Training curves</h2><p class='skip'>no metric to plot.</p>"
    return "<h2>Training curves</h2>" + "".join(
        f"<img alt='{esc(name)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        for name, png in images.items())


def _samples_html(rollouts: list[dict]) -> str:
    """A few distinct completions of the first and last logged step, correct vs wrong: by the
    logged `correct` (the task reward alone, >= 1), or, in rollouts.jsonl written before it was
    logged, by reward > 0 (which a shaping bonus such as format_soft can reach when wrong)."""
    steps = sorted({r["step"] for r in rollouts if is_number(r.get("step"))})
    if not steps:
        return "<h2>Sample completions</h2><p class='skip'>no rollouts.jsonl in this run.</p>"
    out = "<h2>Sample completions</h2>"
    for label, step in dict.fromkeys([("early", steps[0]), ("late", steps[-1])]):
        for verdict, good in (("correct", True), ("wrong", False)):
            picked = {}
            for r in rollouts:
                if r.get("step") != step or not is_number(r.get("reward")):
                    continue
                right = r["correct"] if isinstance(r.get("correct"), bool) else r["reward"] > 0
                if right == good:
                    picked.setdefault((r.get("prompt"), r.get("completion")), r)
            shown = list(picked.values())[:SAMPLES_PER_CELL]
            out += f"<h3>{label} (step {step}), {verdict}: {len(shown)} of {len(picked)} distinct</h3>"
            out += "".join(
                f"<p class='meta'>prompt <code>{esc(str(r.get('prompt')))}</code> &middot; answer "
                f"<code>{esc(str(r.get('answer')))}</code> &middot; reward {r['reward']:g} &middot; "
                f"{esc(str(r.get('finish_reason')))}</p><pre>{esc(str(r.get('completion')))}</pre>" for r in shown)
    return out


# ---------------------------------------------------------------------------- the report

def write_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write report.html, report.json and the PNG curves of a run into out_dir (default
    run_dir/report); returns the HTML path. Raises FileNotFoundError when the run has no
    metrics.jsonl (neither at the top nor under rl/)."""
    run = load_run(Path(run_dir))
    out_dir = Path(out_dir) if out_dir is not None else run.root / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    checks = run_checks(run.rows)
    flags = {c["name"]: c["flag"] for c in checks if c["flag"]}
    images = {p.file: draw(run.rows, p, flags.get(p.flag)) for p in PLOTS}
    images["heldout.png"] = draw_heldout(run.rows, flags.get(HELDOUT))
    images[SFT_PLOT.file] = draw(run.sft_rows, SFT_PLOT)
    images = {name: png for name, png in images.items() if png is not None}
    for name, png in images.items():
        (out_dir / name).write_bytes(png)
    keys = dict.fromkeys([k for p in PLOTS for k, _ in p.lines] + ["heldout_accuracy"])
    summaries = {k: summarize(v[0]) for k in keys if (v := series(run.rows, k)[1])[0]}
    report = {"run_dir": str(run.root), "steps": len(run.rows), "window": WINDOW, "early_steps": EARLY_STEPS,
              "flags": [c["flag"] for c in checks if c["flag"]], "checks": checks, "series": summaries,
              "plots": list(images)}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    body = (_header_html(run) + _checks_html(checks) + _eval_html(run) + _plots_html(images)
            + _samples_html(run.rollouts))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rlvr report: "
            f"{esc(run.root.name)}</title><style>{CSS}</style></head><body>{body}</body></html>")
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
