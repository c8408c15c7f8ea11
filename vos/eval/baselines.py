"""Reference predictions that need no model.

``write_box_predictions``: every annotated frame's ground-truth objects replaced by their filled tight
boxes — the "box of every frame as the mask" baseline of the thesis's study. A box-supervised model
whose J does not clearly exceed this baseline's has learnt boxes, not shapes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vos.data.datasets import open_dataset
from vos.data.io import read_mask, write_mask


def filled_boxes(ids: torch.Tensor) -> torch.Tensor:
    """H×W object ids → H×W ids of their filled tight boxes (255 = void is dropped).

    Where boxes overlap, the smaller box is painted last, so every object keeps a visible part (a
    large box painted over a small one would erase it)."""
    out = torch.zeros_like(ids)
    boxes = []
    for obj in torch.unique(ids).tolist():
        if obj in (0, 255):
            continue
        ys, xs = torch.nonzero(ids == obj, as_tuple=True)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()), int(xs.min()), int(xs.max())
        boxes.append(((y1 - y0 + 1) * (x1 - x0 + 1), obj, y0, y1, x0, x1))
    for _, obj, y0, y1, x0, x1 in sorted(boxes, reverse=True):
        out[y0 : y1 + 1, x0 : x1 + 1] = obj
    return out


def write_box_predictions(root: str | os.PathLike, pred_dir: str | os.PathLike, split: str | None = None) -> list[str]:
    """Write PRED_DIR/<video>/<frame>.png = filled boxes of the ground truth, for every annotated
    frame of ``split``; returns the video names (to pass to the scorer)."""
    pred_dir = Path(pred_dir)
    dataset = open_dataset(root, split=split)
    for video in dataset.videos:
        for path in video.annotations.values():
            write_mask(pred_dir / video.name / path.name, filled_boxes(read_mask(path)))
    return [v.name for v in dataset.videos]
