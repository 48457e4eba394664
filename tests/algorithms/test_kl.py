import math

import pytest
import torch

from rlvr.algorithms.kl import KL, kl

LOGPROBS = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
REF = torch.tensor([[-1.5, -1.0]], dtype=torch.float64)


def test_estimators_by_hand():
    # lp - ref = [0.5, -1.0]; log r = ref - lp = [-0.5, 1.0].
    # k1 = lp - ref = [0.5, -1.0]
    # k2 = (lp - ref)^2 / 2 = [0.125, 0.5]
    # k3 = e^{log r} - log r - 1 = [e^-0.5 + 0.5 - 1, e - 1 - 1] = [0.1065307, 0.7182818]
    cases = {
        "k1": [0.5, -1.0],
        "k2": [0.125, 0.5],
        "k3": [math.exp(-0.5) - 0.5, math.e - 2.0],
    }
    for name, expected in cases.items():
        out = kl(name, LOGPROBS, REF)
        expected = torch.tensor([expected], dtype=torch.float64)
        torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)


def test_zero_when_policies_agree():
    for name in ("k1", "k2", "k3"):
        assert torch.equal(kl(name, LOGPROBS, LOGPROBS), torch.zeros_like(LOGPROBS))


def test_k1_k3_unbiased_in_expectation():
    # Weighting each token by pi(x) is the exact expectation over samples from pi; for k1 and k3
    # it must equal KL(pi || ref) = sum_x pi(x) (log pi(x) - log ref(x)).
    pi = torch.log_softmax(torch.tensor([0.3, -1.2, 2.0, 0.0], dtype=torch.float64), -1)
    ref = torch.log_softmax(torch.tensor([1.0, 0.5, -0.7, 0.2], dtype=torch.float64), -1)
    exact = (pi.exp() * (pi - ref)).sum()
    for name in ("k1", "k3"):
        estimate = (pi.exp() * kl(name, pi[None], ref[None])[0]).sum()
        torch.testing.assert_close(estimate, exact, atol=1e-12, rtol=0)


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(KeyError, match="k1, k2, k3"):
        kl("k4", LOGPROBS, REF)
    assert KL.names() == ["k1", "k2", "k3"]
