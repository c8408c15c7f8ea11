"""Input preparation: ImageNet normalisation, padding to a multiple of the network stride, and the
resizing between a video's size and the size the network sees (frames, prompts, probabilities)."""

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


# ------------------------------------------------------------------ sizes and resizing
def shorter_side_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(H, W) scaled so that the shorter side is ``shorter`` (aspect kept, floor); -1 = unchanged."""
    h, w = size
    if shorter == -1 or min(h, w) == shorter:
        return size
    return (shorter, int(shorter * w / h)) if h <= w else (int(shorter * h / w), shorter)


def internal_size(size: tuple[int, int], max_internal_size: int | None) -> tuple[int, int]:
    """The size the network sees: (H, W) shrunk so that the shorter side is at most
    ``max_internal_size`` (None or -1: unchanged; never enlarged)."""
    if max_internal_size is None or max_internal_size == -1 or min(size) <= max_internal_size:
        return size
    return shorter_side_size(size, max_internal_size)


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 or float [0, 1] image 3×H×W → float 3×h×w in [0, 1] (bilinear, antialiased when shrinking)."""
    image = image.float() / 255 if image.dtype == torch.uint8 else image
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0, 1)


def resize_index_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Index mask H×W (object ids) → h×w by nearest neighbour (ids are labels, never blended)."""
    if tuple(mask.shape) == tuple(size):
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(mask.dtype)


def resize_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-object masks G×H×W ({0, 1} or soft) → float G×h×w by nearest neighbour (as XMem); an object
    that nearest neighbour would erase keeps its area-weighted soft mask instead, so it never vanishes."""
    masks = masks.float()
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    resized = F.interpolate(masks.unsqueeze(0), size=size, mode="nearest")[0]
    for k in range(masks.shape[0]):
        if bool(masks[k].any()) and not bool(resized[k].any()):
            soft = F.interpolate(masks[k][None, None], size=size, mode="bilinear", align_corners=False, antialias=True)
            resized[k] = soft[0, 0].clamp(0, 1)
    return resized


def resize_probs(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Probabilities C×h×w → C×H×W (bilinear, as XMem brings its output back to the input size)."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    return F.interpolate(probs.unsqueeze(0), size=size, mode="bilinear", align_corners=False)[0]
