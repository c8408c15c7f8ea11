"""`vos segment`: a user's video (a folder of frames or a video file) from a mask or boxes on one frame.

Built on :class:`~vos.memory.session.VideoSession`: the prompt goes on frame ``frame``, propagation
runs forward, backward or both from there, frames whose shorter side exceeds ``size`` are shrunk to
it inside the core (the masks come back at the input size), and the id maps are written by
:class:`~vos.data.export.MaskExporter` in the chosen format. Timing covers the model step and the id
lookup at the input size (as XMem's FPS), not reading or writing files.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch

from vos.data.export import FORMATS, MaskExporter
from vos.data.io import read_mask
from vos.data.video import OverlayWriter, overlay as draw_overlay
from vos.errors import VosError
from vos.memory.config import MemoryConfig
from vos.memory.session import DIRECTIONS, VideoPredictor
from vos.output import claim_output
from vos.progress import progress as show_progress


def segment_video(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: torch.nn.Module,
    memory_config: MemoryConfig | None = None,
    mask_path: str | os.PathLike | None = None,
    boxes: Sequence[Sequence[float]] | Mapping[int, Sequence[float]] | None = None,
    size: int = 480,
    overlay: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    frame: int = 0,
    direction: str = "forward",
    fmt: str = "davis",
) -> dict:
    """Segment a video from a mask or boxes on one frame and write the masks.

    Args:
        input_path: a folder of frames (sorted by name) or a video file (decoded with PyAV).
        out_dir: where the masks go (created): see ``fmt``.
        model: the XMem network, in eval mode, on the device to run on.
        memory_config: memory settings (XMem's defaults when None).
        mask_path: index-mask PNG of frame ``frame`` (object ids 1..255), or
        boxes: boxes (x0, y0, x1, y1) on frame ``frame`` in input pixels, exclusive max: a list
            (box i is object i + 1) or {object id: box}; each object starts from its filled box
            (``vos.data.boxes.paint_boxes``).
        size: the largest shorter side the network sees (larger frames are shrunk, masks come back
            at the input size); -1 = always the native resolution.
        overlay: optional visualisation — a folder of PNGs, or a ``.mp4`` file (needs PyAV).
        progress: show progress (a bar on a terminal, plain lines otherwise).
        overwrite: replace what an earlier run of ours wrote in ``out_dir`` (and the overlay); a
            folder holding anything else is refused either way (:mod:`vos.output`).
        frame: index of the frame the prompt is on (0 = the first).
        direction: "forward", "backward" or "both" from ``frame``.
        fmt: "davis" (palette PNG per frame), "binary" (OUT/<id>/<frame>.png) or "coco" (OUT/masks.json).

    Returns:
        stats: frames, objects (ids), input_size and process_size (H, W), seconds and fps of the
        model step, memory (``InferenceCore.memory_stats()`` after the last frame), out_dir, and
        the frame range written (first, last).
    """
    input_path = Path(input_path)
    out_dir = Path(out_dir)
    if (mask_path is None) == (boxes is None):
        raise VosError("segment: give exactly one of a mask (--mask) or boxes (--box)")
    if size != -1 and size < 16:
        raise VosError(f"segment: size must be -1 (native) or at least 16, got {size}")
    if direction not in DIRECTIONS:
        raise VosError(f"segment: direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
    if fmt not in FORMATS:
        raise VosError(f"segment: format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if boxes is not None and not isinstance(boxes, Mapping):
        boxes = {i + 1: tuple(box) for i, box in enumerate(boxes)}
    if boxes is not None and not boxes:
        raise VosError("segment: no boxes given")
    settings = {"input": str(input_path.resolve()), "mask": str(Path(mask_path).resolve()) if mask_path else None,
                "boxes": {str(k): list(v) for k, v in boxes.items()} if boxes else None, "size": size,
                "frame": frame, "direction": direction, "format": fmt,
                "memory": dataclasses.asdict(memory_config) if memory_config is not None else None}
    predictor = VideoPredictor(model, memory_config, max_internal_size=None if size == -1 else size)
    with ExitStack() as stack:
        session = predictor.open(input_path)
        stack.callback(session.close)
        prompt_size = session.frame_size(frame)
        claims = [input_path, mask_path]
        stack.enter_context(claim_output(out_dir, "segment", settings, inputs=claims, overwrite=overwrite))
        if overlay is not None and Path(overlay).suffix.lower() != ".mp4":
            stack.enter_context(claim_output(overlay, "segment", settings, inputs=claims, overwrite=overwrite))
        elif overlay is not None and Path(overlay).exists() and not overwrite:
            raise VosError(f"{overlay}: exists; choose another --overlay file or pass --overwrite")
        if mask_path is not None:
            mask = read_mask(mask_path)
            if tuple(mask.shape) != prompt_size:
                raise VosError(
                    f"{mask_path}: mask is {mask.shape[0]}×{mask.shape[1]}, frame {frame} is {prompt_size[0]}×{prompt_size[1]}"
                )
            if not bool((mask > 0).any()):
                raise VosError(f"{mask_path}: mask has no objects (all background)")
            session.add(frame, mask=mask)
        else:
            session.add(frame, boxes=boxes)

        exporter = MaskExporter(out_dir, fmt, video=input_path.stem)
        written = []
        total = session.frames.count
        expected = None if total is None else {"forward": total - frame, "backward": frame + 1, "both": total}[direction]
        with show_progress(f"segment {input_path.name}", expected, unit="frames", enabled=progress) as advance:
            for k, ids in session.propagate(frame, direction):
                exporter.write(session.frames.name(k), ids)
                written.append(k)
                advance()
        exporter.close()
        if overlay is not None:
            write_overlays(session, Path(overlay))
    if not written:
        raise VosError(f"{input_path}: no frames to segment")
    return {
        "frames": len(written),
        "first": min(written),
        "last": max(written),
        "objects": session.object_ids,
        "input_size": session.size,
        "process_size": session.process_size,
        "seconds": session.seconds,
        "fps": len(written) / session.seconds if session.seconds > 0 else float("inf"),
        "memory": session.memory_stats,
        "out_dir": str(out_dir),
    }


def write_overlays(session, path: Path) -> None:
    """The session's results blended over their frames, in frame order, each frame's box prompts
    outlined: a folder of PNGs, or an .mp4 at the video's frame rate (`vos segment --overlay`, the
    app's overlay export)."""
    writer = OverlayWriter(path, session.frames.rate)
    done = False
    try:
        for k in session.results:
            entry = session.prompts.get(k)
            writer.write(session.frames.name(k), draw_overlay(session.frames[k], session.result(k), entry.boxes if entry else None))
        done = True
    finally:
        writer.close(success=done)
