"""Segment a user's video (a folder of frames or a video file) from a first-frame mask or boxes.

Frames are resized so that the shorter side is ``size`` (``-1``: native), run through an
:class:`~vos.memory.core.InferenceCore`, and the probabilities are resized back to the input size;
the masks are written as palette PNGs named like the input frames (videos: ``00000.png`` …).
Timing covers the model step and the resize back (as XMem's FPS), not reading or writing files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from vos.data.io import DAVIS_PALETTE, FRAME_SUFFIXES, list_frames, read_image, read_mask, write_image, write_mask
from vos.errors import VosError
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.output import atomic_write, claim_output
from vos.progress import progress_lines

_VIDEO_EXTRA = "reading mp4 needs the video extra: pip install 'vos[video]'"
_OVERLAY_ALPHA = 0.5


def segment_video(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: torch.nn.Module,
    memory_config: MemoryConfig | None = None,
    mask_path: str | os.PathLike | None = None,
    boxes: Sequence[Sequence[float]] | None = None,
    size: int = 480,
    overlay: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Segment every frame of a video and write the masks.

    Args:
        input_path: a folder of frames (sorted by name) or a video file (decoded with PyAV).
        out_dir: where the palette PNGs go (created).
        model: the XMem network, in eval mode, on the device to run on.
        memory_config: memory settings (XMem's defaults when None).
        mask_path: index-mask PNG of the first frame (object ids 1..255), or
        boxes: first-frame boxes (x0, y0, x1, y1) in input pixels, exclusive max; box i is object
            i + 1, given as a filled rectangle mask (where boxes overlap, the smaller box wins so that
            every object keeps pixels).
        size: shorter side of the processed frames; -1 = native resolution.
        overlay: optional visualisation — a folder of PNGs, or a ``.mp4`` file (needs PyAV).
        progress: show progress (a bar on a terminal, plain lines otherwise).
        overwrite: replace what an earlier run of ours wrote in ``out_dir`` (and the overlay); a
            folder holding anything else is refused either way (:mod:`vos.output`).

    Returns:
        stats: frames, objects (ids), input_size and process_size (H, W), seconds and fps of the
        model step + resize back, memory (``InferenceCore.memory_stats()`` at the end), out_dir.
    """
    input_path = Path(input_path)
    out_dir = Path(out_dir)
    if (mask_path is None) == (boxes is None):
        raise VosError("segment: give exactly one of a first-frame mask (--mask) or boxes (--box)")
    if size != -1 and size < 16:
        raise VosError(f"segment: size must be -1 (native) or at least 16, got {size}")
    for box in boxes or ():
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            raise VosError(f"segment: box {tuple(box)} has a coordinate that is not a finite number")
    names, frames, count, rate = _open_frames(input_path)
    settings = {"input": str(input_path.resolve()), "mask": str(Path(mask_path).resolve()) if mask_path else None,
                "boxes": [list(b) for b in boxes] if boxes else None, "size": size,
                "memory": dataclasses.asdict(memory_config) if memory_config is not None else None}
    with contextlib.ExitStack() as claims:
        claims.enter_context(claim_output(out_dir, "segment", settings, inputs=[input_path, mask_path], overwrite=overwrite))
        if overlay is not None and Path(overlay).suffix.lower() != ".mp4":
            claims.enter_context(claim_output(overlay, "segment", settings, inputs=[input_path, mask_path], overwrite=overwrite))
        elif overlay is not None and Path(overlay).exists() and not overwrite:
            raise VosError(f"{overlay}: exists; choose another --overlay file or pass --overwrite")
        return _segment(input_path, out_dir, model, memory_config, mask_path, boxes, size, overlay, progress,
                        names, frames, count, rate)


