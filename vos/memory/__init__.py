"""Memory read and XMem's inference memory, and whole-video segmentation."""

from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.memory.read import memory_read, resolve_backend, similarity
from vos.memory.segment import segment_video
from vos.memory.store import GroupMemory, InferenceMemory

__all__ = [
    "GroupMemory",
    "InferenceCore",
    "InferenceMemory",
    "MemoryConfig",
    "memory_read",
    "resolve_backend",
    "segment_video",
    "similarity",
]
