"""Procedural synthetic videos in DAVIS or YouTube-VOS layout.

Each video has a textured background and 1–3 objects with non-convex shapes — a wavy star-like body,
thin limbs sticking out, a hole — filled with textures whose colours differ from the background but
are not uniform. Objects move smoothly (translation, rotation, scale), occlude each other (a fixed
depth order per video), leave and re-enter the frame; in the YouTube layout some appear mid-video.
A box is a poor mask for such shapes (mean mask-area / box-area ≈ 0.5–0.65), so the set measures
whether box supervision recovers shapes.

Determinism: one ``numpy.random.Generator`` per video, seeded from (seed, video index); rendering is
pure numpy/torch on the CPU, and Pillow's JPEG encoder is deterministic, so a seed gives
byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vos.data.io import write_image, write_mask
from vos.output import claim_output, write_text

CANVAS = 128  # side of an object's local raster (shape and texture), in object pixels
CATEGORIES = ("blob", "critter", "ring", "glyph")


@dataclass(frozen=True)
class SyntheticSpec:
    videos: int = 48
    frames: int = 24
    height: int = 240
    width: int = 432
    seed: int = 0
    val_fraction: float = 0.25
    layout: Literal["davis", "youtube"] = "davis"
    max_objects: int = 3
    # an object's raster side (its extent before the per-frame scale wobble) as a fraction of the
    # frame's shorter side, drawn uniformly per object; the wavy body spans about half of it
    object_size: tuple[float, float] = (0.45, 0.75)
    # chance that an object's path swings out of the frame and back in
    leave_probability: float = 0.3


@dataclass
class _Object:
    shape: np.ndarray  # CANVAS×CANVAS float {0,1}
    texture: np.ndarray  # 3×CANVAS×CANVAS float [0,1]
    category: str
    size: float  # diameter in frame pixels at scale 1
    appear: int  # first frame it exists (0 except mid-video objects)
    path: Callable[[float], tuple[float, float, float, float]]  # t → (cx, cy, angle, scale)


def _smooth_noise(rng: np.random.Generator, channels: int, h: int, w: int, octaves=((4, 1.0), (8, 0.5), (16, 0.25))) -> np.ndarray:
    """Sum of bilinearly upsampled random grids (value noise), C×h×w, zero mean, roughly unit range."""
    out = torch.zeros(1, channels, h, w)
    for cells, amp in octaves:
        grid = torch.from_numpy(rng.random((1, channels, cells + 1, cells + 1), dtype=np.float32) - 0.5)
        out += amp * F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
    return out[0].numpy()


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _background(rng: np.random.Generator, h: int, w: int, hue: float) -> np.ndarray:
    """Low-saturation textured background, 3×h×w in [0,1]."""
    base = _hsv_to_rgb(hue, rng.uniform(0.15, 0.35), rng.uniform(0.45, 0.7))
    noise = _smooth_noise(rng, 3, h, w, octaves=((3, 0.5), (7, 0.35), (23, 0.2), (61, 0.12)))
    lum = _smooth_noise(rng, 1, h, w, octaves=((5, 0.6), (11, 0.3)))
    img = base[:, None, None] + 0.25 * noise + 0.35 * lum
    return np.clip(img, 0.0, 1.0)


def _object_shape(rng: np.random.Generator) -> np.ndarray:
    """Non-convex binary shape on a CANVAS² raster: wavy body, 1–2 thin limbs, maybe a hole."""
    n = CANVAS
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    c = (n - 1) / 2
    dx, dy = xx - c, yy - c
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    radius = 0.26 * n * np.ones_like(theta)
    for k in rng.choice(np.arange(2, 7), size=2, replace=False):
        radius *= 1 + rng.uniform(0.10, 0.22) * np.sin(k * theta + rng.uniform(0, 2 * math.pi))
    shape = r <= radius
    for _ in range(rng.integers(1, 3)):  # thin limbs: rotated rectangles from the centre outwards
        ang = rng.uniform(0, 2 * math.pi)
        ux, uy = math.cos(ang), math.sin(ang)
        along = dx * ux + dy * uy
        across = -dx * uy + dy * ux
        half_width = rng.uniform(0.025, 0.05) * n
        shape |= (along > 0) & (along < rng.uniform(0.36, 0.47) * n) & (np.abs(across) < half_width)
    if rng.random() < 0.6:  # a hole off-centre inside the body
        hr = rng.uniform(0.05, 0.09) * n
        hx, hy = c + rng.uniform(-0.06, 0.06) * n, c + rng.uniform(-0.06, 0.06) * n
        shape &= np.hypot(xx - hx, yy - hy) > hr
    return shape.astype(np.float32)


def _object_texture(rng: np.random.Generator, hue: float) -> np.ndarray:
    """Saturated base colour with a pattern (stripes, spots or noise): 3×CANVAS² in [0,1]."""
    n = CANVAS
    base = _hsv_to_rgb(hue, rng.uniform(0.55, 0.9), rng.uniform(0.55, 0.95))
    second = _hsv_to_rgb((hue + rng.uniform(-0.08, 0.08)) % 1.0, rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.8))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    kind = rng.integers(0, 3)
    if kind == 0:
        ang = rng.uniform(0, math.pi)
        period = rng.uniform(8, 20)
        pattern = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(ang) + yy * math.sin(ang)) / period)
    elif kind == 1:
        period = rng.uniform(12, 24)
        pattern = (np.sin(2 * math.pi * xx / period) * np.sin(2 * math.pi * yy / period) > 0.3).astype(np.float32)
    else:
        pattern = np.clip(_smooth_noise(rng, 1, n, n, octaves=((6, 1.0), (12, 0.6)))[0] + 0.5, 0, 1)
    tex = base[:, None, None] * (1 - 0.6 * pattern) + second[:, None, None] * 0.6 * pattern
    tex += 0.06 * _smooth_noise(rng, 3, n, n, octaves=((16, 1.0),))
    return np.clip(tex, 0.0, 1.0)


def _make_path(rng: np.random.Generator, h: int, w: int, frames: int, size: float, leaves: bool, slot: tuple[int, int] = (0, 1)):
    """Smooth trajectory t → (cx, cy, angle, scale). ``leaves``: swings out of the frame and back.
    ``slot`` (k, of n): the object starts in the k-th of n bands across the frame's longer side, so
    objects start apart and meet, if at all, by moving."""
    k, n = slot
    lo, hi = 0.2 + 0.6 * k / n, 0.2 + 0.6 * (k + 1) / n
    along_w = w >= h
    cx0 = rng.uniform(lo, hi) * w if along_w else rng.uniform(0.3, 0.7) * w
    cy0 = rng.uniform(0.3, 0.7) * h if along_w else rng.uniform(lo, hi) * h
    amp_x = rng.uniform(0.1, 0.25) * w if not leaves else 0.45 * w + 0.6 * size
    amp_y = rng.uniform(0.05, 0.2) * h
    period = frames * rng.uniform(0.9, 1.6)
    phase_x, phase_y = rng.uniform(-0.3, 0.3), rng.uniform(0, 2 * math.pi)
    spin = rng.uniform(-1.0, 1.0) * math.pi / frames * 1.5
    angle0 = rng.uniform(0, 2 * math.pi)
    scale_amp, scale_phase = rng.uniform(0.05, 0.2), rng.uniform(0, 2 * math.pi)

    def path(t: float) -> tuple[float, float, float, float]:
        # phase_x near 0 so that every object starts close to (cx0, cy0), i.e. visible at its first frame
        sx = math.sin(2 * math.pi * t / period + phase_x) - math.sin(phase_x)
        cx = cx0 + amp_x * sx
        cy = cy0 + amp_y * (math.sin(2 * math.pi * t / period + phase_y) - math.sin(phase_y))
        return cx, cy, angle0 + spin * t, 1.0 + scale_amp * math.sin(2 * math.pi * t / period + scale_phase)

    return path


def _render(objects: list[_Object], background: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite frame t: (rgb uint8 3×H×W, index mask uint8 H×W); later objects are in front."""
    _, h, w = background.shape
    rgb = background.clone()
    index = torch.zeros(h, w, dtype=torch.uint8)
    ys = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w)
    xs = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w)
    for obj_id, obj in enumerate(objects, start=1):
        if t < obj.appear:
            continue
        cx, cy, angle, scale = obj.path(float(t - obj.appear))
        half = 0.5 * obj.size * scale
        # frame pixel → object canvas coordinates in [-1, 1] (inverse rotation about the centre)
        dx, dy = xs - cx, ys - cy
        ca, sa = math.cos(angle), math.sin(angle)
        u = (ca * dx + sa * dy) / half
        v = (-sa * dx + ca * dy) / half
        grid = torch.stack((u, v), dim=-1)[None]
        layers = torch.cat((torch.from_numpy(obj.texture), torch.from_numpy(obj.shape)[None]), 0)[None]
        sampled = F.grid_sample(layers, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        alpha = sampled[3:4]
        rgb = rgb * (1 - alpha) + sampled[:3] * alpha
        index[alpha[0] > 0.5] = obj_id
    return (rgb * 255 + 0.5).clamp(0, 255).to(torch.uint8), index


def _make_video(spec: SyntheticSpec, video_idx: int, mid_video: bool):
    rng = np.random.default_rng([spec.seed, video_idx])
    h, w = spec.height, spec.width
    bg_hue = rng.random()
    background = torch.from_numpy(_background(rng, h, w, bg_hue)).float()
    num = int(rng.integers(1, spec.max_objects + 1))
    # hues spread evenly over the 0.2–0.8 turn of the colour wheel away from the background's, so
    # objects differ in colour from the background and from each other (by ≥ 0.6 / num of a turn)
    hue_phase = rng.random()
    objects = []
    for k in range(num):
        hue = (bg_hue + 0.2 + 0.6 * ((hue_phase + k / num) % 1.0)) % 1.0
        size = rng.uniform(*spec.object_size) * min(h, w)
        leaves = rng.random() < spec.leave_probability
        appear = 0
        if mid_video and k > 0 and rng.random() < 0.6:
            appear = int(rng.integers(2, max(3, spec.frames // 2)))
        objects.append(
            _Object(
                shape=_object_shape(rng),
                texture=_object_texture(rng, hue),
                category=CATEGORIES[int(rng.integers(0, len(CATEGORIES)))],
                size=size,
                appear=appear,
                path=_make_path(rng, h, w, spec.frames, size, leaves, (k, num)),
            )
        )
    frames = [_render(objects, background, t) for t in range(spec.frames)]
    return objects, frames


def _fill_ratios(index: torch.Tensor, num_objects: int) -> list[float]:
    """mask-area / tight-box-area of every object visible in an index mask."""
    out = []
    for obj_id in range(1, num_objects + 1):
        m = index == obj_id
        if not m.any():
            continue
        ys = torch.nonzero(m.any(1)).flatten()
        xs = torch.nonzero(m.any(0)).flatten()
        box = (ys[-1] - ys[0] + 1) * (xs[-1] - xs[0] + 1)
        out.append(float(m.sum()) / float(box))
    return out


def generate(
    out: str | Path, spec: SyntheticSpec = SyntheticSpec(), progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the synthetic set under ``out``; return a summary (videos per split, frames, fill ratio).

    ``out`` must be new or empty; ``overwrite`` first removes an earlier set of ours (:mod:`vos.output`).
    """
    out = Path(out)
    with claim_output(out, "data synthetic", dataclasses.asdict(spec), overwrite=overwrite):
        return _generate(out, spec, progress)


def _generate(out: Path, spec: SyntheticSpec, progress: Callable[[int], None] | None) -> dict:
    names = [f"synth{i:04d}" for i in range(spec.videos)]
    n_val = max(1, round(spec.videos * spec.val_fraction)) if spec.videos > 1 else 0
    val_names, train_names = names[:n_val], names[n_val:]
    ratios: list[float] = []
    total_frames = 0
    meta: dict[str, dict] = {"train": {}, "valid": {}}
    for i, name in enumerate(names):
        split = "val" if name in val_names else "train"
        mid_video = spec.layout == "youtube"
        objects, frames = _make_video(spec, i, mid_video)
        total_frames += len(frames)
        if spec.layout == "davis":
            img_dir = out / "JPEGImages" / "480p" / name
            ann_dir = out / "Annotations" / "480p" / name
            for t, (rgb, index) in enumerate(frames):
                write_image(img_dir / f"{t:05d}.jpg", rgb)
                write_mask(ann_dir / f"{t:05d}.png", index)
                ratios += _fill_ratios(index, len(objects))
        else:
            ysplit = "valid" if split == "val" else "train"
            img_dir = out / ysplit / "JPEGImages" / name
            ann_dir = out / ysplit / "Annotations" / name
            present: dict[int, list[str]] = {k: [] for k in range(1, len(objects) + 1)}
            first_seen: dict[int, int] = {}
            for t, (rgb, index) in enumerate(frames):
                stem = f"{5 * t:05d}"  # YouTube-VOS keeps every 5th frame of the 30 fps original
                write_image(img_dir / f"{stem}.jpg", rgb)
                ids = [int(v) for v in torch.unique(index).tolist() if v != 0]
                for k in ids:
                    present[k].append(stem)
                    first_seen.setdefault(k, t)
                ratios += _fill_ratios(index, len(objects))
                if ysplit == "train":
                    write_mask(ann_dir / f"{stem}.png", index)
            if ysplit == "valid":
                # valid: only the first-appearance frame of each object is annotated, holding the
                # objects that first appear there (as YouTube-VOS does)
                for t in sorted(set(first_seen.values())):
                    new = [k for k, f in first_seen.items() if f == t]
                    index = frames[t][1]
                    keep = torch.zeros_like(index)
                    for k in new:
                        keep[index == k] = k
                    write_mask(ann_dir / f"{5 * t:05d}.png", keep)
            objs_meta = {}
            for k, stems in present.items():
                if not stems:
                    continue
                if ysplit == "valid":  # valid meta lists frames from first appearance on
                    stems = [f"{5 * t:05d}" for t in range(first_seen[k], len(frames))]
                objs_meta[str(k)] = {"category": objects[k - 1].category, "frames": stems}
            meta[ysplit][name] = {"objects": objs_meta}
        if progress is not None:
            progress(i + 1)
    if spec.layout == "davis":
        sets = out / "ImageSets" / "2017"
        write_text(sets / "train.txt", "".join(f"{n}\n" for n in train_names))
        write_text(sets / "val.txt", "".join(f"{n}\n" for n in val_names))
    else:
        for ysplit in ("train", "valid"):
            write_text(out / ysplit / "meta.json", json.dumps({"videos": meta[ysplit]}, indent=1, sort_keys=True))
    return {
        "root": str(out),
        "layout": spec.layout,
        "train_videos": len(train_names),
        "val_videos": len(val_names),
        "frames": total_frames,
        "fill_ratio": float(np.mean(ratios)) if ratios else float("nan"),
    }
