"""Trainer configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vos.errors import ConfigError


@dataclass
class TrainConfig:
    iterations: int = 110_000
    batch_size: int = 8
    lr: float = 1e-5
    weight_decay: float = 0.05
    lr_steps: tuple[int, ...] = (80_000,)
    lr_gamma: float = 0.1
    # linear learning-rate warm-up over this many iterations (0: none; XMem and the thesis use none).
    # From random initialisation it keeps the first large steps from saturating the mask logits.
    lr_warmup: int = 0
    # clip the gradient's global L2 norm to this value before each step (0: no clipping, as XMem).
    # From random initialisation a single large step can saturate every mask logit, after which the
    # weak losses have no gradient left; clipping bounds that step.
    grad_clip: float = 0.0
    # Which losses supervise: the weak losses (boxes) or the fully supervised oracle.
    objective: Literal["weak", "oracle"] = "weak"
    amp: bool = True  # bf16/fp16 autocast on CUDA only; CPU trains in fp32
    compile: bool = False
    # the network's weights (and so its convolutions' activations) in the channels-last layout: the
    # same model up to floating-point order, faster convolutions on CPU; checkpoints are unaffected
    channels_last: bool = False
    seed: int = 14159265
    init_weights: str | None = None
    out_dir: str = "runs/train"
    checkpoint_every: int = 5_000
    log_every: int = 100
    max_bad_steps: int = 20  # abort after this many consecutive non-finite losses
    sample_every: int = 1_000  # write an overlay strip (frame, box, prediction) every this many its; 0 = never
    keep_checkpoints: int = 3  # older periodic checkpoints are deleted
    num_ref_frames: int = 3  # memory frames read per step (XMem)
    deep_update_prob: float = 0.2  # probability of a deep sensory update on a memory frame (XMem)
    # "frozen": XMem's BN in eval mode (right for ImageNet-initialised trunks). "update": ordinary
    # BatchNorm while training — for random initialisation, where the frozen statistics are the
    # identity and the ResNets would train without normalisation.
    bn_statistics: Literal["frozen", "update"] = "frozen"
    # When set, the iteration counts of the schedules (lr_steps, losses.warmup_iters,
    # losses.boot_start/boot_end) are written for a run of this many iterations and are scaled to
    # `iterations` when the config is loaded (the loaded config holds the scaled values).
    schedule_reference: int | None = None

    def __post_init__(self) -> None:
        if self.lr_warmup < 0:
            raise ConfigError(f"train.lr_warmup must be >= 0, got {self.lr_warmup}")
        for name in ("iterations", "batch_size", "checkpoint_every", "log_every", "max_bad_steps", "keep_checkpoints", "num_ref_frames"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_every < 0:
            raise ConfigError(f"train.sample_every must be >= 0, got {self.sample_every}")
        if not 0.0 <= self.deep_update_prob <= 1.0:
            raise ConfigError(f"train.deep_update_prob must lie in [0, 1], got {self.deep_update_prob}")
        if self.bn_statistics not in ("frozen", "update"):
            raise ConfigError(f"train.bn_statistics must be 'frozen' or 'update', got {self.bn_statistics!r}")
        if self.schedule_reference is not None and self.schedule_reference < 1:
            raise ConfigError(f"train.schedule_reference must be >= 1 (or null), got {self.schedule_reference}")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip must be >= 0 (0: no clipping), got {self.grad_clip}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
