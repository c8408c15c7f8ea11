"""Evaluation configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vos.errors import ConfigError


@dataclass
class EvalConfig:
    dataset: Literal["d16", "d17", "d17-test", "y18", "y19", "lv1", "lv3", "generic", "synthetic"] = "synthetic"
    root: str = "data/synthetic"
    split: str = "val"
    init: Literal["mask", "box"] = "mask"
    size: int = 480  # shorter side; -1 keeps the native resolution
    out_dir: str = "runs/eval"
    overlay: bool = False

    def __post_init__(self) -> None:
        if self.size != -1 and self.size < 16:
            raise ConfigError(f"eval.size must be -1 (native) or >= 16, got {self.size}")
