"""SFT (train/sft.py): its loss against Hugging Face's, micro-batching, and the plateau rule.

The loss goes through RL's chunked logprob path, so the first two tests hold it to HF's
cross-entropy and to the unsplit gradient at float32 tolerance. The plateau tests script the
validation scores (a stand-in for evaluate), so each stopping rule is checked step by step.
"""

import types

import pytest
import torch

import rlvr.train.sft as sft
from rlvr.config import load_config
from rlvr.models import load_policy
from rlvr.rewards import resolve
from rlvr.tasks import load_task
from rlvr.train.forward import _fused_parts, token_stats


class Rows:
    """A MetricsLog stand-in that keeps every row and, with a model, a copy of its weights then."""

    def __init__(self, model=None):
        self.model, self.rows, self.states = model, [], []

    def log(self, row):
        self.rows.append(row)
        if self.model is not None:
            self.states.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})


def same_weights(model, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def setup(overrides=(), n=40):
    cfg = load_config(None, [f"task.sft_examples={n}", "task.sft_val=0", "sft.batch_size=8", "sft.warmup_steps=0",
                             *overrides])
    data = load_task(cfg.task, need=("sft",))
    torch.manual_seed(0)
    model, tok = load_policy("embedded")
    return cfg, data.sft_train, model, tok


def a_batch(n=9):
    """Arithmetic worked solutions of different lengths, right-padded, and a model whose logits
    are far from uniform (its output layer scaled up), so a token counted wrong moves the loss."""
    cfg, train, model, tok = setup()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    input_ids, mask, labels = sft.collate(sft.encode(train[:n], tok, "plain"), tok.pad_token_id, model.device)
    assert len(set(mask.sum(1).tolist())) > 1  # rows of several lengths: padding is exercised
    return model, input_ids, mask, labels


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_loss_and_gradient_equal_hugging_faces_cross_entropy():
    model, input_ids, mask, labels = a_batch()
    assert _fused_parts(model) is not None  # the chunked output-layer path, not the model's own logits
    ref = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    ref.backward()
    want = grads(model)
    model.zero_grad(set_to_none=True)
    got = sft.sft_gradients(model, input_ids, mask, labels)
    # measured 19.597454 both, bit for bit; counting one prompt token more would give 19.612092
    torch.testing.assert_close(got, ref.detach(), rtol=1e-6, atol=0)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, want[name], rtol=1e-4, atol=1e-6, msg=name)  # measured 1e-7 relative


def test_a_row_with_an_empty_prompt_is_scored_as_hugging_face_scores_it():
    """A solution with no prompt before it labels token 0, which nothing predicts: HF's loss
    shifts it away and so must ours (counting it would add a token with a made-up logprob)."""
    cfg, train, model, tok = setup()
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(8.0)
    rows = sft.encode(train[:4], tok, "plain")
    rows[1] = (rows[1][0][rows[1][1]:], 0)  # the solution and EOS alone, every token labelled
    input_ids, mask, labels = sft.collate(rows, tok.pad_token_id, model.device)
    assert labels[1, 0] != -100
    ref = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(sft.sft_gradients(model, input_ids, mask, labels), ref.detach(), rtol=1e-6, atol=0)


def test_micro_batches_give_the_whole_batchs_loss_and_gradient():
    """Rows of different lengths: a per-micro-batch token mean would weight a short row's tokens
    more than the whole batch does, and fail this; the global token count does not."""
    model, input_ids, mask, labels = a_batch()
    whole = sft.sft_gradients(model, input_ids, mask, labels, micro_batch_size=0)
    want = grads(model)
    for size in (1, 4):
        model.zero_grad(set_to_none=True)
        split = sft.sft_gradients(model, input_ids, mask, labels, micro_batch_size=size)
        torch.testing.assert_close(split, whole, rtol=1e-6, atol=0)
        for name, g in grads(model).items():
            torch.testing.assert_close(g, want[name], rtol=1e-4, atol=1e-6, msg=f"{name}, micro-batch {size}")


