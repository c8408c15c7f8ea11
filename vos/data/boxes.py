"""Boxes: the one place where boxes become masks and masks become boxes.

Boxes are (x0, y0, x1, y1) in pixels with an exclusive maximum (x1, y1 are one past the last column
and row), as on the command line. A box prompt is given to the network as its filled rectangle — the
box initialisation of the thesis (Holm, "Weakly Supervised Video Object Segmentation", §4.4, Tables
4.5/4.6) — through :func:`box_prompt_masks`, the same painter in training, evaluation, the
ground-truth-box baseline, the CLI and the Python API.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from vos.errors import VosError


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


def masks_to_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes of binary masks (...×H×W) → (...×4 XYXY with exclusive max, ... valid)."""
    rows = masks.bool().any(-1)  # ...×H
    cols = masks.bool().any(-2)  # ...×W
    valid = rows.any(-1)
    h, w = masks.shape[-2:]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).amin(-1)
    y1 = torch.where(rows, ar_h, -1).amax(-1) + 1
    x0 = torch.where(cols, ar_w, w).amin(-1)
    x1 = torch.where(cols, ar_w, -1).amax(-1) + 1
    boxes = torch.stack((x0, y0, x1, y1), -1).float()
    return torch.where(valid[..., None], boxes, torch.zeros_like(boxes)), valid


def check_box(obj: int, box: Sequence[float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """A user's box for object ``obj`` on an H×W frame, checked: four finite numbers, non-empty, and
    inside the frame (x1 ≤ W, y1 ≤ H: the maximum is exclusive). Raises VosError naming the object."""
    height, width = size
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        raise VosError(f"box of object {obj}: expected four numbers x0, y0, x1, y1, got {box!r}") from None
    if len(values) != 4:
        raise VosError(f"box of object {obj}: expected four numbers x0, y0, x1, y1, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise VosError(f"box of object {obj} {values}: coordinates must be finite numbers")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise VosError(f"box of object {obj} {values}: empty (need x0 < x1 and y0 < y1)")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise VosError(f"box of object {obj} {values}: outside the {width}×{height} frame (x1, y1 are exclusive)")
    return values


def paint_boxes(boxes: Mapping[int, Sequence[float]], size: tuple[int, int]) -> tuple[list[int], torch.Tensor]:
    """Box prompts {object id: box} on an H×W frame → (ids in the given order, G×H×W float {0, 1}
    masks), painted by :func:`box_prompt_masks`: overlaps go to the smaller box, and a box covered
    completely by smaller ones keeps its whole rectangle."""
    ids = list(boxes)
    if not ids:
        return [], torch.zeros(0, *size)
    xyxy = torch.tensor([check_box(obj, boxes[obj], size) for obj in ids], dtype=torch.float32)
    return ids, box_prompt_masks(xyxy, None, size)


def tight_boxes(index: torch.Tensor, ids: Sequence[int] | None = None) -> dict[int, tuple[int, int, int, int]]:
    """Tight boxes {id: (x0, y0, x1, y1)} of the objects of an H×W index map (default: every id
    except 0 and 255, the void label); ids absent from the map are left out."""
    if ids is None:
        ids = [int(i) for i in torch.unique(index).tolist() if i not in (0, 255)]
    out = {}
    for obj in ids:
        box, valid = masks_to_boxes(index == obj)
        if bool(valid):
            out[obj] = tuple(int(v) for v in box.tolist())
    return out


def box_index_map(boxes: Mapping[int, Sequence[float]], size: tuple[int, int], dtype=torch.uint8) -> torch.Tensor:
    """Filled boxes as an H×W index map of object ids, with :func:`paint_boxes`'s overlap rule (an
    index map cannot hold a box covered completely by smaller ones: such an object gets no pixel)."""
    ids, masks = paint_boxes(boxes, size)
    out = torch.zeros(size, dtype=dtype)
    for k in sorted(range(len(ids)), key=lambda k: -int(masks[k].sum())):
        out[masks[k].bool()] = ids[k]
    return out
