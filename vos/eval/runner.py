"""The evaluation loop (``vos eval``): segment a benchmark, write the predictions, score them.

For each sequence of the dataset (or of one shard of it) the frames are resized so that the shorter
side is ``size`` (``-1``: native), run through one :class:`~vos.memory.core.InferenceCore` with the
memory settings given (XMem's defaults otherwise), and the probabilities are resized back to the
ground-truth resolution. Each object is given to the model on its first-appearance frame — as its
mask (``init="mask"``) or as the filled tight box of that mask (``init="box"``, the same model);
the masks of objects already tracked are never given again.

Output folder::

    OUT/predictions/<sequence>/<frame>.png   palette PNGs, named like the input frames
    OUT/done/<sequence>.json                 written after the last PNG: the sequence is complete
    OUT/overlays/<sequence>/<frame>.jpg      with overlay=True
    OUT/scores.json, scores_objects.csv, scores.md    (a shard: scores_shard<i>of<n>.*)
    OUT/submission.zip                       YouTube-VOS and DAVIS test-dev, once every sequence is done
    OUT/vos-manifest.json, .vos-written      what produced the predictions and which files are ours
                                             (:mod:`vos.output`; resume refuses other settings)

Resume: a sequence with its ``done`` marker (and all its PNGs) is skipped; any other sequence is
redone from its first frame, its partial PNGs removed first. Shards (``shard=(i, n)``) take every
n-th sequence from the i-th, so n processes (one per GPU) can share one output folder; the run that
finds every sequence done also writes the whole dataset's report (and zip).

FPS is timed around the model step and the resize back (XMem's convention; reading, resizing the
input and writing files excluded), with CUDA events on a GPU. Peak memory is the CUDA allocator's
peak on a GPU, the process's peak resident set size on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from vos.data.boxes import paint_boxes, tight_boxes
from vos.data.io import read_image, read_mask, write_image, write_mask
from vos.data.video import overlay as draw_overlay
from vos.errors import DataError, VosError
from vos.eval.outputs import (
    DONE, OVERLAYS, PREDICTIONS, SUBMISSION, build_report, clear_sequence, load_marker, write_submission,
)
from vos.eval.report import write_reports
from vos.eval.sources import DATASETS, SequenceJob, build_plan, shard_jobs
from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.model.preprocess import resize_image, resize_masks, resize_probs, shorter_side_size
from vos.output import claim_output, write_text
from vos.progress import progress as show_progress


_PREFETCH = 3  # frames read ahead by a background thread
# Memory settings that change the predictions (backend and read mode compute the same read).
_MEMORY_KEYS = ("top_k", "mem_every", "deep_update_every", "enable_long_term", "max_mid_term_frames",
                "min_mid_term_frames", "num_prototypes", "max_long_term_elements")


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → (i, n) with 0 ≤ i < n (``vos eval --shard 1/4``: the second of four shards)."""
    parts = str(text).strip().split("/")
    try:
        i, n = (int(p) for p in parts)
        if len(parts) != 2:
            raise ValueError
    except ValueError:
        raise VosError(f"--shard must be i/n (e.g. 0/4), got {text!r}") from None
    return _check_shard((i, n))


