"""The XMem network: modules, presets, preprocessing, weights I/O, and the memory read
(``vos.model.memory_read``: not re-exported here, where the function would hide its module)."""

from vos.model.aggregate import aggregate
from vos.model.config import PRESETS, ModelConfig
from vos.model.network import XMem
from vos.model.preprocess import normalize, pad_divisible, unpad
from vos.model.weights import build_model, convert_checkpoint, infer_config, load_model, load_weights, model_from, save_weights

__all__ = [
    "PRESETS",
    "ModelConfig",
    "XMem",
    "aggregate",
    "build_model",
    "convert_checkpoint",
    "infer_config",
    "load_model",
    "load_weights",
    "model_from",
    "normalize",
    "pad_divisible",
    "save_weights",
    "unpad",
]