def test_train_sft_forwards_micro_batch_size_rows_at_a_time(monkeypatch):
    sizes, rows = [], {}

    def counted(model, mb, *args, **kwargs):
        sizes.append(len(mb))
        return token_stats(model, mb, *args, **kwargs)

    monkeypatch.setattr(sft, "token_stats", counted)
    for size in (0, 3):
        cfg, train, model, tok = setup(["sft.max_steps=2", f"sft.micro_batch_size={size}"])
        rows[size] = Rows()
        sft.train_sft(model, tok, None, train, [], resolve("exact"), "plain", cfg.sft, rows[size])
    assert sizes == [8, 8] + [3, 3, 2] * 2  # two steps of batch 8: whole, then in threes
    for a, b in zip(rows[0].rows, rows[3].rows, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def scripted(scores, seen=None):
    """evaluate's stand-in: the next scripted (accuracy, truncated) for each check; `seen` gets
    its keyword arguments."""
    it = iter(scores)

    def evaluate(engine, tokenizer, samples, reward, template, max_new_tokens, **kwargs):
        if seen is not None:
            seen.append(kwargs)
        acc, truncated = next(it)
        return types.SimpleNamespace(overall=types.SimpleNamespace(accuracy=acc, truncated=truncated))

    return evaluate


def run(monkeypatch, scores, overrides, val=("a validation problem",), **kwargs):
    cfg, train, model, tok = setup(overrides)
    monkeypatch.setattr(sft, "evaluate", scripted(scores, kwargs.pop("seen", None)))
    log = Rows(model)
    res = sft.train_sft(model, tok, None, train, list(val), resolve("exact"), "plain", cfg.sft, log, **kwargs)
    return res, model, log


def test_without_a_validation_set_there_are_no_checks_and_the_final_weights_stay(monkeypatch):
    """Before: every check scored 0.0, the first became "best", two ties made a plateau, and the
    step-1 weights came back after 3 steps of a 5-step run."""
    res, model, log = run(monkeypatch, [], ["sft.max_steps=5", "sft.eval_every=1", "sft.patience=2"], val=())
    assert res.steps == 5 and res.curve == [] and res.best_step == 5
    assert res.stopped_because == "max_steps (no validation set: no plateau checks; the final weights are kept)"
    assert all("val_accuracy" not in r for r in log.rows)
    assert same_weights(model, log.states[-1]) and not same_weights(model, log.states[0])


def test_checks_at_zero_are_no_plateau(monkeypatch):
    """Zeros (nothing learned yet, or every solution cut at sft.max_new_tokens) count for nothing;
    after the first score above 0 a check without a new best does."""
    scores = [(0.0, 1.0), (0.0, 1.0), (0.0, 0.5), (0.2, 0.1), (0.1, 0.0), (0.2, 0.0), (0.3, 0.0)]
    res, model, log = run(monkeypatch, scores, ["sft.max_steps=10", "sft.eval_every=1", "sft.patience=2"])
    assert res.stopped_because == "plateau" and res.steps == 6  # before: a plateau at step 3, step 1's weights
    assert (res.best_step, res.best_val_accuracy) == (4, 0.2)
    assert same_weights(model, log.states[3])
    assert res.curve == [(s, a) for s, (a, _) in zip(range(1, 7), scores)]
    assert res.val_truncated == [t for _, t in scores[:6]] == [r["val_truncated"] for r in log.rows]


def test_a_run_that_never_scores_keeps_training_and_its_final_weights(monkeypatch):
    res, model, log = run(monkeypatch, [(0.0, 1.0)] * 4 + [(0.0, 0.75)], ["sft.max_steps=5", "sft.eval_every=1",
                                                                          "sft.patience=1"])
    assert res.steps == 5 and res.best_step == 5 and res.best_val_accuracy == 0.0
    assert res.stopped_because == ("max_steps (every check scored 0, the last with 75% of its responses cut at "
                                   "sft.max_new_tokens; the final weights are kept)")
    assert same_weights(model, log.states[-1])


def test_checks_decode_eval_batch_size_completions_together(monkeypatch):
    seen = []
    run(monkeypatch, [(0.5, 0.0)] * 2, ["sft.max_steps=2", "sft.eval_every=1"], eval_batch_size=7, seen=seen)
    assert [s["batch_size"] for s in seen] == [7, 7]


def test_the_logged_lr_is_the_one_the_step_trained_at():
    """Warmup 4 at lr 1e-3: steps 1..4 train at 1/4, 2/4, 3/4, 4/4 of it (the schedule's
    factor(step - 1)); before, each row showed the next step's rate."""
    cfg, train, model, tok = setup(["sft.max_steps=4", "sft.warmup_steps=4", "sft.lr=1e-3"])
    log = Rows()
    sft.train_sft(model, tok, None, train, [], resolve("exact"), "plain", cfg.sft, log)
    assert [r["lr"] for r in log.rows] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])


@pytest.mark.parametrize("n, batch, steps, epochs", [
    (10, 64, 3, 3.0),  # fewer examples than a batch: each batch is the 10 (before: 3 * 64 / 10 = 19.2)
    (40, 8, 3, 0.6),
])
def test_epochs_count_the_examples_trained_on(n, batch, steps, epochs):
    cfg, train, model, tok = setup([f"sft.max_steps={steps}", f"sft.batch_size={batch}"], n=n)
    res = sft.train_sft(model, tok, None, train, [], resolve("exact"), "plain", cfg.sft, Rows())
    assert res.examples == n and res.epochs == pytest.approx(epochs)
