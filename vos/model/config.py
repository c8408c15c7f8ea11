"""Network configuration: the architecture's dimensions and how it is initialised.

Two presets give the defaults; any dimension left at ``None`` is filled from the preset in
``__post_init__``, so ``ModelConfig(preset="xmem")`` is the official architecture and
``ModelConfig(preset="small", value_dim=256)`` overrides one width of the small one.

``xmem``  — the official XMem network (checkpoint-compatible): ResNet-50 key encoder (f16/f8/f4 =
            1024/512/256 channels), key 64, value 512, sensory 64, decoder widths 512/256/256,
            hidden-updater width 256. About 62 M parameters.
``small`` — a CPU-friendly variant for the synthetic demo and tests: ResNet-18 key encoder (f16/f8/f4 =
            256/128/64), key 64, value 128, sensory 32, decoder widths 128/64/32, hidden-updater
            width 64. The value encoder stays a ResNet-18 trunk in both presets (so ImageNet
            initialisation applies to it unchanged).

When a checkpoint is loaded (``vos.model.weights.load_model``) the dimensions come from the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vos.errors import ConfigError

# Channel widths (f16, f8, f4) of the key encoder's stride-16/8/4 features per backbone.
KEY_ENCODER_CHANNELS: dict[str, tuple[int, int, int]] = {
    "resnet50": (1024, 512, 256),
    "resnet18": (256, 128, 64),
}

# The value encoder is a ResNet-18 trunk: its stride-16 output has this many channels.
VALUE_ENCODER_CHANNELS = 256

PRESETS: dict[str, dict[str, object]] = {
    "xmem": {
        "key_encoder": "resnet50",
        "key_dim": 64,
        "value_dim": 512,
        "hidden_dim": 64,
        "decoder_dims": (512, 256, 256),
        "hidden_update_dim": 256,
    },
    "small": {
        "key_encoder": "resnet18",
        "key_dim": 64,
        "value_dim": 128,
        "hidden_dim": 32,
        "decoder_dims": (128, 64, 32),
        "hidden_update_dim": 64,
    },
}


@dataclass
class ModelConfig:
    """Architecture of the XMem network; ``None`` fields take the preset's value.

    ``decoder_dims``: output widths of the decoder's fusion block (stride 16), ``up_16_8`` (stride 8)
    and ``up_8_4`` (stride 4). ``hidden_update_dim``: the width the hidden updater projects g16/g8/g4
    to before its GRU transform. ``pretrained``: initialise both ResNet trunks from torchvision's
    ImageNet weights (downloaded on request; only at construction, never at import).
    """

    preset: Literal["xmem", "small"] = "small"
    key_encoder: Literal["resnet50", "resnet18"] | None = None
    key_dim: int | None = None
    value_dim: int | None = None
    hidden_dim: int | None = None
    decoder_dims: tuple[int, int, int] | None = None
    hidden_update_dim: int | None = None
    pretrained: bool = False

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"model.preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.key_encoder not in KEY_ENCODER_CHANNELS:
            raise ConfigError(
                f"model.key_encoder must be one of {', '.join(KEY_ENCODER_CHANNELS)}, got {self.key_encoder!r}"
            )
        for name in ("key_dim", "value_dim", "hidden_dim", "hidden_update_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")
        dims = self.decoder_dims
        if not isinstance(dims, (tuple, list)) or len(dims) != 3:
            raise ConfigError(f"model.decoder_dims must be three positive integers, got {dims!r}")
        self.decoder_dims = tuple(dims)
        if any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in self.decoder_dims):
            raise ConfigError(f"model.decoder_dims must be three positive integers, got {dims!r}")
        if not isinstance(self.pretrained, bool):
            raise ConfigError(f"model.pretrained must be true or false, got {self.pretrained!r}")

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "ModelConfig":
        """The preset's configuration, with ``overrides`` (field=value) applied."""
        return cls(preset=preset, **overrides)

    @property
    def key_encoder_channels(self) -> tuple[int, int, int]:
        """Channels of (f16, f8, f4) produced by the key encoder."""
        return KEY_ENCODER_CHANNELS[self.key_encoder]

    def architecture(self) -> dict[str, object]:
        """The fields that decide parameter shapes (everything but ``preset`` and ``pretrained``)."""
        return {name: getattr(self, name) for name in PRESETS["xmem"]}
