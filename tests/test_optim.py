import math

import numpy as np
import pytest
import torch
from torch import nn

from bertkit.train.optim import Lamb, build_optimizer, lr_factor, param_groups, warmup_steps_for


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def test_param_groups_exclude_biases_and_layernorm_from_decay_and_trust_ratio():
    model = TinyEncoder()
    decay, no_decay = param_groups(model, weight_decay=0.01)
    assert {id(p) for p in decay["params"]} == {id(model.embed.weight), id(model.proj.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.proj.bias), id(model.norm.weight),
                                                   id(model.norm.bias)}
    assert (decay["weight_decay"], decay["trust_ratio"]) == (0.01, True)
    assert (no_decay["weight_decay"], no_decay["trust_ratio"]) == (0.0, False)


def _lamb_reference(w, grads, lr, betas, eps, wd, bias_correction=True, trust_ratio=True):
    """LAMB written out in float64 numpy, one line per formula of the paper."""
    w, m, v = np.array(w, dtype=np.float64), 0.0, 0.0
    for t, g in enumerate(np.array(grads, dtype=np.float64), start=1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat = m / (1 - betas[0] ** t) if bias_correction else m
        v_hat = v / (1 - betas[1] ** t) if bias_correction else v
        u = m_hat / (np.sqrt(v_hat) + eps) + wd * w
        ratio = np.linalg.norm(w) / np.linalg.norm(u) if trust_ratio else 1.0
        w = w - lr * ratio * u
    return w


@pytest.mark.parametrize("bias_correction", [True, False])
def test_lamb_matches_hand_computed_steps(bias_correction):
    w0, grads = [1.0, 2.0, -2.0], [[0.1, -0.2, 0.3], [0.05, 0.4, -0.1]]
    param = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = Lamb([param], lr=0.1, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01,
               bias_correction=bias_correction)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    expected = _lamb_reference(w0, grads, 0.1, (0.9, 0.99), 1e-6, 0.01, bias_correction)
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=0, atol=1e-12)
    # The trust ratio matters here: a plain Adam step would land elsewhere.
    plain = _lamb_reference(w0, grads, 0.1, (0.9, 0.99), 1e-6, 0.01, bias_correction, trust_ratio=False)
    assert np.abs(plain - expected).max() > 1e-3


def test_lamb_first_step_by_hand():
    # Step 1 with bias correction: m_hat = g, v_hat = g^2, so u = g / (|g| + eps) + wd * w.
    param = nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))  # ||w|| = 5
    param.grad = torch.tensor([0.5, -2.0], dtype=torch.float64)
    Lamb([param], lr=0.1, eps=0.0, weight_decay=0.0).step()
    # u = [1, -1], ||u|| = sqrt(2); ratio = 5 / sqrt(2); w - 0.1 * ratio * u
    step = 0.1 * 5 / math.sqrt(2)
    torch.testing.assert_close(param.detach(), torch.tensor([3.0 - step, 4.0 + step], dtype=torch.float64))


def test_lamb_without_trust_ratio_is_adam():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5, 3))
    b = nn.Parameter(a.detach().clone())
    lamb = Lamb([{"params": [a], "trust_ratio": False}], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    adam = torch.optim.Adam([b], lr=0.01, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(5):
        grad = torch.randn(5, 3)
        a.grad, b.grad = grad.clone(), grad.clone()
        lamb.step()
        adam.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)


def test_lamb_zero_weight_takes_an_unscaled_step():
    param = nn.Parameter(torch.zeros(2))
    param.grad = torch.tensor([1.0, -1.0])
    Lamb([param], lr=0.5, eps=0.0).step()
    torch.testing.assert_close(param.detach(), torch.tensor([-0.5, 0.5]))


def test_build_optimizer_names_and_error():
    model = TinyEncoder()
    assert isinstance(build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01), torch.optim.AdamW)
    assert isinstance(build_optimizer(model, "lamb", lr=1e-3, weight_decay=0.01), Lamb)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(model, "sgd", lr=1e-3, weight_decay=0.01)


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("linear", 0, 0.1), ("linear", 4, 0.5), ("linear", 9, 1.0), ("linear", 10, 1.0),
        ("linear", 55, 0.5), ("linear", 99, 1 / 90), ("linear", 100, 0.0),
        ("cosine", 9, 1.0), ("cosine", 10, 1.0), ("cosine", 55, 0.5), ("cosine", 100, 0.0),
        ("constant", 0, 0.1), ("constant", 10, 1.0), ("constant", 99, 1.0),
    ],
)
def test_schedule_at_key_steps(schedule, step, expected):
    factor = lr_factor(step, warmup_steps=10, total_steps=100, schedule=schedule)
    assert factor == pytest.approx(expected, abs=1e-12)


def test_schedule_without_warmup_starts_at_peak_and_rejects_unknown_names():
    assert lr_factor(0, warmup_steps=0, total_steps=10) == 1.0
    assert warmup_steps_for(1000, None, 0.1) == 100
    assert warmup_steps_for(1000, 7, 0.1) == 7
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_factor(0, warmup_steps=0, total_steps=10, schedule="step")
