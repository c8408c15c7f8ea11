"""Segment one's own video interactively: prompts on any frame, propagation both ways, corrections.

::

    predictor = VideoPredictor(load_model("weights.safetensors"), max_internal_size=480)
    video = predictor.open("clip.mp4")                       # a folder, a video file or any iterable
    video.add(0, boxes={1: (40, 60, 200, 220), 2: (300, 80, 380, 160)})
    for k, ids in video.propagate(0, direction="both"):     # H×W int64 maps of object ids
        ...
    video.add(40, mask={2: corrected_mask})                  # a correction on frame 40
    for k, ids in video.propagate(40):                       # frames 40… are replaced, < 40 kept
        ...

A session keeps the prompts (masks and boxes per frame and object) and the latest id map of every
frame it has propagated, compressed (a few kB per frame), so results can be read back
(:meth:`VideoSession.result`) and a propagation can restart from any frame it has seen. Frames are
read from the source on demand and the probabilities of one frame at a time exist, so memory stays
bounded on long videos (the memory network's own memory is bounded by its consolidation).

Propagation from frame ``s`` starts a fresh memory at ``s``: the objects are initialised from the
prompts on ``s`` and, for objects without a prompt there, from the stored result of ``s`` (so a
correction of one object keeps the others as they were). Prompts on frames reached later are applied
as they are reached (objects joining mid-video, re-annotations). ``direction="backward"`` runs the
same memory over the frames in reverse order; ``"both"`` runs forward, then backward, from ``s``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from vos.data.boxes import check_box
from vos.data.video import FrameSource, open_frames
from vos.device import synchronize
from vos.errors import VosError
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.memory.objects import check_id

Direction = Literal["forward", "backward", "both"]
DIRECTIONS = ("forward", "backward", "both")


@dataclass
class FramePrompts:
    """The prompts of one frame: per object a mask (H×W bool) or a box (x0, y0, x1, y1)."""

    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    boxes: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        return [*self.masks, *self.boxes]

    def drop(self, obj: int) -> None:
        self.masks.pop(obj, None)
        self.boxes.pop(obj, None)


class VideoPredictor:
    """A trained network and its inference settings; :meth:`open` starts a session on a video.

    Args:
        model: the network (``load_model(path)``), in eval mode on the device to run on.
        memory: memory settings (XMem's defaults when None).
        max_internal_size: the shorter side the network sees at most (XMem's 480; None = native).
        **core_options: passed to :class:`~vos.memory.core.InferenceCore` (compile, amp, channels_last).
    """

    def __init__(
        self,
        model,
        memory: MemoryConfig | None = None,
        max_internal_size: int | None = 480,
        **core_options,
    ) -> None:
        self.model = model
        self.memory = memory if memory is not None else MemoryConfig()
        self.max_internal_size = max_internal_size
        self.core_options = core_options
        self._core: InferenceCore | None = None

    def core(self) -> InferenceCore:
        """A reset inference core (built once: a channels-last copy of the network is made once)."""
        if self._core is None:
            self._core = InferenceCore(
                self.model, self.memory, max_internal_size=self.max_internal_size, **self.core_options
            )
        self._core.reset()
        return self._core

    def open(self, source, cache_dir=None) -> VideoSession:
        """A session on a folder of frames, a video file (decoded once into ``cache_dir``, a
        temporary folder by default), a :class:`~vos.data.video.FrameSource`, or any iterable of
        frames (uint8 3×H×W tensors or H×W×3 arrays: a stream, propagated forward as it arrives)."""
        return VideoSession(self, open_frames(source, cache_dir))


class VideoSession:
    """Prompts, results and propagation over one video (see the module docstring)."""

    def __init__(self, predictor: VideoPredictor, frames: FrameSource) -> None:
        self.predictor = predictor
        self.frames = frames
        self.prompts: dict[int, FramePrompts] = {}
        self._results: dict[int, tuple[tuple[int, int], bytes]] = {}
        self.size: tuple[int, int] | None = None
        self._streamed = False
        # a stream cannot restart, so its results are not kept: memory stays flat however long it runs
        self.keep_results = frames.random_access
        self.seconds = 0.0  # time in the network step and the id lookup, over all propagations
        self.process_size: tuple[int, int] | None = None  # the size the network saw
        self.memory_stats: dict[str, int] = {}  # the memory's sizes after the latest frame

    # ------------------------------------------------------------------ prompts
    def add(
        self,
        frame: int,
        boxes: Mapping[int, Sequence[float]] | None = None,
        mask: torch.Tensor | Mapping[int, torch.Tensor] | None = None,
    ) -> None:
        """Prompt objects on ``frame``: boxes {id: (x0, y0, x1, y1)} in pixels (exclusive max) and/or
        a mask (an H×W index map of ids, or {id: H×W mask}). A new prompt for an object on this frame
        replaces its earlier one there."""
        if boxes is None and mask is None:
            raise VosError("add: give boxes and/or a mask")
        size = self.frame_size(frame)
        entry = self.prompts.setdefault(frame, FramePrompts())
        new: dict[int, torch.Tensor | tuple] = {}
        for obj, box in (boxes or {}).items():
            new[check_id(obj)] = check_box(obj, box, size)
        if mask is not None:
            for obj, m in _split_mask(mask, size).items():
                if obj in new:
                    raise VosError(f"add: object {obj} is given both a box and a mask on frame {frame}")
                new[obj] = m
        for obj, prompt in new.items():
            entry.drop(obj)
            if isinstance(prompt, torch.Tensor):
                entry.masks[obj] = prompt
            else:
                entry.boxes[obj] = prompt

    def remove(self, ids: Sequence[int]) -> None:
        """Forget objects everywhere: their prompts and their pixels in the stored results."""
        gone = {check_id(o) for o in ids}
        for entry in self.prompts.values():
            for obj in gone:
                entry.drop(obj)
        self.prompts = {k: v for k, v in self.prompts.items() if v.ids}
        for k in list(self._results):
            ids_map = self.result(k)
            for obj in gone:
                ids_map[ids_map == obj] = 0
            self._store(k, ids_map)

    def clear(self, frame: int, ids: Sequence[int] | None = None) -> None:
        """Drop the prompts of ``ids`` (all objects when None) on ``frame``; stored results stay."""
        entry = self.prompts.get(frame)
        if entry is None:
            return
        for obj in entry.ids if ids is None else [check_id(o) for o in ids]:
            entry.drop(obj)
        if not entry.ids:
            del self.prompts[frame]

    @property
    def object_ids(self) -> list[int]:
        """Every object prompted so far, in the order first prompted (frame order)."""
        seen: list[int] = []
        for k in sorted(self.prompts):
            seen.extend(o for o in self.prompts[k].ids if o not in seen)
        return seen

    # ------------------------------------------------------------------ results
    def result(self, frame: int) -> torch.Tensor | None:
        """The latest id map (H×W int64) of ``frame``, or None if it has not been propagated."""
        stored = self._results.get(frame)
        if stored is None:
            return None
        size, data = stored
        return torch.from_numpy(np.frombuffer(zlib.decompress(data), dtype=np.int32).reshape(size).astype(np.int64))

    def restore(self, frame: int, ids: torch.Tensor) -> None:
        """Set the stored result of ``frame`` to an H×W id map saved earlier (a session resumed from
        disk), as if a propagation had produced it."""
        if tuple(ids.shape) != self.frame_size(frame):
            raise VosError(f"result of frame {frame}: shape {tuple(ids.shape)}, the frame is {self.size[0]}×{self.size[1]}")
        self._store(frame, torch.as_tensor(ids).to(torch.int64))

    def _store(self, frame: int, ids: torch.Tensor) -> None:
        if not self.keep_results:
            return
        array = ids.to("cpu", torch.int32).numpy()
        self._results[frame] = ((int(array.shape[0]), int(array.shape[1])), zlib.compress(array.tobytes(), 1))

    @property
    def results(self) -> list[int]:
        """Frames with a stored result, ascending."""
        return sorted(self._results)

    # ------------------------------------------------------------------ propagation
    def propagate(
        self, start: int | None = None, direction: Direction = "forward", end: int | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield (frame index, H×W int64 id map) from ``start`` (default: the first prompted frame)
        in ``direction``, up to ``end`` (inclusive; default: the last/first frame). Each yielded map
        replaces the stored result of its frame."""
        if direction not in DIRECTIONS:
            raise VosError(f"direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
        if not self.prompts and not self._results:
            raise VosError("propagate: no object yet; add a box or a mask first")
        if start is None:
            start = min(self.prompts) if self.prompts else min(self._results)
        if start not in self.prompts and start not in self._results:
            raise VosError(f"propagate: frame {start} has neither a prompt nor a result to start from")
        if not self.frames.random_access:
            if direction != "forward" or self._streamed:
                raise VosError("a stream can be propagated once, forward: its frames are not kept")
            self._streamed = True
        if direction in ("forward", "both"):
            yield from self._run(start, +1, end if direction == "forward" else None)
        if direction in ("backward", "both"):
            yield from self._run(start, -1, end if direction == "backward" else None, skip_first=direction == "both")

    def _run(self, start: int, step: int, end: int | None, skip_first: bool = False) -> Iterator[tuple[int, torch.Tensor]]:
        core = self.predictor.core()
        k = start
        first = True
        while k >= 0 and (end is None or (k - end) * step <= 0) and self.frames.exists(k):
            image = self.frames[k]
            mask, boxes = self._prompts_at(k, initial=first)
            synchronize(core.device)
            began = time.perf_counter()
            probs = core.step(image, mask=mask or None, boxes=boxes or None)
            ids = core.to_ids(probs).cpu()
            self.seconds += time.perf_counter() - began
            self.process_size = core.process_size
            self.memory_stats = core.memory_stats()
            self._store(k, ids)
            if not (first and skip_first):
                yield k, ids
            first = False
            k += step

    def _prompts_at(self, k: int, initial: bool) -> tuple[dict[int, torch.Tensor], dict[int, tuple]]:
        """Masks and boxes to give the core on frame k: its prompts, and on the first frame of a run
        the stored result for the objects without a prompt there (minus the prompted masks' pixels)."""
        entry = self.prompts.get(k, FramePrompts())
        masks = dict(entry.masks)
        boxes = dict(entry.boxes)
        if initial:
            stored = self.result(k)
            if stored is not None:
                taken = torch.zeros(stored.shape, dtype=torch.bool)
                for m in masks.values():
                    taken |= m
                for obj in [int(i) for i in torch.unique(stored).tolist() if i != 0]:
                    if obj not in masks and obj not in boxes:
                        region = (stored == obj) & ~taken
                        if bool(region.any()):
                            masks[obj] = region
        return masks, boxes

    def frame_size(self, frame: int) -> tuple[int, int]:
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise VosError(f"frame {frame!r}: must be a frame index >= 0")
        if self.size is None:
            if not self.frames.random_access:
                # a stream's size is known once its first frame arrives; prompts are checked then
                return self._peek_size(frame)
            if not self.frames.exists(frame):
                raise VosError(f"frame {frame}: the video has no such frame")
            self.size = tuple(int(v) for v in self.frames[frame].shape[1:])
        elif self.frames.random_access and not self.frames.exists(frame):
            raise VosError(f"frame {frame}: the video has no such frame")
        return self.size

    def _peek_size(self, frame: int) -> tuple[int, int]:
        if frame != 0:
            raise VosError("a stream's first prompt must be on frame 0 (later frames have not arrived)")
        self.size = tuple(int(v) for v in self.frames[0].shape[1:])
        return self.size

    def close(self) -> None:
        """Release the frame source (a video file's cache folder)."""
        self.frames.close()

    def __enter__(self) -> VideoSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _split_mask(mask: torch.Tensor | Mapping[int, torch.Tensor], size: tuple[int, int]) -> dict[int, torch.Tensor]:
    """An index map H×W or {id: H×W mask} → {id: H×W bool}; every given object must have pixels."""
    if isinstance(mask, Mapping):
        out = {}
        for obj, m in mask.items():
            m = torch.as_tensor(m)
            if tuple(m.shape) != size:
                raise VosError(f"mask of object {obj}: shape {tuple(m.shape)}, the frame is {size[0]}×{size[1]}")
            out[check_id(obj)] = m.cpu() > 0.5 if m.is_floating_point() else m.cpu() != 0
    else:
        mask = torch.as_tensor(mask).cpu()
        if tuple(mask.shape) != size:
            raise VosError(f"mask: shape {tuple(mask.shape)}, the frame is {size[0]}×{size[1]}")
        out = {check_id(int(i)): mask == i for i in torch.unique(mask).tolist() if i != 0}
    empty = [obj for obj, m in out.items() if not bool(m.any())]
    if empty:
        raise VosError(f"mask: objects {empty} have no pixels")
    if not out:
        raise VosError("mask: it gives no object (all background)")
    return out
