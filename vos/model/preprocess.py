"""Input preparation: ImageNet normalisation and padding to a multiple of the network stride."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(image: torch.Tensor) -> torch.Tensor:
    """…×3×H×W float RGB in [0, 1] → ImageNet-normalised (same shape, dtype and device)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(3, 1, 1)
    return (image - mean) / std


def pad_divisible(x: torch.Tensor, d: int = 16) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two dims of …×H×W up to multiples of ``d``.

    The padding is split evenly, the smaller half on top/left. Returns (padded, pads) with
    pads = (left, right, top, bottom) in ``F.pad`` order, for :func:`unpad`.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % d, (-w) % d
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if pad_h == 0 and pad_w == 0:
        return x, pads
    return F.pad(x, pads), pads


def unpad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_divisible` on …×H×W (pads = (left, right, top, bottom))."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]
