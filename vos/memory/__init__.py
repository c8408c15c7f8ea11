"""Memory read, XMem's inference memory and core, object ids, the video session API, `vos segment`.

Names are resolved on first use, so that importing the memory read (``vos.memory.read``, which the
network's training read uses) does not pull in the inference core, which imports the network.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "GroupMemory": "vos.memory.store",
    "InferenceCore": "vos.memory.core",
    "InferenceMemory": "vos.memory.store",
    "MemoryConfig": "vos.memory.config",
    "ObjectManager": "vos.memory.objects",
    "VideoPredictor": "vos.memory.session",
    "VideoSession": "vos.memory.session",
    "memory_read": "vos.memory.read",
    "resolve_backend": "vos.memory.read",
    "segment_video": "vos.memory.segment",
    "similarity": "vos.memory.read",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vos.memory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
