"""Where a training run reports: ``metrics.jsonl`` always, TensorBoard event files when available.

``metrics.jsonl`` (one JSON record per logged iteration) is the durable record the study and the
tests read. When the ``tensorboard`` package is installed (the ``tensorboard`` extra), the same
records also go to ``torch.utils.tensorboard`` event files in the run folder, with image grids of a
training clip, so ``tensorboard --logdir runs/`` shows curves and predictions while a run trains.

Tags: ``loss/<term>`` (every loss term: loss, proj, pair, temp for the weak objective; loss, ce,
dice for the oracle), ``weight/<term>`` (the warmed-up pair/temp weights, the oracle's bootstrapping
fraction p), ``train/lr``, ``train/it_per_s``, ``train/skipped`` (non-finite steps skipped so far);
images ``clip/frames``, ``clip/boxes``, ``clip/prediction`` and ``clip/mask`` (mask supervision only);
``eval/J&F``, ``eval/J``, ``eval/F`` from ``vos eval --tensorboard RUN``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import torch

from vos.errors import VosError
from vos.output import add_to_folder, append_line, output_command, record_written
from vos.train.samples import overlay

_EVENT_FILES = "events.out.tfevents.*"

# record keys that are not loss terms, and where they go
_TRAIN_KEYS = {"lr": "train/lr", "skipped": "train/skipped"}
_WEIGHT_KEYS = {"w_pair": "weight/pair", "w_temp": "weight/temp", "p": "weight/boot_p"}


def summary_writer(log_dir: Path):
    """A TensorBoard ``SummaryWriter`` for ``log_dir``, or None when tensorboard is not installed.

    Its event file (created with the writer) is recorded as ours in the run folder's manifest.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises it when the tensorboard package is missing
        return None
    before = set(log_dir.glob(_EVENT_FILES))
    writer = SummaryWriter(log_dir=str(log_dir))
    for path in set(log_dir.glob(_EVENT_FILES)) - before:
        record_written(path)
    return writer


def scalar_tags(record: dict) -> dict[str, float]:
    """A metrics record → {TensorBoard tag: value} (the iteration itself is the step, not a tag)."""
    tags = {}
    for key, value in record.items():
        if key == "iteration":
            continue
        if key == "sec_per_it":
            tags["train/it_per_s"] = 1.0 / value if value > 0 else 0.0
        elif key in _TRAIN_KEYS:
            tags[_TRAIN_KEYS[key]] = float(value)
        elif key in _WEIGHT_KEYS:
            tags[_WEIGHT_KEYS[key]] = float(value)
        else:
            tags[f"loss/{key}"] = float(value)
    return tags


def clip_images(batch: dict, probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The first clip of a batch as uint8 3×H×(T·W) strips: frames, boxes, prediction, mask.

    batch: the training batch (rgb B×T×3×H×W, boxes B×T×N×4, box_valid B×T×N, masks B×T×N×H×W when
    mask-supervised); probs: B×(T−1)×(1+N)×H×W predictions for frames 1..T−1 (frame 0 is the prompt).
    """
    rgb = batch["rgb"][0].detach().float().cpu()  # T×3×H×W
    frames = rgb.shape[0]
    boxes = batch["boxes"][0].cpu()
    valid = batch["box_valid"][0].cpu()
    objects = boxes.shape[1]
    none = torch.zeros(1 + objects, *rgb.shape[-2:])
    none[0] = 1
    predicted = [none] + [p for p in probs[0].detach().float().cpu()]

    def strip(tiles: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tiles, dim=2)

    images = {
        "clip/frames": strip([(rgb[t] * 255).clamp(0, 255).to(torch.uint8) for t in range(frames)]),
        "clip/boxes": strip([overlay(rgb[t], none, boxes[t], valid[t]) for t in range(frames)]),
        "clip/prediction": strip([overlay(rgb[t], predicted[t]) for t in range(frames)]),
    }
    if "masks" in batch:
        masks = batch["masks"][0].detach().float().cpu()  # T×N×H×W
        as_probs = torch.cat([1 - masks.amax(dim=1, keepdim=True), masks], dim=1)
        images["clip/mask"] = strip([overlay(rgb[t], as_probs[t]) for t in range(frames)])
    return images


class TrainingLog:
    """metrics.jsonl + (optionally) TensorBoard for one run folder; use as a context manager.

    ``say``: where the one-line notice goes when TensorBoard is off.
    """

    def __init__(self, out_dir: Path, say: Callable[[str], None] = print) -> None:
        self.metrics_path = Path(out_dir) / "metrics.jsonl"
        self.writer = summary_writer(Path(out_dir))
        if self.writer is None:
            say("TensorBoard logging is off (pip install -e '.[tensorboard]' to turn it on); metrics.jsonl is written")

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def record(self, record: dict) -> None:
        """Append one metrics record (with an "iteration" key) to metrics.jsonl and TensorBoard."""
        append_line(self.metrics_path, json.dumps(record))
        if self.writer is not None:
            for tag, value in scalar_tags(record).items():
                self.writer.add_scalar(tag, value, record["iteration"])

    def images(self, iteration: int, batch: dict, probs: torch.Tensor) -> None:
        """Image strips of the batch's first clip (see ``clip_images``); TensorBoard only."""
        if self.writer is None:
            return
        for tag, image in clip_images(batch, probs).items():
            self.writer.add_image(tag, image, iteration, dataformats="CHW")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


def weights_iteration(weights: str | Path, run_dir: Path) -> int:
    """The training iteration of ``weights`` from ``run_dir``: a checkpoint's own number
    (``iter_0001200.safetensors``), else (``final.safetensors``) the last logged iteration, else 0."""
    match = re.search(r"iter_(\d+)", Path(weights).name)
    if match:
        return int(match.group(1))
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return int(json.loads(lines[-1])["iteration"]) if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def log_evaluation(run_dir: str | Path, scores: dict[str, float], weights: str | Path) -> int | None:
    """Add final evaluation scores ({"J&F": …, "J": …, "F": …}) to a training folder's TensorBoard,
    at the iteration of ``weights``; returns that step, or None when tensorboard is not installed.

    The folder must be a ``vos train`` output; the new event file joins that run's record of files.
    """
    run_dir = Path(run_dir)
    if output_command(run_dir) != "train":
        raise VosError(f"--tensorboard {run_dir}: not the output folder of a `vos train` run")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    step = weights_iteration(weights, run_dir)
    before = set(run_dir.glob(_EVENT_FILES))
    writer = SummaryWriter(log_dir=str(run_dir))
    for path in set(run_dir.glob(_EVENT_FILES)) - before:
        add_to_folder(run_dir, "train", path)
    for name, value in scores.items():
        writer.add_scalar(f"eval/{name}", float(value), step)
    writer.close()
    return step
