"""Reference predictions that need no model.

``write_box_predictions``: every annotated frame's ground-truth objects replaced by their filled tight
boxes — the "box of every frame as the mask" baseline of the thesis's study. A box-supervised model
whose J does not clearly exceed this baseline's has learnt boxes, not shapes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vos.data.boxes import box_index_map, tight_boxes
from vos.data.datasets import open_dataset
from vos.data.io import read_mask, write_mask


def filled_boxes(ids: torch.Tensor) -> torch.Tensor:
    """H×W object ids → H×W ids of their filled tight boxes (255 = void is dropped), painted as the
    model's box prompts (`vos.data.boxes.box_index_map`): where boxes overlap the smaller box wins, so
    a small object inside a large box stays visible."""
    return box_index_map(tight_boxes(ids), tuple(ids.shape), dtype=ids.dtype)


def write_box_predictions(root: str | os.PathLike, pred_dir: str | os.PathLike, split: str | None = None) -> list[str]:
    """Write PRED_DIR/<video>/<frame>.png = filled boxes of the ground truth, for every annotated
    frame of ``split``; returns the video names (to pass to the scorer)."""
    pred_dir = Path(pred_dir)
    dataset = open_dataset(root, split=split)
    for video in dataset.videos:
        for path in video.annotations.values():
            write_mask(pred_dir / video.name / path.name, filled_boxes(read_mask(path)))
    return [v.name for v in dataset.videos]
