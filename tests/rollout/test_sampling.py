import math

import torch

from rlvr.rollout.hf import SamplingParams, _nucleus, sample_next


def test_nucleus_by_hand():
    # probs [0.5, 0.3, 0.2], top_p = 0.7: mass of better tokens is 0 for token 0, 0.5 for token 1
    # (< 0.7, kept) and 0.8 for token 2 (>= 0.7, dropped); renormalised: [0.5, 0.3] / 0.8
    lp = torch.tensor([[0.5, 0.3, 0.2]]).log()
    out = _nucleus(lp, 0.7).exp()
    torch.testing.assert_close(out, torch.tensor([[0.625, 0.375, 0.0]]))
    # top_p = 0.45: the top token alone reaches it (mass before token 1 is 0.5 >= 0.45)
    torch.testing.assert_close(_nucleus(lp, 0.45).exp(), torch.tensor([[1.0, 0.0, 0.0]]))


def test_sampled_logprobs_are_those_of_the_sampling_distribution():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(4000, 1)
    params = SamplingParams(temperature=0.5, top_p=0.9)
    tokens, logprobs = sample_next(logits, params, torch.Generator().manual_seed(0))
    expected = _nucleus(torch.log_softmax(logits[:1] / 0.5, -1), 0.9)[0]  # [V]
    torch.testing.assert_close(logprobs, expected[tokens])
    # empirical frequencies match the distribution the logprobs describe
    freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert torch.allclose(freq, expected.exp(), atol=0.03)
    assert freq[3] == 0  # outside the nucleus: never sampled


def test_greedy_takes_the_argmax_and_reports_its_logprob():
    logits = torch.tensor([[0.0, 3.0, 1.0]])
    tokens, logprobs = sample_next(logits, SamplingParams(temperature=0.0), None)
    assert tokens.tolist() == [1]
    assert math.isclose(logprobs.item(), torch.log_softmax(logits, -1)[0, 1].item(), rel_tol=1e-6)
