"""vos — video object segmentation learned from boxes (XMem memory network, weak losses, Triton kernels).

Public entry points::

    from vos import load_model, VideoPredictor
    model = load_model("weights.safetensors" | "XMem.pth", device="cpu")   # build_model("small"): random
    video = VideoPredictor(model).open("clip.mp4")            # a folder, a video file or any iterable
    video.add(0, boxes={1: (40, 60, 200, 220)})
    for k, ids in video.propagate(0, direction="both"):      # H×W maps of object ids
        ...

Frame by frame: ``InferenceCore(model).step(image, boxes={1: box})`` → (1 + objects)×H×W probabilities.

Names are resolved lazily so that ``import vos.errors`` or the CLI's ``--help`` stay cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "vos.model.weights",
    "build_model": "vos.model.weights",
    "VideoPredictor": "vos.memory.session",
    "VideoSession": "vos.memory.session",
    "MaskExporter": "vos.data.export",
    "save_weights": "vos.model.weights",
    "convert_checkpoint": "vos.model.weights",
    "XMem": "vos.model.network",
    "ModelConfig": "vos.model.config",
    "InferenceCore": "vos.memory.core",
    "MemoryConfig": "vos.memory.config",
    "memory_read": "vos.model.memory_read",
    "segment_video": "vos.memory.segment",
    "Config": "vos.config",
    "load_config": "vos.config",
    "VosError": "vos.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'vos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
