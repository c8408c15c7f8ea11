"""From network output, frames and boxes at the input resolution to the loss resolution.

How the network's output reaches the loss resolution (the thesis leaves it open; our choice):
the network gives aggregated logits B×T×(N+1)×H×W (background first) whose softmax is the per-pixel
class distribution. We area-average that *distribution* over s×s blocks (the mean of probabilities:
the expected fraction of the block that belongs to each object), computed in log space —
`log mean_block softmax(L) = logsumexp_block(log_softmax(L)) − log s²` — so it is exact and never
takes the log of an underflowed probability. Averaging logits instead would not be a probability of
anything, and nearest/bilinear sampling would ignore most input pixels. The per-object foreground
logits are then taken from the downsampled distribution with `foreground_logits`. Since XMem's
decoder predicts at stride 4 and upsamples bilinearly, area-averaging back to stride 4 is close to
the decoder's own resolution. The RGB frames are area-averaged the same way before Lab
(`frames_to_lab`), and boxes are rasterised directly at the loss resolution (`vos.data.boxes.box_masks`).
"""

from __future__ import annotations

import math

import torch

from vos.errors import VosError
from vos.kernels.checks import check_divisible


def _check_divisible(shape: tuple[int, ...], stride: int) -> None:
    try:
        check_divisible(shape, stride)
    except ValueError as exc:  # a loss stride that does not fit the input is a config error
        raise VosError(str(exc)) from None


def area_downsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Mean over s×s blocks of the last two dims: (...×H×W) → (...×H/s×W/s); H, W divisible by s."""
    _check_divisible(tuple(x.shape), stride)
    if stride == 1:
        return x
    *lead, height, width = x.shape
    blocks = x.reshape(*lead, height // stride, stride, width // stride, stride)
    return blocks.mean(dim=(-3, -1))


def downsample_agg_logits(agg_logits: torch.Tensor, stride: int) -> torch.Tensor:
    """Aggregated logits B×T×(N+1)×H×W → log of the area-averaged class probabilities at H/s×W/s.

    The result is a valid set of logits for the same classes (its softmax is the block mean of
    softmax(agg_logits)); feed it to `foreground_logits`. Works for any leading dims (class dim −3).
    """
    _check_divisible(tuple(agg_logits.shape), stride)
    log_probs = torch.log_softmax(agg_logits, dim=-3)
    if stride == 1:
        return log_probs
    *lead, height, width = log_probs.shape
    blocks = log_probs.reshape(*lead, height // stride, stride, width // stride, stride)
    return torch.logsumexp(blocks, dim=(-3, -1)) - 2.0 * math.log(stride)


def foreground_logits(agg_logits: torch.Tensor) -> torch.Tensor:
    """Aggregated logits B×T×(N+1)×H×W (background first) → per-object logits B×N×T×H×W.

    logit(p_i) = log p_i − log(1 − p_i) with p = softmax over the class dim; 1 − p_i is the mass of
    all other classes, so logit(p_i) = L_i − logsumexp_{j≠i} L_j. The softmax normaliser cancels,
    no probability is formed, and the result is exact even when p_i rounds to 0 or 1 in float.
    sigmoid(result) is exactly p_i: object i against the rest (background and other objects).
    """
    if agg_logits.dim() != 5:
        raise ValueError(f"agg_logits must be B×T×(N+1)×H×W, got shape {tuple(agg_logits.shape)}")
    classes = agg_logits.shape[2]
    if classes < 1:
        raise ValueError("agg_logits needs at least the background channel")
    per_object = []
    # A loop over objects (N ≤ a handful), not pixels: each step is one vectorised logsumexp.
    for i in range(1, classes):
        others = torch.cat((agg_logits[:, :, :i], agg_logits[:, :, i + 1 :]), dim=2)
        per_object.append(agg_logits[:, :, i] - torch.logsumexp(others, dim=2))
    if not per_object:
        batch, frames, _, height, width = agg_logits.shape
        return agg_logits.new_zeros(batch, 0, frames, height, width)
    return torch.stack(per_object, dim=1)


