"""Videos for the long-video benchmark: a synthetic video of any length generated frame by frame,
and the Long-Time Video set read one frame at a time."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from vos.data.io import list_frames, read_image, read_mask
from vos.errors import DataError, VosError
from vos.model.preprocess import resize_image, resize_index_mask, shorter_side_size

LONG_TIME_LAYOUT = "ROOT/JPEGImages/<video>/*.jpg and ROOT/Annotations/<video>/*.png (or ROOT/long_video/…)"


def synthetic_long_video(
    frames: int, size: int = 480, objects: int = 2, seed: int = 0
) -> tuple[tuple[int, int], Iterator[tuple[torch.Tensor, torch.Tensor | None]]]:
    """A long synthetic video made on the fly: ((H, W), iterator of (float 3×H×W in [0, 1], mask)).

    H = ``size``, W = 16:9 of it (854 at 480, like DAVIS's 480p). The mask (uint8 H×W ids 1..objects)
    comes with frame 0 only. Objects are textured ellipses with a hole (a box is a poor mask) on
    periodic Lissajous paths of different periods, so they cross and occlude each other for any
    number of frames; the background is a smooth random texture that pans slowly.
    """
    if frames < 1 or size < 16 or objects < 1:
        raise VosError(f"synthetic video: frames, objects must be ≥ 1 and size ≥ 16, got {frames}, {objects}, {size}")
    h, w = size, int(round(size * 854 / 480))
    g = torch.Generator().manual_seed(seed)
    pan = max(8, w // 8)
    coarse = torch.rand(1, 3, 6, 12, generator=g)
    fine = torch.rand(1, 3, 24, 48, generator=g)
    background = 0.7 * F.interpolate(coarse, size=(h, w + pan), mode="bicubic", align_corners=False)[0]
    background += 0.3 * F.interpolate(fine, size=(h, w + pan), mode="bilinear", align_corners=False)[0]
    background = background.clamp(0, 1)
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    params = []
    for k in range(objects):
        r = torch.rand(8, generator=g).tolist()
        params.append({
            "color": torch.rand(3, generator=g).view(3, 1, 1) * 0.8 + 0.2,
            "a": (0.12 + 0.08 * r[0]) * h, "b": (0.07 + 0.06 * r[1]) * h,
            "period_x": 300 + 400 * r[2], "period_y": 250 + 350 * r[3], "spin": 200 + 300 * r[4],
            "phase": 6.283 * r[5], "cx": (0.3 + 0.4 * r[6]) * w, "cy": (0.3 + 0.4 * r[7]) * h, "k": k,
        })

    def render(t: int) -> tuple[torch.Tensor, torch.Tensor]:
        shift = int(round(pan / 2 * (1 + math.sin(2 * math.pi * t / 900))))
        image = background[:, :, shift : shift + w].clone()
        index = torch.zeros(h, w, dtype=torch.uint8)
        for p in params:
            cx = p["cx"] + 0.3 * w * math.sin(2 * math.pi * t / p["period_x"] + p["phase"])
            cy = p["cy"] + 0.25 * h * math.sin(2 * math.pi * t / p["period_y"] + 2 * p["phase"])
            angle = 2 * math.pi * t / p["spin"]
            dx, dy = xs - cx, ys - cy
            u = (math.cos(angle) * dx + math.sin(angle) * dy) / p["a"]
            v = (-math.sin(angle) * dx + math.cos(angle) * dy) / p["b"]
            r2 = u * u + v * v
            inside = (r2 < 1) & ((u - 0.3) ** 2 + v * v > 0.08)  # an off-centre hole
            stripes = 0.75 + 0.25 * torch.sin(8 * u + 3 * v)
            image = torch.where(inside, p["color"] * stripes, image)
            index[inside] = p["k"] + 1
        return image, index

    def frames_iter() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for t in range(frames):
            image, index = render(t)
            yield image, (index if t == 0 else None)

    return (h, w), frames_iter()


def long_time_videos(root: str | os.PathLike) -> list[tuple[str, list[Path], Path]]:
    """The Long-Time Video set's videos: (name, frame paths, first-frame annotation path)."""
    root = Path(root)
    base = root / "long_video" if (root / "long_video" / "JPEGImages").is_dir() else root
    images, annotations = base / "JPEGImages", base / "Annotations"
    if not images.is_dir() or not annotations.is_dir():
        raise DataError(f"{root}: not a Long-Time Video root; expected {LONG_TIME_LAYOUT}")
    videos = []
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        frames = list_frames(folder)
        if not frames:
            raise DataError(f"{folder}: video without frames")
        first = annotations / folder.name / f"{frames[0].stem}.png"
        if not first.is_file():
            raise DataError(f"{first}: first-frame annotation missing (expected {LONG_TIME_LAYOUT})")
        videos.append((folder.name, frames, first))
    if not videos:
        raise DataError(f"{images}: no videos; expected {LONG_TIME_LAYOUT}")
    return videos


def file_video(
    frames: list[Path], first: Path, size: int
) -> tuple[tuple[int, int], Iterator[tuple[torch.Tensor, torch.Tensor | None]]]:
    """Frames read one at a time, resized so that the shorter side is ``size``; mask on frame 0."""
    h, w = read_image(frames[0]).shape[1:]
    out = shorter_side_size((h, w), size)
    mask = read_mask(first)
    if tuple(mask.shape) != (h, w):
        raise DataError(f"{first}: mask is {tuple(mask.shape)}, frames are {(h, w)}")
    mask = resize_index_mask(mask, out)

    def it() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for t, path in enumerate(frames):
            frame = read_image(path)
            if tuple(frame.shape[1:]) != (h, w):
                raise DataError(f"{path}: frame is {tuple(frame.shape[1:])}, the first is {(h, w)}")
            yield resize_image(frame, out), (mask if t == 0 else None)

    return out, it()
