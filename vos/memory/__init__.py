"""XMem's inference memory and core, object ids, the video session API, `vos segment`.

The memory read itself (top-k attention over the memory) is part of the network, in
``vos.model.memory_read``: the training recurrence calls it as much as the inference memory does.
"""

from vos.memory.config import MemoryConfig
from vos.memory.core import InferenceCore
from vos.memory.objects import ObjectManager
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
    "segment_video",
]
