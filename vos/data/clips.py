"""Training clips: sources (mask videos, box-only videos, static images), XMem's frame sampling with the
max-skip curriculum, augmentation, and the supervision modes.

Reproducibility without shared state: a clip is a pure function of its *draw id* (the global sample
counter ``iteration · batch + i``, offset per DDP rank). Its random generator is seeded from
(seed, draw id) and the max-skip curriculum reads the training progress from the draw id, so a resumed
run sees exactly the clips it would have seen, whatever the number of loader workers.

Supervision modes decide what leaves the loader:
  ``box``        rgb, boxes, box_valid, object_valid — **no mask tensor at all**;
  ``first_mask`` the above + ``first_mask`` (the exact mask of the clip's first frame);
  ``mask``       the above + ``masks`` (every frame; the fully supervised oracle).
"""

from __future__ import annotations

import json

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Sampler

from vos.data.augment import FILL_RGB, affine_matrix, color_jitter, tps_flow, transform_boxes, warp
from vos.data.boxes import masks_to_boxes
from vos.data.config import DataConfig, DatasetSpec
from vos.data.datasets import open_dataset
from vos.data.io import list_frames, read_image, read_mask
from vos.errors import DataError


@dataclass
class MaskVideo:
    """A video with a mask on every frame. ``stride``: source frames per stored frame (YouTube-VOS: 5)."""

    name: str
    frames: list[Path]
    masks: list[Path]
    stride: int = 1


@dataclass
class BoxVideo:
    """A video with per-frame boxes only: ``boxes[obj_id][t]`` is XYXY (exclusive max) or None (absent)."""

    name: str
    frames: list[Path]
    boxes: dict[int, list[tuple[float, float, float, float] | None]]
    stride: int = 1


@dataclass
class StaticImage:
    """An image with a binary object mask, turned into a pseudo-video of deformed copies."""

    name: str
    image: Path
    mask: Path


Source = MaskVideo | BoxVideo | StaticImage


def read_box_video(folder: Path) -> BoxVideo:
    """Read one video of the box-only format: frames + ``boxes.json``.

    ``boxes.json``: ``{"objects": {"1": {"00000": [x0, y0, x1, y1], ...}, "2": {...}}}`` — frame
    stems map to XYXY pixel boxes with exclusive max; a frame missing from an object's map (or
    mapped to null) means the object is absent there.
    """
    frames = list_frames(folder)
    if not frames:
        raise DataError(f"{folder}: video without frames")
    path = folder / "boxes.json"
    try:
        objects = json.loads(path.read_text())["objects"]
    except FileNotFoundError:
        raise DataError(f"{path}: missing (box-only format: frames + boxes.json per video)") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"{path}: expected {{'objects': {{id: {{frame_stem: [x0, y0, x1, y1]}}}}}}") from None
    boxes: dict[int, list] = {}
    for key, per_frame in objects.items():
        try:
            obj_id = int(key)
        except ValueError:
            raise DataError(f"{path}: object id {key!r} is not an integer") from None
        seq = []
        for frame in frames:
            box = per_frame.get(frame.stem)
            if box is not None:
                if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
                    raise DataError(f"{path}: object {key} frame {frame.stem}: empty or malformed box {box}")
                box = tuple(float(v) for v in box)
            seq.append(box)
        boxes[obj_id] = seq
    return BoxVideo(name=folder.name, frames=frames, boxes=boxes)


