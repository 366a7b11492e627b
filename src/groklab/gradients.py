"""Gradient interventions applied between ``backward`` and the optimiser step.

* **Grokfast** (Lee et al. 2024; ironjr/grokfast): add ``lamb`` times a low-pass filtered
  gradient to the gradient. ``ema``: ``e_t = alpha e_{t-1} + (1 - alpha) g_t`` with
  ``e_0 = g_0`` (the reference starts its average at the first gradient), ``g_t + lamb e_t``.
  ``ma``: the mean of the last ``window`` gradients (this one included), added only once
  ``window`` gradients have been seen (the reference's warm-up).
* **⊥Grad** (Prieto et al. 2025, the authors' ⊥AdamW): each weight's gradient loses its
  component along the weight, ``g - (w·g / (w·w + 1e-30)) w``, and is rescaled to the norm
  ``g`` had, before the optimiser (AdamW, weight decay as configured) steps.

The models hold every seed as a member along the parameters' first dimension
(:mod:`groklab.models.layers`), so each statistic here is per member: the projection
flattens ``p[s]``, never the whole tensor. The state lives in preallocated tensors and
every operation keeps its shape, so the same code runs eagerly and inside a CUDA graph
(:mod:`groklab.graphed` calls :meth:`GradientTransform.reset` after its warm-up).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from groklab.config import OptimConfig

ORTHO_EPS = 1e-30  # the authors' guard in w·w and in the rescaling


class GradientTransform:
    """The interventions ``cfg`` asks for, over ``params`` (call after ``backward``)."""

    def __init__(self, cfg: OptimConfig, params: list[nn.Parameter]):
        self.cfg, self.params = cfg, params
        device = params[0].device
        self.seen = torch.zeros((), dtype=torch.long, device=device)  # gradients filtered
        if cfg.grad_filter == "ema":
            self.ema = [torch.zeros_like(p) for p in params]
        elif cfg.grad_filter == "ma":
            assert cfg.window is not None
            # The last `window` gradients as a ring buffer, and their running sum in float64
            # (exact enough over 10^5 updates; summing the buffer anew costs `window` passes).
            self.ring = [torch.zeros(cfg.window, *p.shape, dtype=p.dtype, device=device)
                         for p in params]
            self.total = [torch.zeros_like(p, dtype=torch.float64) for p in params]

    def reset(self) -> None:
        """Forget every gradient seen (the state of a fresh run)."""
        self.seen.zero_()
        for group in ("ema", "ring", "total"):
            for t in getattr(self, group, []):
                t.zero_()

    @torch.no_grad()
    def __call__(self) -> None:
        cfg = self.cfg
        grads = [p.grad for p in self.params]
        if any(g is None for g in grads):
            raise RuntimeError("a parameter has no gradient: call after backward()")
        if cfg.grad_filter == "ema":
            self._ema(grads)
        elif cfg.grad_filter == "ma":
            self._ma(grads)
        if cfg.orthogonal:
            for p, g in zip(self.params, grads, strict=True):
                g.copy_(orthogonal_to_weights(p.detach(), g))
        self.seen += 1

    def _ema(self, grads: list[Tensor]) -> None:
        alpha, lamb = self.cfg.alpha, self.cfg.lamb
        assert alpha is not None and lamb is not None
        # e += w (g - e): w = 1 at the first gradient (e = g), 1 - alpha after it.
        first = (self.seen == 0).float()
        weight = first + (1 - first) * (1 - alpha)
        for e, g in zip(self.ema, grads, strict=True):
            e.lerp_(g, weight)
            g.add_(e, alpha=lamb)

    def _ma(self, grads: list[Tensor]) -> None:
        window, lamb = self.cfg.window, self.cfg.lamb
        assert window is not None and lamb is not None
        slot = (self.seen % window).view(1)
        full = (self.seen + 1 >= window).to(grads[0].dtype)  # after this one joins
        for ring, total, g in zip(self.ring, self.total, grads, strict=True):
            total.sub_(ring.index_select(0, slot).squeeze(0)).add_(g)
            ring.index_copy_(0, slot, g.unsqueeze(0))
            g.add_(total.to(g.dtype) * (lamb / window * full))


def orthogonal_to_weights(w: Tensor, g: Tensor) -> Tensor:
    """``g`` without its component along ``w``, rescaled to ``g``'s norm, per member (dim 0)."""
    S = w.shape[0]
    wf, gf = w.reshape(S, -1), g.reshape(S, -1)
    coef = (wf * gf).sum(1, keepdim=True) / ((wf * wf).sum(1, keepdim=True) + ORTHO_EPS)
    ortho = gf - coef * wf
    scale = gf.norm(dim=1, keepdim=True) / (ortho.norm(dim=1, keepdim=True) + ORTHO_EPS)
    return (ortho * scale).view_as(g)


def build_gradient_transform(cfg: OptimConfig, params: list[nn.Parameter]
                             ) -> GradientTransform | None:
    """The transform ``cfg`` asks for, or None when it asks for none."""
    if cfg.grad_filter == "none" and not cfg.orthogonal:
        return None
    return GradientTransform(cfg, params)


def effective_lr_gain(cfg: OptimConfig) -> float:
    """How much a Grokfast filter multiplies an Adam-type step along a steady gradient
    direction when the gradient noise dominates Adam's second moment (docs/accelerators.md).

    The filter is linear with impulse response ``h``: a steady component is multiplied by
    ``sum(h) = 1 + lamb``, white noise's standard deviation by ``sqrt(sum(h^2))``; Adam
    divides by the latter, so the step along the steady direction grows by the ratio.
    """
    lamb = cfg.lamb or 0.0
    if cfg.grad_filter == "ema":
        assert cfg.alpha is not None
        a = cfg.alpha
        # h_0 = 1 + lamb (1 - a), h_k = lamb (1 - a) a^k for k >= 1
        sq = (1 + lamb * (1 - a)) ** 2 + (lamb * (1 - a)) ** 2 * a * a / (1 - a * a)
    elif cfg.grad_filter == "ma":
        assert cfg.window is not None
        w = cfg.window
        # h_0 = 1 + lamb / w, h_k = lamb / w for k = 1 .. w - 1
        sq = (1 + lamb / w) ** 2 + (w - 1) * (lamb / w) ** 2
    else:
        return 1.0
    return (1 + lamb) / sq ** 0.5
