"""The fully supervised (oracle) losses of XMem, thesis §3.1.1: bootstrapped cross-entropy + dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vos.errors import VosError


def bootstrap_p(iteration: int, start: int = 20_000, end: int = 70_000, final_p: float = 0.15) -> float:
    """Fraction p of hardest pixels kept by the bootstrapped CE: 1 until `start`, linear to `final_p` at `end`."""
    if iteration <= start:
        return 1.0
    if iteration >= end:
        return final_p
    return final_p + (1.0 - final_p) * (end - iteration) / (end - start)


def _reduce_frames(per_frame: torch.Tensor, frames: str) -> torch.Tensor:
    """B×T per-frame losses → scalar: batch mean, then "sum" (XMem) or "mean" (thesis) over frames."""
    per_t = per_frame.mean(dim=0)
    if frames == "sum":
        return per_t.sum()
    if frames == "mean":
        return per_t.mean()
    raise VosError(f"losses.oracle_frames: must be 'sum' or 'mean', got {frames!r}")


def bootstrapped_ce(
    agg_logits: torch.Tensor,
    labels: torch.Tensor,
    p: float = 1.0,
    frames: str = "mean",
    obj_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bootstrapped cross-entropy (eq. 3.2–3.4, XMem's BootstrappedCE). Returns a scalar.

    agg_logits: B×T×(N+1)×H×W aggregated logits (background first); labels: B×T×H×W ids in 0..N.
    Per frame of each sample, the ⌊p·H·W⌋ (at least 1) pixels with the largest CE are averaged
    (p = 1: plain CE). Frames: batch mean, then summed ("sum", XMem) or averaged ("mean", eq. 3.4).
    obj_valid (B×N bool): padded object slots are removed from the softmax.
    """
    if agg_logits.dim() != 5 or labels.shape != agg_logits.shape[:2] + agg_logits.shape[3:]:
        raise ValueError(
            f"need agg_logits B×T×(N+1)×H×W and labels B×T×H×W, got {tuple(agg_logits.shape)}, {tuple(labels.shape)}"
        )
    if not 0 < p <= 1:
        raise ValueError(f"bootstrap fraction p must be in (0, 1], got {p}")
    batch, time, classes, height, width = agg_logits.shape
    if obj_valid is not None:
        keep = torch.cat((obj_valid.new_ones(batch, 1), obj_valid.to(torch.bool)), dim=1)
        agg_logits = agg_logits.masked_fill(~keep[:, None, :, None, None], float("-inf"))
    raw = F.cross_entropy(
        agg_logits.reshape(batch * time, classes, height, width),
        labels.reshape(batch * time, height, width).long(),
        reduction="none",
    ).reshape(batch, time, height * width)
    count = max(1, int(height * width * p))
    if count >= height * width:
        per_frame = raw.mean(dim=-1)
    else:
        per_frame = raw.topk(count, dim=-1, sorted=False).values.mean(dim=-1)
    return _reduce_frames(per_frame, frames)


def dice_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    eps: float = 1.0,
    frames: str = "mean",
    obj_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft dice per object and frame (eq. 3.5–3.6, XMem): 1 − (ε + 2Σ m̂m)/(ε + Σm̂ + Σm). Scalar.

    prob: B×N×T×H×W object probabilities; target: B×N×T×H×W {0, 1} masks. Averaged over the
    (valid) objects and the batch, then summed ("sum", XMem) or averaged ("mean") over frames.
    """
    if prob.dim() != 5 or target.shape != prob.shape:
        raise ValueError(f"need prob and target B×N×T×H×W of equal shape, got {tuple(prob.shape)}, {tuple(target.shape)}")
    target = target.to(prob.dtype)
    inter = (prob * target).sum(dim=(-2, -1))
    total = prob.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))
    per_object = 1.0 - (eps + 2.0 * inter) / (eps + total)  # B×N×T
    if obj_valid is None:
        weight = torch.ones_like(per_object[:, :, :1])
    else:
        weight = obj_valid.to(device=prob.device, dtype=prob.dtype)[:, :, None]
    # Mean over (b, n) per frame, then the frame reduction; written out so padded slots drop out.
    per_t = (per_object * weight).sum(dim=(0, 1)) / weight.sum().clamp_min(1.0)
    if frames == "sum":
        return per_t.sum()
    if frames == "mean":
        return per_t.mean()
    raise VosError(f"losses.oracle_frames: must be 'sum' or 'mean', got {frames!r}")
