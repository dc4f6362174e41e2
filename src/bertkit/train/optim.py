"""Optimizers (AdamW, LAMB) with BERT's weight-decay groups, and the learning-rate schedule.

BERT decays every matrix (including embeddings) but never biases or LayerNorm weights: those are
1-D, so ``ndim <= 1`` finds them without relying on names. The same split decides which parameters
LAMB adapts with its trust ratio: following the LAMB paper's BERT setup (and the reference TensorFlow
implementation, whose layer-adaptation exclusions default to the weight-decay exclusions), biases and
LayerNorm weights take a plain Adam step, matrices take ``lr * ||w|| / ||update||``.

The schedule is a pure function of the step (or, for a run with a time budget, of the fraction of the budget
spent), so resuming needs only the step number and the training time so far.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS = ("adamw", "lamb")
SCHEDULES = ("linear", "cosine", "constant")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group (biases, LayerNorm).

    Each group also carries ``trust_ratio``: True for the decayed group, False for the other, which
    LAMB reads and AdamW ignores. Empty groups are left out.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "trust_ratio": True},
        {"params": no_decay, "weight_decay": 0.0, "trust_ratio": False},
    ]
    return [g for g in groups if g["params"]]


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019): Adam moments, then a per-tensor trust ratio ``||w|| / ||update||``.

    For a parameter ``w`` with gradient ``g`` at step ``t``::

        m = b1 m + (1 - b1) g            v = b2 v + (1 - b2) g^2
        m_hat = m / (1 - b1^t)           v_hat = v / (1 - b2^t)      (if bias_correction)
        u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w
        w = w - lr * r * u,   r = ||w|| / ||u|| if both norms > 0 else 1   (r = 1 if not trust_ratio)

    The ratio is not clipped. ``trust_ratio`` is a per-group option (see :func:`param_groups`).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = True,
        trust_ratio: bool = True,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lamb: bad lr={lr}, betas={betas}, eps={eps} or weight_decay={weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        bias_correction=bias_correction, trust_ratio=trust_ratio)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - same contract as torch.optim.Optimizer.step
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        if param.grad.is_sparse:
            raise RuntimeError("Lamb does not support sparse gradients")
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], param.grad
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        m_hat, v_hat = exp_avg, exp_avg_sq
        if group["bias_correction"]:
            m_hat = exp_avg / (1 - beta1 ** state["step"])
            v_hat = exp_avg_sq / (1 - beta2 ** state["step"])
        update = m_hat / (v_hat.sqrt() + group["eps"])
        if group["weight_decay"]:
            update.add_(param, alpha=group["weight_decay"])
        if group["trust_ratio"]:
            w_norm, u_norm = param.norm(), update.norm()
            ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            update.mul_(ratio)  # stays a tensor: no host sync per parameter
        param.sub_(update, alpha=group["lr"])


def build_optimizer(
    model: nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
) -> torch.optim.Optimizer:
    """AdamW (fused on CUDA) or LAMB over :func:`param_groups` of ``model``."""
    groups = param_groups(model, weight_decay)
    if name == "adamw":
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True if on_cuda else None)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def warmup_steps_for(total_steps: int, warmup_steps: int | None, warmup_ratio: float) -> int:
    """Explicit ``warmup_steps`` wins; otherwise ``round(warmup_ratio * total_steps)``."""
    return warmup_steps if warmup_steps is not None else round(warmup_ratio * total_steps)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, schedule: str = "linear") -> float:
    """Multiplier of the peak learning rate for the update with 0-based index ``step``.

    Warm-up rises linearly, ``(step + 1) / warmup_steps``, reaching 1.0 on the last warm-up update;
    after it ``linear`` falls as ``(total - step) / (total - warmup)`` (it would reach 0 at
    ``step == total``), ``cosine`` follows half a cosine over the same span, ``constant`` stays at 1.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor_at(progress: float, *, warmup_share: float, schedule: str = "linear") -> float:
    """Multiplier of the peak learning rate at ``progress``, the fraction of the run done (0 to 1).

    The same shape as :func:`lr_factor`, over a fraction instead of steps: a budgeted run does not know its step
    count in advance, so its warm-up spans the first ``warmup_share`` of the budget and its decay the rest, and the
    schedule completes however fast the steps turn out to be. Warm-up rises from 0 as ``progress / warmup_share``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup_share:
        return progress / warmup_share
    if schedule == "constant":
        return 1.0
    decayed = (progress - warmup_share) / max(1.0 - warmup_share, 1e-12)
    if schedule == "linear":
        return 1.0 - decayed
    return 0.5 * (1.0 + math.cos(math.pi * decayed))
