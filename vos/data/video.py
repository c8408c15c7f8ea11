"""Video input and overlay output: folders of frames, video files, live streams; masks drawn over frames.

Frame sources give uint8 3×H×W RGB tensors by index and never hold the whole video in memory:

- :class:`FolderFrames`: a folder of frame images, read on access (sorted by name);
- :class:`VideoFileFrames`: a video file decoded with PyAV (the ``video`` extra) in order, each
  decoded frame kept as a raw array in a cache folder so that earlier frames can be read again
  (backward propagation, corrections) without decoding the file a second time;
- :class:`StreamFrames`: any iterable of frames (a camera, a generator): frames are taken one by one
  as they are asked for, and only the latest is kept — forward only.

:func:`overlay` draws masks (and boxes) over a frame with torchvision's drawing utilities, in the
DAVIS palette's colours; :class:`OverlayWriter` writes such frames to a folder of PNGs or an mp4.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from vos.data.io import DAVIS_PALETTE, FRAME_SUFFIXES, list_frames, read_image, write_image
from vos.errors import DataError, VosError
from vos.output import atomic_write

VIDEO_EXTRA = "reading or writing mp4 needs the video extra: pip install 'vos[video]'"
OVERLAY_ALPHA = 0.5
_PALETTE = torch.tensor(list(DAVIS_PALETTE), dtype=torch.uint8).view(256, 3)


def import_av():
    """PyAV, or a VosError naming the extra that brings it."""
    try:
        import av
    except ImportError:
        raise VosError(VIDEO_EXTRA) from None
    return av


class FrameSource:
    """Frames of one video by index: ``source[k]`` → uint8 3×H×W; ``name(k)`` → the frame's name.

    ``count`` is the number of frames when known (None while a stream or a video file is still being
    read); ``random_access`` says whether earlier frames can be read again.
    """

    rate: float = 24.0
    random_access: bool = True

    @property
    def count(self) -> int | None:
        raise NotImplementedError

    def __getitem__(self, k: int) -> torch.Tensor:
        raise NotImplementedError

    def name(self, k: int) -> str:
        return f"{k:05d}"

    def exists(self, k: int) -> bool:
        """Whether frame k exists (may read ahead in a file or stream to find out)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (a cache folder, an open file)."""


class FolderFrames(FrameSource):
    """A folder of frame images (jpg/png…), sorted by name."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.files = list_frames(self.folder)
        if not self.files:
            raise DataError(f"{self.folder}: no frames ({', '.join(FRAME_SUFFIXES)}) in this folder")

    @property
    def count(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int) -> torch.Tensor:
        if not 0 <= k < len(self.files):
            raise VosError(f"{self.folder}: no frame {k} (the video has {len(self.files)})")
        return read_image(self.files[k])

    def name(self, k: int) -> str:
        return self.files[k].stem

    def exists(self, k: int) -> bool:
        return 0 <= k < len(self.files)


