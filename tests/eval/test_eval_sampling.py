"""k samples per problem, seeds, breakdowns, and `rlvr compare`, on a real tiny model.

The metrics are recomputed by brute force from the per-problem rows evaluate() writes to
samples.jsonl, so the numbers in eval.json are checked against what was actually sampled."""

import json

import numpy as np
import pytest

from rlvr.eval.compare import compare_runs, paired_compare
from rlvr.eval.evaluate import evaluate
from rlvr.models import eos_token_ids, load_policy
from rlvr.rollout.hf import HFEngine
from rlvr.types import Sample


def digit_reward(completion, sample):
    """1 when the completion contains the answer's digit: about a third of samples score."""
    return float(sample.answer in completion)


@pytest.fixture(scope="module")
def setup(tiny_llama_dir):
    model, tok = load_policy(str(tiny_llama_dir), dtype="float32")
    samples = [Sample(prompt=f"{i}+{i % 3}=", answer=str(i % 3), id=f"p{i}", meta={"kind": "even" if i % 2 else "odd"})
               for i in range(12)]
    # the answer digits end a response too: a random model's responses would otherwise mostly be cut
    # at 8 tokens (scored 0 as unfinished), and whether any sample scored would be the stream's luck
    digits = tok.convert_tokens_to_ids(["0", "1", "2"])
    return HFEngine(model, tok, eos_token_ids(tok, model) + digits), tok, samples


def run(setup, tmp_path, name, **kw):
    engine, tok, samples = setup
    path = tmp_path / name / "samples.jsonl"
    res = evaluate(engine, tok, samples, digit_reward, "plain", 8, batch_size=16, samples_path=path,
                   extract=lambda text: text[-1:] or None, **kw)
    return res, [json.loads(line) for line in path.read_text().splitlines()]


def test_k_samples_and_seeds_match_a_brute_force_recount(setup, tmp_path):
    res, rows = run(setup, tmp_path, "a", k=4, temperature=1.0, seeds=3, by=["kind"])
    assert len(rows) == 12 * 3 and all(len(r["completions"]) == 4 for r in rows)
    per_seed = [[r for r in rows if r["seed"] == s] for s in range(3)]
    assert per_seed[0][0]["completions"] != per_seed[1][0]["completions"] or \
        per_seed[0][1]["completions"] != per_seed[1][1]["completions"]  # seeds sample differently
    avg = np.mean([[sum(r["rewards"]) / 4 for r in seed] for seed in per_seed])
    any_ok = np.mean([[float(any(x >= 1 for x in r["rewards"])) for r in seed] for seed in per_seed])

    def best_of(r):  # brute force: the finished response with the highest mean logprob, 0 when none finished
        finished = [j for j, f in enumerate(r["finish_reasons"]) if f != "length"]
        return r["rewards"][max(finished, key=lambda j: r["mean_logprobs"][j])] if finished else 0.0

    best = np.mean([[best_of(r) for r in seed] for seed in per_seed])

    def maj(r):  # brute force: most frequent answer of a finished response (first seen wins ties), its reward
        votes = [a if f != "length" else None for a, f in zip(r["extracted"], r["finish_reasons"])]
        cast = [a for a in votes if a is not None]
        if not cast:
            return 0.0
        top = max(cast, key=lambda a: (cast.count(a), -votes.index(a)))
        return r["rewards"][votes.index(top)]

    majority = np.mean([[maj(r) for r in seed] for seed in per_seed])
    m = res.overall.metrics
    assert m["avg@4"] == pytest.approx(avg) and res.overall.accuracy == pytest.approx(avg)
    assert m["pass@4"] == pytest.approx(any_ok) and m["best@4"] == pytest.approx(best)
    assert m["maj@4"] == pytest.approx(majority)
    assert 0 < avg < 1  # the recount is not trivially all-0 or all-1
    assert len(res.overall.per_seed) == 3 and len(res.scores) == 3
    lo, hi = res.overall.ci95
    assert lo < res.overall.accuracy < hi
    kinds = res.breakdown["kind"]
    assert set(kinds) == {"even", "odd"} and kinds["even"].n == kinds["odd"].n == 6


