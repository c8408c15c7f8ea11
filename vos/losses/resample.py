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
(`frames_to_lab`), and boxes are rasterised directly at the loss resolution (`box_masks`).
"""

from __future__ import annotations

import math

import torch

from vos.errors import VosError


def _check_divisible(shape: tuple[int, ...], stride: int) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise VosError(f"losses.stride: must be a positive integer, got {stride!r}")
    height, width = shape[-2], shape[-1]
    if height % stride or width % stride:
        raise VosError(f"losses.stride: input size {height}x{width} is not divisible by the loss stride {stride}")


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


def _span(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel index range [start, end) whose centres (j + 0.5) lie in [lo, hi), in loss pixels.

    A non-empty box thinner than one loss pixel still gets the pixel containing its centre, so a
    present object never reads as absent after downsampling.
    """
    start = torch.ceil(lo - 0.5)
    end = torch.ceil(hi - 0.5)
    thin = (end <= start) & (hi > lo)
    centre = torch.floor((lo + hi) / 2)
    start = torch.where(thin, centre, start).clamp(0, size)
    end = torch.where(thin, centre + 1, end).clamp(0, size)
    return start, end


def box_masks(
    boxes: torch.Tensor, valid: torch.Tensor | None, size: tuple[int, int], stride: float = 1.0
) -> torch.Tensor:
    """Boxes (...×4, XYXY pixels, exclusive max) → box masks (...×H×W) float {0, 1} at `size` = (H, W).

    `boxes` are in pixels of an image `stride` times larger than `size` (the input resolution when
    `size` is the loss resolution). A loss pixel belongs to the box when its centre lies inside the
    box (for stride 1 and integer boxes: exactly columns x1..x2−1 and rows y1..y2−1); boxes are
    clipped to the image. `valid` (..., bool) marks present objects; absent ones (False) and
    degenerate boxes (x2 ≤ x1 or y2 ≤ y1) give an empty mask.
    """
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be ...×4 (x1, y1, x2, y2), got shape {tuple(boxes.shape)}")
    if valid is not None and valid.shape != boxes.shape[:-1]:
        raise ValueError(f"valid must have shape {tuple(boxes.shape[:-1])}, got {tuple(valid.shape)}")
    height, width = size
    scaled = boxes.to(torch.float64) / float(stride)
    x1, y1, x2, y2 = scaled.unbind(-1)
    col0, col1 = _span(x1, x2, width)
    row0, row1 = _span(y1, y2, height)
    cols = torch.arange(width, device=boxes.device, dtype=torch.float64)
    rows = torch.arange(height, device=boxes.device, dtype=torch.float64)
    in_x = (cols >= col0[..., None]) & (cols < col1[..., None])
    in_y = (rows >= row0[..., None]) & (rows < row1[..., None])
    mask = in_y[..., :, None] & in_x[..., None, :]
    if valid is not None:
        mask = mask & valid.to(torch.bool)[..., None, None]
    return mask.to(torch.float32)


def box_prompt_masks(boxes: torch.Tensor, valid: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
    """Boxes given as first-frame prompts → non-overlapping filled-box masks, the box initialisation
    shared by training and inference. boxes ...×N×4 (XYXY pixels, exclusive max), valid ...×N bool
    → ...×N×H×W float {0, 1}.

    Where boxes overlap, a pixel goes to the smallest box that covers it (on equal areas, the later
    object), so a small object inside a large box keeps its pixels; an object whose box is covered
    completely by smaller ones keeps its whole rectangle (it must not start empty).
    """
    filled = box_masks(boxes, valid, size).bool()  # ...×N×H×W
    objects = filled.shape[-3]
    area = filled.flatten(-2).sum(-1).to(torch.float64)  # ...×N
    order = torch.arange(objects, device=boxes.device, dtype=torch.float64)
    # priority: smaller area first, then the higher index; uncovered pixels get +inf
    priority = (area * (objects + 1) + (objects - order))[..., None, None].expand(filled.shape)
    priority = torch.where(filled, priority, torch.full_like(priority, float("inf")))
    owner = priority.argmin(dim=-3, keepdim=True)  # ...×1×H×W
    index = torch.arange(objects, device=boxes.device).view(objects, 1, 1)
    painted = filled & (owner == index)
    hidden = filled.any(dim=(-2, -1)) & ~painted.any(dim=(-2, -1))  # ...×N: covered completely
    painted = torch.where(hidden[..., None, None], filled, painted)
    return painted.to(torch.float32)
