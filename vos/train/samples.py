"""Sample strips written during training: frame, its box, the prediction — for eyes, not metrics."""

from __future__ import annotations

from pathlib import Path

import torch

from vos.data.io import write_image
from vos.data.video import overlay as draw_overlay



def overlay(rgb: torch.Tensor, probs: torch.Tensor, boxes: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """rgb 3×H×W [0,1], probs (1+N)×H×W → uint8 3×H×W with objects tinted by their argmax and their
    boxes (N×4, valid N) outlined (`vos.data.video.overlay`; object i is channel i)."""
    frame = (rgb.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    ids = probs.detach().float().cpu().argmax(0)
    drawn = {}
    if boxes is not None and valid is not None:
        h, w = ids.shape
        for i in range(min(len(boxes), probs.shape[0] - 1)):
            x0, y0, x1, y1 = (int(v) for v in boxes[i].tolist())
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if bool(valid[i]) and x1 > x0 and y1 > y0:
                drawn[i + 1] = (x0, y0, x1, y1)
    return draw_overlay(frame, ids, drawn)


def write_sample_strip(path: Path, batch: dict, probs: torch.Tensor) -> None:
    """First clip of the batch: the predicted frames 1..T−1 with boxes and predictions, side by side."""
    rgb = batch["rgb"][0, 1:]
    boxes = batch["boxes"][0, 1:].cpu()
    valid = batch["box_valid"][0, 1:].cpu()
    tiles = [overlay(rgb[t], probs[0, t], boxes[t], valid[t]) for t in range(rgb.shape[0])]
    write_image(path, torch.cat(tiles, dim=2))