class VideoFileFrames(FrameSource):
    """A video file, decoded in order on demand; decoded frames are cached as raw arrays in
    ``cache_dir`` (a temporary folder by default, removed by ``close``), so RAM holds one frame."""

    def __init__(self, path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        av = import_av()
        try:
            self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
        except (IndexError, av.error.FFmpegError, OSError) as exc:
            raise DataError(f"{self.path}: cannot read this video ({exc.__class__.__name__})") from None
        self.rate = float(stream.average_rate) if stream.average_rate else 24.0
        self._frames = self._decode(stream)
        self._own_cache = cache_dir is None
        self.cache = Path(tempfile.mkdtemp(prefix="vos-frames-")) if cache_dir is None else Path(cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        # a temporary cache goes with the object even when close() is never called
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.cache, True) if self._own_cache else None
        self._decoded = 0
        self._done = False

    def _decode(self, stream) -> Iterator[np.ndarray]:
        av = import_av()
        try:
            for frame in self._container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as exc:
            raise DataError(f"{self.path}: corrupt video ({exc.__class__.__name__})") from None

    def _read_to(self, k: int) -> None:
        while not self._done and self._decoded <= k:
            array = next(self._frames, None)
            if array is None:
                self._done = True
                self._container.close()
                break
            np.save(self.cache / f"{self._decoded:06d}.npy", array)
            self._decoded += 1

    @property
    def count(self) -> int | None:
        return self._decoded if self._done else None

    def exists(self, k: int) -> bool:
        if k < 0:
            return False
        self._read_to(k)
        return k < self._decoded

    def __getitem__(self, k: int) -> torch.Tensor:
        if not self.exists(k):
            raise VosError(f"{self.path}: no frame {k} (the video has {self._decoded})")
        return torch.from_numpy(np.load(self.cache / f"{k:06d}.npy")).permute(2, 0, 1).contiguous()

    def close(self) -> None:
        if not self._done:
            self._container.close()
            self._done = True
        if self._cleanup is not None:
            self._cleanup()


class StreamFrames(FrameSource):
    """Frames that arrive one at a time (uint8 3×H×W tensors or H×W×3 arrays); only the latest is
    kept, so a stream can be read forward once and its memory stays bounded however long it runs."""

    random_access = False

    def __init__(self, frames: Iterable) -> None:
        self._it = iter(frames)
        self._index = -1
        self._frame: torch.Tensor | None = None
        self._done = False

    @property
    def count(self) -> int | None:
        return self._index + 1 if self._done else None

    def _advance_to(self, k: int) -> None:
        if k < self._index:
            raise VosError(f"a stream cannot go back: frame {k} was asked for after frame {self._index}")
        while self._index < k and not self._done:
            frame = next(self._it, None)
            if frame is None:
                self._done = True
                break
            self._frame = as_frame(frame, self._index + 1)
            self._index += 1

    def exists(self, k: int) -> bool:
        self._advance_to(k)
        return k == self._index and self._frame is not None

    def __getitem__(self, k: int) -> torch.Tensor:
        if not self.exists(k):
            raise VosError(f"the stream has no frame {k} (it ended after {self._index + 1} frames)")
        assert self._frame is not None
        return self._frame


def as_frame(frame, k: int = 0) -> torch.Tensor:
    """A frame given by a caller (uint8 3×H×W tensor, or an H×W×3 uint8 array as OpenCV/PIL give
    after RGB conversion) → uint8 3×H×W tensor."""
    if isinstance(frame, np.ndarray):
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise VosError(f"frame {k}: expected an H×W×3 RGB array, got shape {frame.shape}")
        frame = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
    if not isinstance(frame, torch.Tensor) or frame.dim() != 3 or frame.shape[0] != 3:
        shape = tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
        raise VosError(f"frame {k}: expected an RGB tensor 3×H×W, got {shape}")
    if frame.dtype != torch.uint8:
        if not frame.is_floating_point():
            raise VosError(f"frame {k}: expected uint8 or float in [0, 1], got {frame.dtype}")
        frame = (frame.clamp(0, 1) * 255).round().to(torch.uint8)
    return frame.contiguous()


def open_frames(source, cache_dir: str | os.PathLike | None = None) -> FrameSource:
    """A folder of frames, a video file, a FrameSource, or any iterable of frames (a stream)."""
    if isinstance(source, FrameSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return FolderFrames(path)
        if not path.exists():
            raise DataError(f"{path}: input not found (give a folder of frames or a video file)")
        if path.suffix.lower() in FRAME_SUFFIXES:
            raise DataError(f"{path}: a single image; give a folder of frames or a video file")
        return VideoFileFrames(path, cache_dir)
    if isinstance(source, Iterable):
        return StreamFrames(source)
    raise VosError(f"cannot read frames from a {type(source).__name__}: give a folder, a video file or an iterable")


# ---------------------------------------------------------------------- overlays
def overlay(
    frame: torch.Tensor, ids: torch.Tensor, boxes: Mapping[int, Sequence[float]] | None = None
) -> torch.Tensor:
    """uint8 frame 3×H×W with each object of the H×W id map tinted by its DAVIS palette colour
    (alpha 0.5) and the given boxes {id: (x0, y0, x1, y1), exclusive max} outlined in the same colour.
    The frame is resized to the map's size when they differ."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    if tuple(frame.shape[1:]) != tuple(ids.shape):
        resized = torch.nn.functional.interpolate(frame[None].float(), size=tuple(ids.shape), mode="bilinear", align_corners=False)
        frame = resized[0].round().clamp(0, 255).to(torch.uint8)
    ids = ids.cpu()
    frame = frame.cpu()
    present = [int(i) for i in torch.unique(ids).tolist() if i != 0]
    if present:
        masks = torch.stack([ids == i for i in present])
        frame = draw_segmentation_masks(frame, masks, alpha=OVERLAY_ALPHA, colors=[object_colour(i) for i in present])
    if boxes:
        xyxy = torch.tensor([list(b) for b in boxes.values()], dtype=torch.float32)
        xyxy[:, 2:] -= 1  # torchvision's boxes include their last pixel
        frame = draw_bounding_boxes(frame, xyxy, colors=[object_colour(i) for i in boxes], width=1)
    return frame


def object_colour(obj: int) -> tuple[int, int, int]:
    """The RGB colour of an object id in overlays: its DAVIS palette entry."""
    return tuple(int(c) for c in _PALETTE[obj % 256].tolist())


class OverlayWriter:
    """Overlay frames into a folder of PNGs, or an mp4 (written under a temporary name, renamed when done)."""

    def __init__(self, path: str | os.PathLike, rate: float = 24.0) -> None:
        self.path = Path(path)
        self.rate = rate
        self.video = self.path.suffix.lower() == ".mp4"
        self._container = None
        self._stream = None
        if self.video:
            import_av()
            self._file = atomic_write(self.path)
            self._tmp = self._file.__enter__()

    def write(self, name: str, image: torch.Tensor) -> None:
        if not self.video:
            write_image(self.path / f"{name}.png", image)
            return
        av = import_av()
        # yuv420p needs even sizes: drop a last odd row/column.
        h, w = (image.shape[1] // 2) * 2, (image.shape[2] // 2) * 2
        array = image[:, :h, :w].permute(1, 2, 0).contiguous().numpy()
        if self._container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._container = av.open(str(self._tmp), mode="w", format="mp4")  # the temporary name has no .mp4
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
