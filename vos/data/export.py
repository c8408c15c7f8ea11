"""Writing segmentation results: DAVIS palette PNGs, per-object binary PNGs, COCO run-length JSON.

One :class:`MaskExporter` per output folder takes (frame name, H×W id map) pairs:

- ``davis``: ``OUT/<frame>.png``, one palette PNG of object ids per frame (ids 1–255), as DAVIS and
  XMem write them;
- ``binary``: ``OUT/<id>/<frame>.png``, one 0/255 PNG per object and frame (written for every frame,
  empty where the object is absent);
- ``coco``: ``OUT/masks.json`` in the YouTube-VIS results layout that detection and tracking tools
  read: one entry per object with a COCO compressed RLE (``{"size": [H, W], "counts": str}``), a
  ``[x, y, w, h]`` box and an area per frame (``null`` where absent).

The RLE encoder is written here (about 40 lines) rather than taken from pycocotools, which needs a C
build against the installed numpy for two small functions; its output is the same string format
(column-major runs starting with background, each run delta-coded against the run two before and
written in 5-bit groups offset by 48, as in the COCO API's ``rleToString``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vos.data.io import write_mask
from vos.errors import VosError
from vos.output import write_text

Format = Literal["davis", "binary", "coco"]
FORMATS = ("davis", "binary", "coco")
COCO_FILE = "masks.json"


def rle_encode(mask: np.ndarray | torch.Tensor) -> dict:
    """H×W binary mask → COCO compressed RLE {"size": [H, W], "counts": str}."""
    mask = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    height, width = mask.shape
    flat = mask.astype(bool).flatten(order="F")  # column-major, as COCO
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]  # the runs start with background
    chars = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
    return {"size": [height, width], "counts": "".join(chars)}


def rle_decode(rle: dict) -> np.ndarray:
    """COCO compressed RLE → H×W bool mask (the inverse of :func:`rle_encode`)."""
    height, width = rle["size"]
    text = rle["counts"]
    runs: list[int] = []
    p = 0
    while p < len(text):
        x = k = 0
        more = True
        while more:
            c = ord(text[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    flat = np.zeros(height * width, dtype=bool)
    position, value = 0, False
    for run in runs:
        flat[position : position + run] = value
        position += run
        value = not value
    return flat.reshape(width, height).T


class MaskExporter:
    """Writes id maps of one video into ``out_dir`` in one of :data:`FORMATS`.

    Call :meth:`write` for each frame (any order; a frame written again replaces the earlier one)
    and :meth:`close` at the end (the COCO file is written there, atomically).
    """

    def __init__(self, out_dir: str | os.PathLike, fmt: Format = "davis", video: str = "video") -> None:
        if fmt not in FORMATS:
            raise VosError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
        self.out_dir = Path(out_dir)
        self.format = fmt
        self.video = video
        self.size: tuple[int, int] | None = None
        self._objects: set[int] = set()
        self._frames: dict[str, dict[int, dict]] = {}  # coco: frame name → {id: rle}
        self._order: list[str] = []

    def write(self, name: str, ids: torch.Tensor) -> None:
        """One frame's H×W id map (0 = background)."""
        ids = ids.cpu()
        self.size = (int(ids.shape[0]), int(ids.shape[1]))
        present = [int(i) for i in torch.unique(ids).tolist() if i != 0]
        if self.format == "davis":
            if present and (max(present) > 255):
                raise VosError(f"object ids {[i for i in present if i > 255]}: DAVIS PNGs hold ids 1–255; use --format coco")
            write_mask(self.out_dir / f"{name}.png", ids.to(torch.uint8))
            return
        if name not in self._frames:
            self._order.append(name)
        self._objects.update(present)
        if self.format == "coco":
            self._frames[name] = {obj: rle_encode(ids == obj) for obj in present}
            return
        self._frames[name] = {}
        for obj in sorted(self._objects):
            write_mask(self.out_dir / str(obj) / f"{name}.png", (ids == obj).to(torch.uint8) * 255, palette=_GREY)
        # an object first seen now also gets (empty) masks for the frames written before
        for earlier in self._order[:-1]:
            for obj in present:
                path = self.out_dir / str(obj) / f"{earlier}.png"
                if not path.exists():
                    write_mask(path, torch.zeros(self.size, dtype=torch.uint8), palette=_GREY)

    def close(self) -> None:
        if self.format != "coco" or self.size is None:
            return
        names = sorted(self._order)
        annotations = []
        for obj in sorted(self._objects):
            segmentations, boxes, areas = [], [], []
            for name in names:
                rle = self._frames[name].get(obj)
                segmentations.append(rle)
                if rle is None:
                    boxes.append(None)
                    areas.append(None)
                    continue
                mask = rle_decode(rle)
                ys, xs = np.nonzero(mask)
                boxes.append([int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)])
                areas.append(int(mask.sum()))
            annotations.append({"video": self.video, "object_id": obj, "segmentations": segmentations,
                                "bboxes": boxes, "areas": areas})
        document = {
            "videos": [{"name": self.video, "height": self.size[0], "width": self.size[1], "frames": names}],
            "annotations": annotations,
        }
        write_text(self.out_dir / COCO_FILE, json.dumps(document))


# a grey-level palette: binary masks read back as 0/255 in any image viewer
_GREY = bytes(v for i in range(256) for v in (i, i, i))