def evaluate(
    dataset: str,
    root: str | os.PathLike,
    weights_or_model: str | os.PathLike | torch.nn.Module,
    out_dir: str | os.PathLike,
    init: str = "mask",
    size: int = 480,
    memory: MemoryConfig | None = None,
    shard: tuple[int, int] = (0, 1),
    overlay: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    workers: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Evaluate a model on a dataset; write predictions, reports (and the submission zip); return the report.

    Args:
        dataset: one of ``d16 d17 d17-test y18 y19 lv1 lv3 generic synthetic`` (layouts:
            :mod:`vos.eval.sources`).
        root: the dataset root.
        weights_or_model: a checkpoint path or preset name (a preset gives random weights: ``model_from``), or a network
            (put in eval mode; moved to ``device`` when one is given).
        out_dir: output folder (see the module docstring); an existing one is resumed.
        init: ``mask`` (first-appearance masks) or ``box`` (their filled tight boxes).
        size: shorter side of the processed frames; -1 = native resolution.
        memory: inference-memory settings (XMem's defaults when None).
        shard: (i, n) — process every n-th sequence from the i-th.
        overlay: also write inspection overlays (predictions tinted with the palette colours; boxes
            drawn on the box-init frames).
        device: where to run (default: the model's device for a network, else CUDA when available).
        progress: rich progress bars (sequences, frames, running FPS).
        workers: scoring threads (default: one per CPU core).
        overwrite: first remove what an earlier run of ours wrote in ``out_dir`` (any settings).

    Returns:
        The report (as written to ``scores.json``): ``global``, ``sequences`` (with runtime per
        sequence), ``objects`` (with ``init_IoU``: IoU of the mask given on the object's
        first-appearance frame with its ground truth — the frame-0 IoU of box init), ``init``
        (mode, mean frame-0 IoU), ``runtime`` (fps, peak memory, frames, seconds, device) and ``eval``
        (settings, which sequences this call ran or skipped, whether the dataset is complete). For
        an incomplete sharded run, the report covers this shard's sequences.
    """
    if init not in ("mask", "box"):
        raise VosError(f"--init must be 'mask' or 'box', got {init!r}")
    if isinstance(size, bool) or not isinstance(size, int) or (size != -1 and size < 16):
        raise VosError(f"--size must be -1 (native resolution) or at least 16, got {size!r}")
    if dataset not in DATASETS:
        raise VosError(f"unknown dataset {dataset!r} (expected one of {', '.join(DATASETS)})")
    shard = _check_shard(tuple(shard))
    memory = memory if memory is not None else MemoryConfig()
    plan = build_plan(dataset, root)
    out = Path(out_dir)
    model, weights_id = _prepare_model(weights_or_model, device)
    settings = {
        "dataset": dataset,
        "root": str(Path(root).resolve()),
        "init": init,
        "size": size,
        "memory": {k: getattr(memory, k) for k in _MEMORY_KEYS},
        "weights": weights_id,
    }
    # shards share the folder; a network passed in (no path) cannot be compared with earlier weights
    with claim_output(out, "eval", settings, inputs=[root], overwrite=overwrite, resumable=True,
                      may_differ=("weights",) if weights_id is None else ()):
        return _evaluate(plan, out, model, memory, settings, init, size, shard, overlay, workers, progress, dataset)


def _evaluate(plan, out, model, memory, settings, init, size, shard, overlay, workers, progress, dataset) -> dict:
    jobs = shard_jobs(plan.jobs, shard)
    core = InferenceCore(model, memory)
    ran: list[str] = []
    skipped: list[str] = []
    label = dataset if shard[1] == 1 else f"{dataset} {shard[0]}/{shard[1]}"
    with _Progress(progress, label, jobs) as ui, torch.inference_mode():
        for job in jobs:
            if load_marker(out, job) is not None:
                skipped.append(job.name)
                ui.skip(job)
                continue
            clear_sequence(out, job.name)
            core.reset()
            stats = _run_sequence(job, core, out, init=init, size=size, binary=plan.binary, overlay=overlay, ui=ui)
            write_text(out / DONE / f"{job.name}.json", json.dumps(stats, indent=1) + "\n")
            ran.append(job.name)

    markers = {job.name: load_marker(out, job) for job in plan.jobs}
    complete = all(m is not None for m in markers.values())
    info = {**settings, "root": str(plan.root), "shard": list(shard), "ran": ran, "skipped": skipped,
            "complete": complete, "device": str(core.device)}
    report = build_report(plan, jobs, markers, out, init, info, workers, progress)
    write_reports(report, out, "scores" if shard[1] == 1 else f"scores_shard{shard[0]}of{shard[1]}")
    if complete and shard[1] > 1:
        report = build_report(plan, plan.jobs, markers, out, init, info, workers, progress)
        write_reports(report, out, "scores")
    if complete and plan.submission is not None:
        write_submission(out / SUBMISSION, out / PREDICTIONS, plan.names, plan.submission)
    return report


# ------------------------------------------------------------------------------ one sequence
def _run_sequence(
    job: SequenceJob, core: InferenceCore, out: Path, *, init: str, size: int, binary: bool, overlay: bool, ui: _Progress
) -> dict:
    """Segment one video and write its PNGs; returns the statistics stored in its done marker."""
    device = core.device
    pred_dir = out / PREDICTIONS / job.name
    pred_dir.mkdir(parents=True, exist_ok=True)
    overlay_dir = out / OVERLAYS / job.name
    first_ann = min(job.annotations)
    gt_size = tuple(read_mask(job.annotations[first_ann]).shape)
    background = torch.zeros(gt_size, dtype=torch.uint8)
    timer = _Timer(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    frame_size = process_size = None
    seen: set[int] = set()
    init_records: list[dict] = []
    seconds = 0.0
    processed = saved = 0
    ui.start_sequence(job.name, job.num_frames)
    for t, frame, mask in _read_frames(job):
        if frame_size is None:
            frame_size = (int(frame.shape[1]), int(frame.shape[2]))
            process_size = shorter_side_size(frame_size, size)
        elif tuple(frame.shape[1:]) != frame_size:
            raise DataError(
                f"{job.frames[t]}: frame is {frame.shape[2]}×{frame.shape[1]}, the first frame of "
                f"'{job.name}' is {frame_size[1]}×{frame_size[0]}"
            )
        given, new_ids, new_boxes = None, [], {}
        if mask is not None:
            if t == first_ann and tuple(mask.shape) != frame_size and tuple(read_mask(job.annotations[t]).shape) == gt_size:
                # the first annotation sets the output size, so a wrong one is named here, not the next
                raise DataError(
                    f"{job.annotations[t]}: mask is {mask.shape[1]}×{mask.shape[0]}, the frames of '{job.name}' "
                    f"are {frame_size[1]}×{frame_size[0]}"
                )
            if tuple(mask.shape) != gt_size:
                raise DataError(
                    f"{job.annotations[t]}: mask is {mask.shape[1]}×{mask.shape[0]}, the first annotation "
                    f"of '{job.name}' is {gt_size[1]}×{gt_size[0]}"
                )
            if binary:
                mask = (mask != 0).to(torch.uint8)
            new_ids = [i for i in _object_ids(mask) if i not in seen]
            if new_ids:
                masks, new_boxes = _initial_masks(mask, new_ids, init)
                for k, obj in enumerate(new_ids):
                    init_records.append({"object": obj, "frame": job.names[t], "IoU": _iou(masks[k], mask == obj),
                                         "box": list(new_boxes[obj]) if obj in new_boxes else None})
                given = _object_channels(masks, new_ids, process_size, device)
                seen.update(new_ids)
        if not seen:  # before the first annotation there is nothing to segment (XMem skips these frames)
            ids = background
        else:
            image = resize_image(frame.to(device, non_blocking=True), process_size)
            timer.start()
            probs = core.step(image, mask=given, objects=new_ids or None)
            if process_size != gt_size:
                probs = resize_probs(probs, gt_size)
            labels = probs.argmax(dim=0).to(torch.uint8)  # channel index (< 256 channels)
            seconds += timer.stop()
            processed += 1
            lut = torch.tensor([0, *core.object_ids], dtype=torch.uint8)  # channel → object id
            ids = lut[labels.cpu().long()]
        if job.saves(t):
            write_mask(pred_dir / f"{job.names[t]}.png", ids)
            saved += 1
            if overlay:
                write_image(overlay_dir / f"{job.names[t]}.jpg", draw_overlay(frame, ids, new_boxes))
        ui.frame(processed, seconds)
    ui.end_sequence(processed, seconds)

    return {
        "sequence": job.name,
        "frames": job.num_frames,
        "frames_processed": processed,
        "frames_saved": saved,
        "seconds": seconds,
        "fps": processed / seconds if seconds > 0 else None,
        "peak_memory_bytes": _peak_memory(device),
        "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda" else "process_max_rss",
        "frame_size": list(frame_size),
        "process_size": list(process_size),
        "output_size": list(gt_size),
        "objects": init_records,
    }


def _read_frames(job: SequenceJob) -> Iterator[tuple[int, torch.Tensor, torch.Tensor | None]]:
    """(position, uint8 frame 3×H×W, mask H×W or None), read ahead by a background thread."""

    def load(t: int):
        ann = job.annotations.get(t)
        return t, read_image(job.frames[t]), (read_mask(ann) if ann is not None else None)

    with ThreadPoolExecutor(1, thread_name_prefix="vos-eval-read") as pool:
        pending: deque = deque()
        nxt = 0
        try:
            while nxt < job.num_frames or pending:
                while nxt < job.num_frames and len(pending) < _PREFETCH:
                    pending.append(pool.submit(load, nxt))
                    nxt += 1
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def _object_ids(mask: torch.Tensor) -> list[int]:
    """Object ids of an index mask: 1..254 (255 is void, as in the DAVIS toolkit)."""
    counts = torch.bincount(mask.reshape(-1).long(), minlength=256)
    return (counts[1:255].nonzero().squeeze(1) + 1).tolist()


def _initial_masks(
    mask: torch.Tensor, ids: list[int], init: str
) -> tuple[torch.Tensor, dict[int, tuple[int, int, int, int]]]:
    """The masks given for new objects, K×H×W bool at the mask's resolution, and (box init) their
    boxes (x0, y0, x1, y1; exclusive max).

    Box init: each object's tight box as a filled rectangle. Where boxes overlap, the smaller box
    wins (larger ones are painted first), so a small object inside a large box keeps its pixels; an
    object whose box is covered completely by smaller ones keeps its whole rectangle.
    """
    if init == "mask":
        return torch.stack([mask == obj for obj in ids]), {}
    boxes = tight_boxes(mask, ids)
    _, masks = paint_boxes(boxes, tuple(mask.shape))
    return masks.bool(), boxes


def _object_channels(masks: torch.Tensor, ids: list[int], size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Per-object masks for ``InferenceCore.step``: max(ids)×h×w float at the processing size, channel
    ``id − 1`` holding object ``id`` (others zero); resized by ``resize_masks`` (nearest, as XMem,
    with a soft mask for an object that nearest neighbour would erase)."""
    masks = resize_masks(masks.to(device, torch.float32), size)
    channels = masks.new_zeros(max(ids), *size)
    channels[torch.tensor(ids, device=device) - 1] = masks
    return channels


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union



class _Timer:
    """Seconds between start() and stop(): CUDA events on a GPU (as XMem), the wall clock elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self._start: Any = None

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            end.synchronize()
            return self._start.elapsed_time(end) / 1000
        return time.perf_counter() - self._start


def _peak_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


# ------------------------------------------------------------------------------ bookkeeping
def _check_shard(shard: tuple) -> tuple[int, int]:
    if len(shard) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard):
        raise VosError(f"shard must be (i, n) integers, got {shard!r}")
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise VosError(f"--shard i/n needs 0 <= i < n, got {i}/{n}")
    return i, n


def _prepare_model(source, device) -> tuple[torch.nn.Module, str | None]:
    if isinstance(source, torch.nn.Module):
        model = source if device is None else source.to(device)
        return model.eval(), None
    from vos.model.weights import model_from

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    text = str(source)
    model, untrained = model_from(source, device)
    if untrained:
        return model, f"preset:{text}"
    # the content, not the path: weights retrained in place must not be mixed with older predictions
    with open(text, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return model, f"sha256:{digest}"


# ------------------------------------------------------------------------------ progress
class _Progress:
    """The frames of all sequences on the one progress display (:func:`vos.progress.progress`), with
    the current sequence and the FPS of this run beside the count."""

    def __init__(self, enabled: bool, label: str, jobs: list[SequenceJob]) -> None:
        self._display = show_progress(f"eval {label}", sum(job.num_frames for job in jobs), unit="frames", enabled=enabled)
        self._advance: Any = None
        self._name = ""
        self._shown = 0  # frames of the current sequence counted so far
        self._expected = 0
        self.done_frames = 0  # timed frames and seconds of the sequences finished in this run
        self.done_seconds = 0.0

    def __enter__(self) -> _Progress:
        self._advance = self._display.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._display.__exit__(*exc)

    def _fps(self, frames: int, seconds: float) -> str:
        frames, seconds = self.done_frames + frames, self.done_seconds + seconds
        return f"{frames / seconds:.1f} FPS" if seconds > 0 else ""

    def skip(self, job: SequenceJob) -> None:
        self._advance(job.num_frames, f"{job.name}: done before")

    def start_sequence(self, name: str, frames: int) -> None:
        self._name, self._shown, self._expected = name, 0, frames

    def frame(self, frames: int, seconds: float) -> None:
        """One more frame of the current sequence (frames, seconds: timed so far in it)."""
        self._shown += 1
        self._advance(1, f"{self._name}, {self._fps(frames, seconds)}".rstrip(", "))

    def end_sequence(self, frames: int, seconds: float) -> None:
        self.done_frames += frames
        self.done_seconds += seconds
        if self._shown < self._expected:
            self._advance(self._expected - self._shown, f"{self._name}, {self._fps(0, 0.0)}".rstrip(", "))
