import math

import torch

from rlvr.rollout.hf import SamplingParams, _inverse_cdf, _nucleus, sample_next


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
    tokens, logprobs = sample_next(logits, params, torch.rand((len(logits), 1), dtype=torch.float64,
                                                                generator=torch.Generator().manual_seed(0)))
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


def test_inverse_cdf_by_hand():
    # probs [0, 0.25, 0, 0.75] (cdf 0, .25, .25, 1): u = (1 - uniform) * total lies in (0, 1]; the
    # token is the first whose cdf reaches u. uniform 0 -> u = 1 -> token 3 (the last token of
    # mass, even if zero-mass ones followed); 0.5 -> u = .5 -> 3; 0.9 -> u = .1 -> 1; a uniform
    # just below 1 -> u just above 0 -> 1, never the zero-mass token 0 or 2.
    probs = torch.tensor([[0.0, 0.25, 0.0, 0.75], [0.0, 0.25, 0.0, 0.75], [0.0, 0.25, 0.0, 0.75],
                          [0.0, 0.25, 0.0, 0.75], [0.5, 0.5, 0.0, 0.0]])
    uniform = torch.tensor([[0.0], [0.5], [0.9], [1 - 2**-53], [0.0]], dtype=torch.float64)
    assert _inverse_cdf(probs, uniform).tolist() == [3, 3, 1, 1, 1]
    # unnormalised rows are drawn in proportion: [2, 6] -> 1/4, 3/4
    draws = _inverse_cdf(torch.tensor([[2.0, 6.0]]).expand(20000, 2),
                         torch.rand((20000, 1), dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert abs(draws.float().mean().item() - 0.75) < 0.01  # 4.7 standard errors (sd 0.0031)