def _segment(input_path, out_dir, model, memory_config, mask_path, boxes, size, overlay, progress, names, frames, count, rate) -> dict:
    core = InferenceCore(model, memory_config)
    device = core.device
    overlay_writer = _OverlayWriter(Path(overlay), rate) if overlay is not None else None

    seconds = 0.0
    n = 0
    completed = False
    input_size = process_size = None
    object_ids: list[int] = []
    try:
        with _progress(progress, count, input_path.name) as advance:
            for name, frame in zip(names, frames, strict=False):
                if input_size is None:
                    input_size = (int(frame.shape[1]), int(frame.shape[2]))
                    first_mask = _first_mask(mask_path, boxes, input_size)
                    process_size = _process_size(input_size, size)
                elif tuple(frame.shape[1:]) != input_size:
                    raise VosError(
                        f"{input_path}: frame {name} is {frame.shape[1]}×{frame.shape[2]}, "
                        f"the first is {input_size[0]}×{input_size[1]}"
                    )
                image = _resize_image(frame.to(device), process_size)
                mask = None
                if n == 0:
                    mask = _resize_mask(first_mask.to(device), process_size)
                    lost = sorted(set(torch.unique(first_mask).tolist()) - set(torch.unique(mask).tolist()))
                    if lost:
                        raise VosError(
                            f"segment: objects {lost} vanish when the first frame is resized to "
                            f"{process_size[0]}×{process_size[1]}; use a larger size"
                        )
                _sync(device)
                start = time.perf_counter()
                probs = core.step(image, mask=mask)
                if process_size != input_size:
                    probs = F.interpolate(probs.unsqueeze(0), size=input_size, mode="bilinear", align_corners=False)[0]
                labels = probs.argmax(dim=0)
                _sync(device)
                seconds += time.perf_counter() - start

                object_ids = core.object_ids
                lut = torch.tensor([0, *object_ids], dtype=torch.uint8, device=labels.device)
                ids = lut[labels].cpu()
                write_mask(out_dir / f"{name}.png", ids)
                if overlay_writer is not None:
                    overlay_writer.write(name, _blend(frame, ids))
                n += 1
                advance()
        completed = True
    finally:
        if overlay_writer is not None:
            overlay_writer.close(success=completed and n > 0)
    if n == 0:
        raise VosError(f"{input_path}: no frames to segment")
    return {
        "frames": n,
        "objects": object_ids,
        "input_size": input_size,
        "process_size": process_size,
        "seconds": seconds,
        "fps": n / seconds if seconds > 0 else float("inf"),
        "memory": core.memory_stats(),
        "out_dir": str(out_dir),
    }


# ---------------------------------------------------------------------- input
def _open_frames(path: Path) -> tuple[Iterator[str], Iterator[torch.Tensor], int | None, float]:
    """→ (frame names, uint8 frames 3×H×W, frame count or None, frame rate)."""
    if path.is_dir():
        files = list_frames(path)
        if not files:
            raise VosError(f"{path}: no frames ({', '.join(FRAME_SUFFIXES)}) in this folder")
        return (f.stem for f in files), (read_image(f) for f in files), len(files), 24.0
    if not path.exists():
        raise VosError(f"{path}: input not found (give a folder of frames or a video file)")
    if path.suffix.lower() in FRAME_SUFFIXES:
        raise VosError(f"{path}: a single image; give a folder of frames or a video file")
    av = _import_av()
    try:
        container = av.open(str(path))
        stream = container.streams.video[0]
    except (IndexError, av.error.FFmpegError, OSError) as exc:
        raise VosError(f"{path}: cannot read this video ({exc.__class__.__name__})") from None
    count = stream.frames or None
    rate = float(stream.average_rate) if stream.average_rate else 24.0
    names = (f"{i:05d}" for i in range(1 << 62))
    return names, _decode(container, stream, path), count, rate


def _decode(container, stream, path: Path) -> Iterator[torch.Tensor]:
    av = _import_av()
    with container:
        try:
            for frame in container.decode(stream):
                yield torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()
        except av.error.FFmpegError as exc:
            raise VosError(f"{path}: corrupt video ({exc.__class__.__name__})") from None


def _import_av():
    try:
        import av
    except ImportError:
        raise VosError(_VIDEO_EXTRA) from None
    return av