def build_sources(spec: DatasetSpec) -> list[Source]:
    """All training sources of one dataset of the mixture."""
    root = Path(spec.root)
    if spec.kind in ("davis", "synthetic", "youtube"):
        layout = "youtube" if spec.kind == "youtube" else "davis"
        dataset = open_dataset(root, split=spec.split, layout=layout, year=spec.year)
        stride = 5 if spec.kind == "youtube" else 1
        sources: list[Source] = []
        for video in dataset.videos:
            if len(video.annotations) != video.num_frames:
                raise DataError(f"{root}: video '{video.name}' lacks masks on some frames (training needs every frame)")
            masks = [video.annotations[t] for t in range(video.num_frames)]
            sources.append(MaskVideo(video.name, video.frames, masks, stride))
        return sources
    if spec.kind == "boxes":
        if not root.is_dir():
            raise DataError(f"{root}: no such box-only dataset root (expected <video>/*.jpg + <video>/boxes.json)")
        return [read_box_video(p) for p in sorted(root.iterdir()) if p.is_dir()]
    if spec.kind == "static":
        if not root.is_dir():
            raise DataError(f"{root}: no such static dataset root (expected image.jpg + image.png pairs)")
        pairs = []
        for image in list_frames(root):
            if image.suffix.lower() == ".png":
                continue
            mask = image.with_suffix(".png")
            if mask.is_file():
                pairs.append(StaticImage(image.stem, image, mask))
        if not pairs:
            raise DataError(f"{root}: no image/mask pairs (expected name.jpg + name.png in one folder)")
        return pairs
    raise DataError(f"unknown dataset kind {spec.kind!r}")


def max_skip_at(config: DataConfig, progress: float) -> int:
    """XMem's curriculum: the max skip in force at a training-progress fraction in [0, 1]."""
    for skip, until in zip(config.max_skip, config.max_skip_steps):
        if progress < until:
            return skip
    return config.max_skip[-1]


def sample_frame_indices(rng: np.random.Generator, length: int, count: int, max_jump: int) -> list[int]:
    """XMem's sampling: start anywhere, then add frames within ``max_jump`` of any frame taken so far;
    sorted, reversed half of the time. Videos shorter than ``count`` repeat frames."""
    if length <= count:
        picked = sorted(list(range(length)) + list(rng.integers(0, length, size=count - length)))
    else:
        picked = [int(rng.integers(0, length))]
        reachable: set[int] = set()
        while len(picked) < count:
            last = picked[-1]
            reachable |= set(range(max(0, last - max_jump), min(length, last + max_jump + 1)))
            reachable -= set(picked)
            if not reachable:  # every frame near the picked ones is taken: widen to the whole video
                reachable = set(range(length)) - set(picked)
            picked.append(int(rng.choice(sorted(reachable))))
        picked.sort()
    if rng.random() < 0.5:
        picked.reverse()
    return [int(i) for i in picked]