def test_greedy_with_several_seeds_is_refused(setup):
    engine, tok, samples = setup
    with pytest.raises(ValueError, match="temperature"):
        evaluate(engine, tok, samples, digit_reward, "plain", 8, seeds=2)


def _write(tmp_path, name, res):
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "eval.json").write_text(json.dumps(res.to_json()))
    return d


def test_compare_refuses_different_settings_and_problems(setup, tmp_path):
    greedy, _ = run(setup, tmp_path, "g")
    sampled, _ = run(setup, tmp_path, "s", k=2, temperature=1.0)
    a, b = _write(tmp_path, "g", greedy), _write(tmp_path, "s", sampled)
    with pytest.raises(ValueError, match="settings.k is 1 .* but 2"):
        compare_runs(a, b)
    engine, tok, samples = setup
    fewer = evaluate(engine, tok, samples[:10], digit_reward, "plain", 8)
    with pytest.raises(ValueError, match="different problems"):
        compare_runs(a, _write(tmp_path, "f", fewer))
    same = compare_runs(a, a)
    assert same.test == "McNemar exact" and same.difference == 0 and same.p_value == 1
    other_task = tmp_path / "t"
    other_task.mkdir()
    (other_task / "eval.json").write_text(json.dumps({**greedy.to_json(), "task": {"name": "jsonl"}}))
    with pytest.raises(ValueError, match=r"held-out set is \(None,\) .* but \('jsonl',\)"):
        compare_runs(a, other_task)
    with pytest.raises(ValueError, match="same problems and seeds"):
        paired_compare(greedy.scores, fewer.scores)


def test_compare_refuses_two_files_whose_problems_differ_under_the_same_ids(setup, tmp_path):
    """Ids like "test.jsonl:12" name a line, not a file: two evals of data/v1/test.jsonl and
    data/v2/test.jsonl carry the same ids. The problems' fingerprint (id, prompt, answer) tells them apart."""
    import dataclasses

    from rlvr.cli import problems_fingerprint

    greedy, _ = run(setup, tmp_path, "g")
    _, _, samples = setup
    edited = [dataclasses.replace(samples[0], answer=samples[0].answer + "0"), *samples[1:]]  # one answer differs
    assert problems_fingerprint(edited) != problems_fingerprint(samples)
    folders = []
    for name, problems in (("v1", samples), ("v2", edited)):
        d = tmp_path / name
        d.mkdir()
        (d / "eval.json").write_text(json.dumps({**greedy.to_json(), "problems_sha256": problems_fingerprint(problems)}))
        folders.append(d)
    with pytest.raises(ValueError, match="scored different problems"):
        compare_runs(*folders)
    assert compare_runs(folders[0], folders[0]).p_value == 1


def test_paired_compare_picks_the_test_and_finds_a_real_gain():
    rng = np.random.default_rng(0)
    a = (rng.random((1, 300)) < 0.5).astype(float)
    b = a.copy()
    b[0, rng.choice(np.flatnonzero(a[0] == 0), 40, replace=False)] = 1  # 40 problems fixed, none broken
    greedy = paired_compare(a, b, "A", "B")
    assert greedy.test == "McNemar exact" and greedy.p_value < 1e-6 and greedy.sentence.startswith("B is better")
    sampled = paired_compare(np.vstack([a[0] * 0.75, a[0] * 0.5]), np.vstack([b[0] * 0.75, b[0] * 0.5]))
    assert "permutation" in sampled.test and sampled.p_value < 0.01 and sampled.difference > 0


def test_an_auto_template_is_saved_as_the_one_used(setup):
    """eval.json records the template the prompts were rendered with, not "auto": two evals of
    models whose tokenizers resolve "auto" differently prompted differently, and compare must see it."""
    engine, tok, samples = setup
    res = evaluate(engine, tok, samples[:2], digit_reward, "auto", 8)
    assert res.settings.template == ("chat" if getattr(tok, "chat_template", None) else "plain")
