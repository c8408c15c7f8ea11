"""Soft aggregation of per-object probabilities (STM / XMem)."""

from __future__ import annotations

import torch


def aggregate(probs_fg: torch.Tensor, eps: float = 1e-7) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-object foreground probabilities B×N×… → (logits, probs) B×(N+1)×…, background first.

    q = [Π_i(1−p_i), p_1..p_N] clamped to [eps, 1−eps]; logits = log(q/(1−q)); probs = softmax over
    dim 1, so they sum to one per pixel.
    """
    background = torch.prod(1 - probs_fg, dim=1, keepdim=True)
    q = torch.cat([background, probs_fg], 1).clamp(eps, 1 - eps)
    logits = torch.log(q / (1 - q))
    return logits, torch.softmax(logits, dim=1)


def object_probs(logits: torch.Tensor, selector: torch.Tensor | None = None) -> torch.Tensor:
    """Per-object logits B×N×H×W → soft-aggregated probabilities B×(N+1)×H×W, background first.

    ``selector`` B×N (1 = object present, 0 = padding slot) zeroes absent objects' probabilities
    before aggregation, as XMem does in training.
    """
    probs = torch.sigmoid(logits)
    if selector is not None:
        probs = probs * selector[:, :, None, None].to(probs.dtype)
    return aggregate(probs)[1]
