"""The XMem network: modules, presets, preprocessing and weights I/O."""

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