def _first_mask(
    mask_path: str | os.PathLike | None, boxes: Sequence[Sequence[float]] | None, size: tuple[int, int]
) -> torch.Tensor:
    """First-frame index mask H×W (uint8 ids) from the mask PNG or the boxes."""
    h, w = size
    if mask_path is not None:
        mask = read_mask(mask_path)
        if tuple(mask.shape) != size:
            raise VosError(f"{mask_path}: mask is {mask.shape[0]}×{mask.shape[1]}, the first frame is {h}×{w}")
        if not bool((mask > 0).any()):
            raise VosError(f"{mask_path}: mask has no objects (all background)")
        return mask
    assert boxes is not None
    if len(boxes) == 0:
        raise VosError("segment: no boxes given")
    if len(boxes) > 255:
        raise VosError(f"segment: at most 255 boxes (objects), got {len(boxes)}")
    rects = []
    for i, box in enumerate(boxes):
        if len(box) != 4:
            raise VosError(f"segment: box {i + 1} must be x0,y0,x1,y1, got {tuple(box)}")
        if not all(math.isfinite(float(v)) for v in box):
            raise VosError(f"segment: box {i + 1} {tuple(box)} has a coordinate that is not a finite number")
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise VosError(f"segment: box {i + 1} {tuple(box)} is empty (need x0 < x1 and y0 < y1)")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise VosError(f"segment: box {i + 1} {tuple(box)} lies outside the {w}×{h} frame (x1, y1 exclusive)")
        rects.append((i + 1, x0, y0, x1, y1))
    mask = torch.zeros(h, w, dtype=torch.uint8)
    # Larger boxes first, so a small object inside a large box keeps its pixels.
    for obj, x0, y0, x1, y1 in sorted(rects, key=lambda r: -(r[3] - r[1]) * (r[4] - r[2])):
        mask[y0:y1, x0:x1] = obj
    hidden = sorted(set(range(1, len(rects) + 1)) - set(torch.unique(mask).tolist()))
    if hidden:
        raise VosError(f"segment: boxes {hidden} are completely covered by other boxes")
    return mask


def _process_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(H, W) with the shorter side resized to ``shorter`` (aspect kept); -1 = unchanged."""
    h, w = size
    if shorter == -1 or min(h, w) == shorter:
        return size
    if h <= w:
        return shorter, int(shorter * w / h)
    return int(shorter * h / w), shorter


def _resize_image(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 3×H×W → float 3×h×w in [0, 1] (bilinear, antialiased when shrinking)."""
    image = frame.float() / 255
    if tuple(image.shape[1:]) == size:
        return image
    out = F.interpolate(image.unsqueeze(0), size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0, 1)


def _resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == size:
        return mask
    return F.interpolate(mask[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)


@contextmanager
def _progress(enabled: bool, total: int | None, label: str) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callback; a rich progress bar on a terminal, plain lines otherwise."""
    if not enabled:
        yield lambda: None
        return
    if not sys.stdout.isatty():
        with progress_lines(f"segment {label}", total, unit="frames") as advance:
            yield advance
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(f"segment {label}", total=total)
        yield lambda: bar.advance(task)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------- output
_PALETTE = torch.tensor(list(DAVIS_PALETTE), dtype=torch.float32).view(256, 3)


def _blend(frame: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """uint8 frame 3×H×W with object pixels tinted by their palette colour."""
    colour = _PALETTE[ids.long()].permute(2, 0, 1)  # 3×H×W
    frame = frame.float()
    fg = (ids > 0).unsqueeze(0)
    out = torch.where(fg, frame * (1 - _OVERLAY_ALPHA) + colour * _OVERLAY_ALPHA, frame)
    return out.round().clamp(0, 255).to(torch.uint8)


class _OverlayWriter:
    """Overlay frames into a folder of PNGs, or an mp4 (written under a temporary name, renamed when done)."""

    def __init__(self, path: Path, rate: float) -> None:
        self.path = path
        self.rate = rate
        self.video = path.suffix.lower() == ".mp4"
        self._container = None
        self._stream = None
        if self.video:
            _import_av()
            self._file = atomic_write(path)
            self._tmp = self._file.__enter__()

    def write(self, name: str, image: torch.Tensor) -> None:
        if not self.video:
            write_image(self.path / f"{name}.png", image)
            return
        av = _import_av()
        # yuv420p needs even sizes: drop a last odd row/column.
        h, w = (image.shape[1] // 2) * 2, (image.shape[2] // 2) * 2
        array = image[:, :h, :w].permute(1, 2, 0).contiguous().numpy()
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), mode="w")
            self._stream = self._container.add_stream(_video_codec(av), rate=max(1, round(self.rate)))
            self._stream.width, self._stream.height = w, h
            self._stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(array, format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def close(self, success: bool) -> None:
        if not self.video:
            return
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        if success:
            self._file.__exit__(None, None, None)  # rename into place (and record it)
        else:
            failed = VosError("overlay not finished")
            self._file.__exit__(VosError, failed, None)  # removes the temporary


def _video_codec(av) -> str:
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises different types per version when a codec is missing
            continue
        return name
    raise VosError("writing an mp4 overlay needs an H.264 or MPEG-4 encoder in PyAV's FFmpeg")
