"""Sample strips written during training: frame, its box, the prediction — for eyes, not metrics."""

from __future__ import annotations

from pathlib import Path

import torch

from vos.data.io import write_image

COLOURS = torch.tensor([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180]], dtype=torch.float32)


def overlay(rgb: torch.Tensor, probs: torch.Tensor, boxes: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """rgb 3×H×W [0,1], probs (1+N)×H×W → uint8 3×H×W with objects tinted by their argmax, boxes outlined."""
    img = rgb.detach().float().cpu() * 255
    ids = probs.detach().float().cpu().argmax(0)
    for obj in range(1, probs.shape[0]):
        colour = COLOURS[(obj - 1) % len(COLOURS)].view(3, 1, 1)
        m = (ids == obj)[None]
        img = torch.where(m, 0.5 * img + 0.5 * colour, img)
        if boxes is not None and valid is not None and obj - 1 < len(boxes) and bool(valid[obj - 1]):
            h, w = img.shape[-2:]
            x0, y0, x1, y1 = (int(v) for v in boxes[obj - 1].tolist())
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1) - 1, min(h, y1) - 1
            if x1 >= x0 and y1 >= y0:
                img[:, y0, x0 : x1 + 1] = colour.view(3, 1)
                img[:, y1, x0 : x1 + 1] = colour.view(3, 1)
                img[:, y0 : y1 + 1, x0] = colour.view(3, 1)
                img[:, y0 : y1 + 1, x1] = colour.view(3, 1)
    return img.clamp(0, 255).to(torch.uint8)


def write_sample_strip(path: Path, batch: dict, probs: torch.Tensor) -> None:
    """First clip of the batch: the predicted frames 1..T−1 with boxes and predictions, side by side."""
    rgb = batch["rgb"][0, 1:]
    boxes = batch["boxes"][0, 1:].cpu()
    valid = batch["box_valid"][0, 1:].cpu()
    tiles = [overlay(rgb[t], probs[0, t], boxes[t], valid[t]) for t in range(rgb.shape[0])]
    write_image(path, torch.cat(tiles, dim=2))
