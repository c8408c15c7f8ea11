"""Training-data configuration: which datasets, how clips are sampled and augmented, what supervision."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vos.errors import ConfigError


@dataclass
class DatasetSpec:
    """One dataset of the training mixture.

    ``kind``: ``davis`` (DAVIS layout), ``youtube`` (YouTube-VOS layout; frames are every 5th, so
    skips are divided by 5), ``static`` (image/mask pairs turned into pseudo-videos), ``boxes``
    (frames + per-frame boxes, no masks), ``synthetic`` (the generated DAVIS-layout set).
    """

    kind: Literal["davis", "youtube", "static", "boxes", "synthetic"] = "synthetic"
    root: str = "data/synthetic"
    split: str = "train"
    weight: float = 1.0
    year: str = "2017"  # DAVIS ImageSets year (2016 lists the single-object videos)

    def __post_init__(self) -> None:
        if self.weight <= 0:
            raise ConfigError(f"data.datasets: weight must be > 0, got {self.weight}")


@dataclass
class DataConfig:
    """Clip sampling (XMem's max-skip curriculum) and supervision mode."""

    datasets: list[DatasetSpec] = field(default_factory=lambda: [DatasetSpec()])
    num_frames: int = 8
    size: int = 384
    # "squash": the whole frame resized to size×size (the thesis's pre-processing); "crop": a random
    # size×size window at the frame's own scale, one per clip (XMem's random crops)
    geometry: Literal["squash", "crop"] = "squash"
    max_objects: int = 3
    # Max-skip curriculum: (iteration fraction at which it changes, max skip) as in XMem's stage 3.
    max_skip: tuple[int, ...] = (5, 10, 15, 5)
    max_skip_steps: tuple[float, ...] = (0.1, 0.3, 0.8, 1.0)
    # box: only boxes reach the model and the losses; first_mask: one exact mask + boxes; mask: oracle.
    supervision: Literal["box", "first_mask", "mask"] = "box"
    first_frame_init: Literal["box", "mask"] = "box"
    num_workers: int = 2

    def __post_init__(self) -> None:
        if self.num_frames < 2:
            raise ConfigError(f"data.num_frames must be >= 2, got {self.num_frames}")
        if self.size < 32 or self.size % 16:
            raise ConfigError(f"data.size must be a multiple of 16 and >= 32, got {self.size}")
        if self.max_objects < 1:
            raise ConfigError(f"data.max_objects must be >= 1, got {self.max_objects}")
        if len(self.max_skip) != len(self.max_skip_steps):
            raise ConfigError("data.max_skip and data.max_skip_steps must have the same length")
        if self.supervision == "box" and self.first_frame_init == "mask":
            raise ConfigError("data.first_frame_init 'mask' needs masks: use supervision 'first_mask' or 'mask'")
