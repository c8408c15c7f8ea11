"""Memory read, XMem's inference memory and core, object ids, the video session API, `vos segment`."""

from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.memory.objects import ObjectManager
from vos.memory.read import memory_read, resolve_backend, similarity
from vos.memory.segment import segment_video
from vos.memory.session import VideoPredictor, VideoSession
from vos.memory.store import GroupMemory, InferenceMemory

__all__ = [
    "GroupMemory",
    "InferenceCore",
    "InferenceMemory",
    "MemoryConfig",
    "ObjectManager",
    "VideoPredictor",
    "VideoSession",
    "memory_read",
    "resolve_backend",
    "segment_video",
    "similarity",
]
