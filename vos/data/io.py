"""Reading and writing frames and index masks (DAVIS / YouTube-VOS conventions).

Frames are returned as uint8 tensors 3×H×W (RGB); masks as uint8 index tensors H×W
(0 = background, 1..N = object ids). Masks are written as palette PNGs with the DAVIS palette,
atomically (temporary file + rename) so that a partial file never looks complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vos.errors import DataError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _davis_palette() -> bytes:
    """The 256-colour palette of the DAVIS toolkit (bit-interleaved VOC colour map)."""
    palette = bytearray()
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += bytes((r, g, b))
    return bytes(palette)


DAVIS_PALETTE: bytes = _davis_palette()


def list_frames(folder: str | os.PathLike) -> list[Path]:
    """Image files of a folder, sorted by name (frame order)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of frames")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file())


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an RGB frame → uint8 tensor 3×H×W."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: frame not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """Read an index mask (palette 'P' or grayscale 'L' PNG) → uint8 tensor H×W of object ids."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise DataError(
                    f"{path}: mask must be a palette (P) or grayscale (L) PNG of object ids, got mode {img.mode}"
                )
            array = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or corrupt mask ({exc.__class__.__name__})") from None
    return torch.from_numpy(array.astype(np.uint8, copy=True))


def write_mask(path: str | os.PathLike, mask: torch.Tensor | np.ndarray, palette: bytes = DAVIS_PALETTE) -> None:
    """Write an H×W index mask as a palette PNG, atomically."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().to("cpu", torch.uint8).numpy()
    img = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    img.putpalette(palette)
    _atomic_save(img, Path(path), format="PNG")


def write_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray, quality: int = 95) -> None:
    """Write a uint8 RGB image (3×H×W tensor or H×W×3 array), atomically; format from the suffix."""
    if isinstance(image, torch.Tensor):
        image = image.detach().to("cpu", torch.uint8).permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB")
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    kwargs = {"quality": quality} if fmt == "JPEG" else {}
    _atomic_save(img, path, format=fmt, **kwargs)


def _atomic_save(img: Image.Image, path: Path, **kwargs) -> None:
    from vos.output import atomic_write

    with atomic_write(path) as tmp:
        img.save(tmp, **kwargs)
