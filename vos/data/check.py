"""``vos data check``: read every frame and mask of a root and report what is wrong, one line each."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image, UnidentifiedImageError

from vos.data.datasets import Dataset, VideoRecord
from vos.data.io import read_mask
from vos.errors import DataError


@dataclass
class VideoReport:
    name: str
    frames: int
    objects: list[int]
    fill_ratios: list[float]
    problems: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    layout: str
    split: str
    videos: list[VideoReport]

    @property
    def problems(self) -> list[str]:
        return [p for v in self.videos for p in v.problems]

    @property
    def num_frames(self) -> int:
        return sum(v.frames for v in self.videos)

    @property
    def num_objects(self) -> int:
        return sum(len(v.objects) for v in self.videos)

    @property
    def fill_ratio(self) -> float:
        ratios = [r for v in self.videos for r in v.fill_ratios]
        return sum(ratios) / len(ratios) if ratios else float("nan")


def fill_ratios(mask: torch.Tensor) -> dict[int, float]:
    """mask-area / tight-box-area per object id of an H×W index mask."""
    out = {}
    for obj_id in torch.unique(mask).tolist():
        if obj_id == 0:
            continue
        m = mask == obj_id
        rows = torch.nonzero(m.any(1)).flatten()
        cols = torch.nonzero(m.any(0)).flatten()
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        out[int(obj_id)] = float(m.sum()) / float(box)
    return out


def _frame_size(path: Path) -> tuple[int, int]:
    """(H, W) of a frame, decoding it fully so that truncated files are caught."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.size[1], img.size[0]
    except FileNotFoundError:
        raise DataError(f"{path}: frame not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or corrupt image ({exc.__class__.__name__})") from None


def check_video(video: VideoRecord) -> VideoReport:
    report = VideoReport(name=video.name, frames=video.num_frames, objects=[], fill_ratios=[])
    sizes: dict[int, tuple[int, int]] = {}
    for t, frame in enumerate(video.frames):
        try:
            sizes[t] = _frame_size(frame)
        except DataError as exc:
            report.problems.append(str(exc))
    if len(set(sizes.values())) > 1:
        report.problems.append(f"{video.frames[0].parent}: frames of different sizes {sorted(set(sizes.values()))}")
    objects: set[int] = set()
    for t, path in sorted(video.annotations.items()):
        try:
            mask = read_mask(path)
        except DataError as exc:
            report.problems.append(str(exc))
            continue
        if t in sizes and tuple(mask.shape) != sizes[t]:
            report.problems.append(
                f"{path}: mask size {tuple(mask.shape)} differs from frame size {sizes[t]} ({video.frames[t].name})"
            )
            continue
        ratios = fill_ratios(mask)
        ratios.pop(255, None)  # void, not an object
        if t == min(video.annotations) and not ratios:
            # the first annotation initialises the objects; with none there, nothing is tracked
            report.problems.append(f"{path}: first annotation of {video.name} has no object (all background or void)")
        objects.update(ratios)
        report.fill_ratios.extend(ratios.values())
    if not objects and not report.problems:
        report.problems.append(f"{video.name}: no object in any annotation")
    report.objects = sorted(objects)
    return report


def check_dataset(dataset: Dataset, workers: int = 4, progress: Callable[[], None] | None = None) -> CheckReport:
    """Check every video (frames decodable, masks palette/grayscale, sizes agree, objects present)."""
    reports = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for report in pool.map(check_video, dataset.videos):
            reports.append(report)
            if progress is not None:
                progress()
    return CheckReport(layout=dataset.layout, split=dataset.split, videos=reports)
