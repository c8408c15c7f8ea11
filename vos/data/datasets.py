"""Dataset readers shared by training and evaluation: DAVIS and YouTube-VOS layouts.

A dataset is a list of :class:`VideoRecord`: frame paths in order and the annotated frames. DAVIS
annotates every frame; YouTube-VOS ``valid`` annotates each object only on its first-appearance frame
(sparse). Nothing is decoded here; :func:`check_dataset` reads everything to validate a root.

DAVIS layout::

    ROOT/JPEGImages/480p/<video>/00000.jpg
    ROOT/Annotations/480p/<video>/00000.png      palette PNG, 0 = background, 1..N objects
    ROOT/ImageSets/2017/{train,val}.txt           (2016: ImageSets/2016/...)

YouTube-VOS layout::

    ROOT/<split>/JPEGImages/<video>/00000.jpg     split = train | valid
    ROOT/<split>/Annotations/<video>/00000.png
    ROOT/<split>/meta.json                        {"videos": {video: {"objects": {id: {"category", "frames"}}}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vos.data.io import list_frames
from vos.errors import DataError

DAVIS_LAYOUT = "JPEGImages/480p/<video>/*.jpg, Annotations/480p/<video>/*.png, ImageSets/<year>/<split>.txt"
YOUTUBE_LAYOUT = "<split>/JPEGImages/<video>/*.jpg, <split>/Annotations/<video>/*.png, <split>/meta.json"


@dataclass
class VideoRecord:
    """One video: frames in order and the frames that carry annotations.

    ``annotations`` maps a frame index to its mask path (every frame for DAVIS and YouTube train,
    first-appearance frames for YouTube valid). ``categories`` maps object id → category (YouTube).
    """

    name: str
    frames: list[Path]
    annotations: dict[int, Path]
    categories: dict[int, str] = field(default_factory=dict)
    sparse: bool = False

    @property
    def num_frames(self) -> int:
        return len(self.frames)


@dataclass
class Dataset:
    root: Path
    layout: Literal["davis", "youtube"]
    split: str
    videos: list[VideoRecord]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, name: str) -> VideoRecord:
        for video in self.videos:
            if video.name == name:
                return video
        raise KeyError(name)


def detect_layout(root: str | Path) -> Literal["davis", "youtube"]:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such dataset root")
    if not root.is_dir():
        raise DataError(f"{root}: dataset root must be a folder")
    if (root / "JPEGImages" / "480p").is_dir():
        return "davis"
    if any((root / s / "JPEGImages").is_dir() for s in ("train", "valid", "test")) or (
        (root / "JPEGImages").is_dir() and (root / "meta.json").is_file()
    ):
        return "youtube"
    raise DataError(
        f"{root}: not a DAVIS root (expected {DAVIS_LAYOUT}) nor a YouTube-VOS root (expected {YOUTUBE_LAYOUT})"
    )


def available_splits(root: str | Path, year: str = "2017") -> list[str]:
    """Splits a root offers: DAVIS ImageSets/<year>/*.txt (or ``all`` for a bare folder), YouTube folders."""
    root = Path(root)
    if detect_layout(root) == "davis":
        sets = root / "ImageSets" / year
        names = sorted(p.stem for p in sets.glob("*.txt")) if sets.is_dir() else []
        return names or ["all"]
    splits = [s for s in ("train", "valid", "test") if (root / s / "JPEGImages").is_dir()]
    return splits or ["all"]


def open_dataset(
    root: str | Path,
    split: str | None = None,
    layout: Literal["auto", "davis", "youtube"] = "auto",
    year: str = "2017",
) -> Dataset:
    """Index a dataset root. ``split``: DAVIS ``train``/``val``/``test-dev`` (default ``val``) or
    YouTube ``train``/``valid`` (default ``valid``); ``None`` picks the default."""
    root = Path(root)
    kind = detect_layout(root) if layout == "auto" else layout
    if kind == "davis":
        return _open_davis(root, split or "val", year)
    return _open_youtube(root, split or "valid")


def _open_davis(root: Path, split: str, year: str) -> Dataset:
    img_root = root / "JPEGImages" / "480p"
    ann_root = root / "Annotations" / "480p"
    if not img_root.is_dir():
        raise DataError(f"{root}: missing JPEGImages/480p (DAVIS layout: {DAVIS_LAYOUT})")
    if not ann_root.is_dir():
        raise DataError(f"{root}: missing Annotations/480p (DAVIS layout: {DAVIS_LAYOUT})")
    list_file = root / "ImageSets" / year / f"{split}.txt"
    if split == "all":
        names = sorted(p.name for p in img_root.iterdir() if p.is_dir())
    elif list_file.is_file():
        names = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    elif (root / "ImageSets").is_dir():
        raise DataError(f"{root}: missing ImageSets/{year}/{split}.txt (DAVIS layout: {DAVIS_LAYOUT})")
    else:  # a bare folder of videos: every video is in the split
        names = sorted(p.name for p in img_root.iterdir() if p.is_dir())
    videos = []
    for name in names:
        frames, annotations = _frames_and_masks(name, img_root, ann_root, list_file)
        videos.append(VideoRecord(name=name, frames=frames, annotations=annotations))
    return Dataset(root=root, layout="davis", split=split, videos=videos)


def _frames_and_masks(name: str, img_root: Path, ann_root: Path, listed_in: Path) -> tuple[list[Path], dict[int, Path]]:
    """A video's frames (sorted) and its annotated frames {index: mask file}, which must not be empty."""
    frame_dir = img_root / name
    if not frame_dir.is_dir():
        raise DataError(f"{listed_in}: lists video '{name}' but {frame_dir} does not exist")
    frames = list_frames(frame_dir)
    if not frames:
        raise DataError(f"{frame_dir}: video without frames")
    masks = {t: ann_root / name / f"{frame.stem}.png" for t, frame in enumerate(frames)}
    annotations = {t: mask for t, mask in masks.items() if mask.is_file()}
    if not annotations:
        raise DataError(f"{ann_root / name}: no annotation for video '{name}' (need at least its first frame)")
    return frames, annotations


def _open_youtube(root: Path, split: str) -> Dataset:
    base = root / split if split != "all" and (root / split).is_dir() else root
    img_root, ann_root, meta_file = base / "JPEGImages", base / "Annotations", base / "meta.json"
    for path, what in ((img_root, "JPEGImages"), (ann_root, "Annotations")):
        if not path.is_dir():
            raise DataError(f"{base}: missing {what} (YouTube-VOS layout: {YOUTUBE_LAYOUT})")
    meta_videos: dict = {}
    if meta_file.is_file():
        try:
            meta_videos = json.loads(meta_file.read_text())["videos"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError(f"{meta_file}: not a YouTube-VOS meta.json (expected {{'videos': {{...}}}})") from None
    names = sorted(meta_videos) if meta_videos else sorted(p.name for p in img_root.iterdir() if p.is_dir())
    videos = []
    for name in names:
        frames, annotations = _frames_and_masks(name, img_root, ann_root, meta_file)
        objects = meta_videos.get(name, {}).get("objects", {})
        categories = {int(k): v.get("category", "") for k, v in objects.items()}
        sparse = len(annotations) < len(frames)
        videos.append(VideoRecord(name=name, frames=frames, annotations=annotations, categories=categories, sparse=sparse))
    return Dataset(root=root, layout="youtube", split=split, videos=videos)