class ClipDataset(TorchDataset):
    """Clips of ``num_frames`` frames at ``size``×``size`` from a weighted mixture of datasets.

    Indexed by draw id (see module docstring); ``total_draws`` is the number of draws of the whole run
    (iterations × batch × world size), used for the max-skip curriculum.
    """

    def __init__(self, config: DataConfig, seed: int, total_draws: int, sources: list[list[Source]] | None = None):
        self.config = config
        self.seed = seed
        self.total_draws = max(1, total_draws)
        self.sources = sources if sources is not None else [build_sources(spec) for spec in config.datasets]
        for spec, group in zip(config.datasets, self.sources):
            if not group:
                raise DataError(f"{spec.root}: the '{spec.kind}' dataset has no training videos")
            if config.supervision != "box" and any(isinstance(s, BoxVideo) for s in group):
                raise DataError(f"{spec.root}: box-only data cannot give masks (data.supervision is {config.supervision!r})")
        weights = np.array([spec.weight for spec in config.datasets], dtype=np.float64)
        self.weights = weights / weights.sum()

    def __len__(self) -> int:
        return self.total_draws

    def __getitem__(self, draw: int) -> dict:
        rng = np.random.default_rng([self.seed, int(draw)])
        max_skip = max_skip_at(self.config, draw / self.total_draws)
        for _ in range(20):  # retry when a clip's first frame shows no usable object (before or after augmentation)
            group = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
            source = group[int(rng.integers(0, len(group)))]
            clip = self._clip(source, rng, max_skip)
            if clip is not None:
                return clip
        raise DataError(f"could not sample a clip with a visible object after 20 tries (last source: {source.name})")

    # -- per source ---------------------------------------------------------------------------------
    def _clip(self, source: Source, rng: np.random.Generator, max_skip: int) -> dict | None:
        cfg = self.config
        t_count, size = cfg.num_frames, cfg.size
        if isinstance(source, StaticImage):
            image = read_image(source.image).float() / 255
            masks = (read_mask(source.mask) > 127).float()[None]  # one object, binary
            frames = image[None].expand(t_count, -1, -1, -1)
            masks = masks[None].expand(t_count, -1, -1, -1)
            geo = [self._geometry(rng, image.shape[-2:], strong=True, window=self._window(rng, image.shape[-2:])) for _ in range(t_count)]
            flows = [tps_flow(rng, size) for _ in range(t_count)]
            return self._finish(source.name, frames, masks, None, None, geo, flows, rng)
        jump = max(1, max_skip // source.stride)
        indices = sample_frame_indices(rng, len(source.frames), t_count, jump)
        if isinstance(source, MaskVideo):
            first = read_mask(source.masks[indices[0]])
            ids, counts = torch.unique(first, return_counts=True)
            present = [int(i) for i, c in zip(ids.tolist(), counts.tolist()) if i != 0 and c >= 16]
            if not present:
                return None
            chosen = sorted(rng.choice(present, size=min(cfg.max_objects, len(present)), replace=False).tolist())
            frames = torch.stack([read_image(source.frames[i]) for i in indices]).float() / 255
            index_masks = torch.stack([read_mask(source.masks[i]) for i in indices])
            masks = torch.stack([(index_masks == k) for k in chosen], 1).float()  # T×O×H×W
            geo = self._sequence_geometry(rng, frames.shape[-2:])
            return self._finish(source.name, frames, masks, None, None, geo, None, rng)
        # box-only video
        present = [k for k, seq in source.boxes.items() if seq[indices[0]] is not None]
        if not present:
            return None
        chosen = sorted(rng.choice(present, size=min(cfg.max_objects, len(present)), replace=False).tolist())
        frames = torch.stack([read_image(source.frames[i]) for i in indices]).float() / 255
        boxes = torch.zeros(t_count, len(chosen), 4)
        valid = torch.zeros(t_count, len(chosen), dtype=torch.bool)
        for o, k in enumerate(chosen):
            for t, i in enumerate(indices):
                box = source.boxes[k][i]
                if box is not None:
                    boxes[t, o] = torch.tensor(box)
                    valid[t, o] = True
        geo = self._sequence_geometry(rng, frames.shape[-2:])
        return self._finish(source.name, frames, None, boxes, valid, geo, None, rng)

    def _geometry(self, rng: np.random.Generator, hw, strong: bool, flip: bool = False, window=None) -> torch.Tensor:
        """One frame's output → source map. ``window`` (x0, y0, side) in source pixels: the square the
        frame is cropped to (``data.geometry: crop``); None squashes the whole frame to size×size."""
        angle = rng.uniform(-20, 20) if strong else rng.uniform(-15, 15)
        shear = rng.uniform(-10, 10)
        scale = rng.uniform(0.9, 1.1) if strong else rng.uniform(0.95, 1.05)
        shift = tuple(rng.uniform(-0.05, 0.05, size=2)) if strong else (0.0, 0.0)
        if window is None:
            return affine_matrix(tuple(int(v) for v in hw), self.config.size, angle, shear, scale, shift, flip)
        x0, y0, side = window
        inverse = affine_matrix((side, side), self.config.size, angle, shear, scale, shift, flip)
        offset = torch.tensor([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]], dtype=inverse.dtype)
        return offset @ inverse

    def _window(self, rng: np.random.Generator, hw) -> tuple[float, float, float] | None:
        """Crop mode: a random square of the frame at its own scale (side = data.size source pixels,
        or the shorter side when the frame is smaller: then the window is enlarged to size×size)."""
        if self.config.geometry != "crop":
            return None
        h, w = (float(v) for v in hw)
        side = min(float(self.config.size), h, w)
        return float(rng.uniform(0, w - side)), float(rng.uniform(0, h - side)), side

    def _sequence_geometry(self, rng: np.random.Generator, hw) -> list[torch.Tensor]:
        """Per-frame affine (rotation ±15°, shear ±10°) with one horizontal flip and (crop mode) one
        crop window shared by the clip."""
        flip = bool(rng.random() < 0.5)
        window = self._window(rng, hw)
        return [self._geometry(rng, hw, strong=False, flip=flip, window=window) for _ in range(self.config.num_frames)]

    def _finish(self, name, frames, masks, boxes, box_valid, geo, flows, rng) -> dict | None:
        """Warp, colour-jitter, compute boxes after augmentation, pad objects, apply the supervision mode.
        None when no object is left in the first frame after augmentation."""
        cfg = self.config
        size, t_count = cfg.size, cfg.num_frames
        inverses = torch.stack(geo)
        flow_t = torch.stack(flows) if flows is not None else None
        if masks is not None:  # frames and masks share one resampling pass
            fill = FILL_RGB + (0.0,) * masks.shape[1]
            warped = warp(torch.cat((frames, masks), 1), inverses, size, fill=fill, flows=flow_t)
            rgb, mask_t = warped[:, :3], (warped[:, 3:] > 0.5).float()
        else:
            rgb, mask_t = warp(frames, inverses, size, fill=FILL_RGB, flows=flow_t), None
            moved = [transform_boxes(boxes[t], box_valid[t], geo[t], size) for t in range(t_count)]
            box_t = torch.stack([b for b, _ in moved])
            valid_t = torch.stack([v for _, v in moved])
        rgb = rgb.clamp(0, 1)
        # sequence-wide colour jitter + rare grayscale, then a faint per-frame jitter (XMem's choice)
        rgb = color_jitter(rgb, rng, 0.1, 0.03, 0.03)
        if rng.random() < 0.05:
            gray = (0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2])[:, None]
            rgb = gray.expand_as(rgb).contiguous()
        rgb = torch.cat([color_jitter(rgb[t : t + 1], rng, 0.01, 0.01, 0.01) for t in range(t_count)])
        # quantise like a decoded frame, so the colour losses see uint8-like values
        rgb = (rgb * 255).round() / 255
        if mask_t is not None:  # boxes from the masks *after* augmentation
            box_t, valid_t = masks_to_boxes(mask_t)
        objects = box_t.shape[1]
        pad = cfg.max_objects - objects
        object_valid = torch.tensor([True] * objects + [False] * pad)
        if pad:
            box_t = torch.cat((box_t, torch.zeros(t_count, pad, 4)), 1)
            valid_t = torch.cat((valid_t, torch.zeros(t_count, pad, dtype=torch.bool)), 1)
            if mask_t is not None:
                mask_t = torch.cat((mask_t, torch.zeros(t_count, pad, size, size)), 1)
        object_valid &= valid_t[0]  # an object lost from the first frame by augmentation is dropped
        if not bool(object_valid.any()):
            return None  # augmentation moved every object out of the first frame: draw another clip
        sample = {"rgb": rgb, "boxes": box_t, "box_valid": valid_t & object_valid, "object_valid": object_valid, "name": name}
        if cfg.supervision == "first_mask":
            sample["first_mask"] = mask_t[0] * object_valid[:, None, None]
        elif cfg.supervision == "mask":
            sample["masks"] = mask_t * object_valid[None, :, None, None]
        return sample


class DrawSampler(Sampler[int]):
    """Yields the draw ids of one rank from ``start`` (resume point), ``batch`` at a time per iteration."""

    def __init__(self, start_iteration: int, iterations: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.end = start_iteration, iterations
        self.batch, self.rank, self.world = batch_size, rank, world_size

    def __iter__(self):
        for it in range(self.start, self.end):
            base = (it * self.world + self.rank) * self.batch
            yield from range(base, base + self.batch)

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.batch


def collate(samples: list[dict]) -> dict:
    out = {k: torch.stack([s[k] for s in samples]) for k in samples[0] if k != "name"}
    out["name"] = [s["name"] for s in samples]
    return out



__all__ = [
    "BoxVideo", "ClipDataset", "DrawSampler", "MaskVideo", "StaticImage", "build_sources", "collate",
    "max_skip_at", "read_box_video", "sample_frame_indices",
]
