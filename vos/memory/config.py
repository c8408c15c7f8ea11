"""Inference-memory configuration; defaults are XMem's DAVIS evaluation settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vos.errors import ConfigError


@dataclass
class MemoryConfig:
    """How the inference memory reads, grows, consolidates and forgets.

    top_k: memory elements per query pixel in the top-k softmax (k = min(top_k, N)).
    mem_every: every how many frames a frame becomes a memory frame (annotated frames always do).
    deep_update_every: every how many frames the value encoder refreshes the sensory memory;
        -1 = on every memory frame (synchronised, XMem's default).
    enable_long_term: consolidate working memory into long-term prototypes. When off, working
        memory keeps the first frame and the latest max_mid_term_frames − 1 frames (FIFO), so memory
        stays bounded either way.
    max_mid_term_frames / min_mid_term_frames: working memory (per object group) is consolidated
        when it holds max frames and keeps min frames afterwards (the first frame + the latest min − 1).
    num_prototypes: prototypes made per consolidation (at most the number of candidates).
    max_long_term_elements: long-term memory cap per object group; pruned by lowest usage to
        max − num_prototypes before new prototypes join.
    backend: memory-read implementation ("auto": Triton on CUDA when available, else PyTorch).
    read_mode: "sparse" (gather of k value columns) or "dense" (XMem's dense algorithm, for
        benchmarks and equivalence checks).
    """

    top_k: int = 30
    mem_every: int = 5
    deep_update_every: int = -1
    enable_long_term: bool = True
    max_mid_term_frames: int = 10
    min_mid_term_frames: int = 5
    num_prototypes: int = 128
    max_long_term_elements: int = 10000
    backend: Literal["auto", "torch", "triton"] = "auto"
    read_mode: Literal["sparse", "dense"] = "sparse"

    def __post_init__(self) -> None:
        for name in ("top_k", "mem_every", "min_mid_term_frames", "num_prototypes", "max_long_term_elements"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"memory.{name}: must be a positive integer, got {value!r}")
        if isinstance(self.max_mid_term_frames, bool) or not isinstance(self.max_mid_term_frames, int):
            raise ConfigError(f"memory.max_mid_term_frames: must be an integer, got {self.max_mid_term_frames!r}")
        if self.max_mid_term_frames <= self.min_mid_term_frames:
            raise ConfigError(
                f"memory.max_mid_term_frames: must exceed min_mid_term_frames ({self.min_mid_term_frames}), "
                f"got {self.max_mid_term_frames}"
            )
        if (
            isinstance(self.deep_update_every, bool)
            or not isinstance(self.deep_update_every, int)
            or (self.deep_update_every < 1 and self.deep_update_every != -1)
        ):
            raise ConfigError(
                f"memory.deep_update_every: must be a positive integer or -1 (synced with memory frames), "
                f"got {self.deep_update_every!r}"
            )
        if not isinstance(self.enable_long_term, bool):
            raise ConfigError(f"memory.enable_long_term: must be true or false, got {self.enable_long_term!r}")
        if self.max_long_term_elements <= self.num_prototypes:
            raise ConfigError(
                f"memory.max_long_term_elements: must exceed num_prototypes ({self.num_prototypes}), "
                f"got {self.max_long_term_elements}"
            )
        if self.backend not in ("auto", "torch", "triton"):
            raise ConfigError(f"memory.backend: must be 'auto', 'torch' or 'triton', got {self.backend!r}")
        if self.read_mode not in ("sparse", "dense"):
            raise ConfigError(f"memory.read_mode: must be 'sparse' or 'dense', got {self.read_mode!r}")
        if self.read_mode == "dense" and self.backend == "triton":
            raise ConfigError(
                "memory.read_mode: 'dense' is XMem's PyTorch algorithm and cannot run with backend 'triton'"
            )
