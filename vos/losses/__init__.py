"""Weak (box) and oracle (mask) losses, thesis chapter 3 / in PyTorch.

The PyTorch functions here are the reference of the Triton kernels (`vos.kernels.losses`, chosen by
`backend`, see `vos.backends`) and the CPU path. Shapes: per-object tensors B×N×T×H×W at the
loss resolution, Lab B×T×3×H×W, network output B×T×(N+1)×H×W (background first).
"""

from vos.losses.color import frames_to_lab, rgb_to_lab
from vos.losses.config import LossConfig
from vos.losses.modules import OracleLoss, WeakLoss, warmup_scale
from vos.losses.oracle import bootstrap_p, bootstrapped_ce, dice_loss
from vos.data.boxes import box_masks, box_prompt_masks
from vos.losses.resample import area_downsample, downsample_agg_logits, foreground_logits
from vos.losses.weak import (
    consistency,
    pair_nll,
    pairwise_loss,
    projection_loss,
    temporal_loss,
    temporal_matches,
)

__all__ = [
    "LossConfig",
    "OracleLoss",
    "WeakLoss",
    "area_downsample",
    "bootstrap_p",
    "bootstrapped_ce",
    "box_masks",
    "box_prompt_masks",
    "consistency",
    "dice_loss",
    "downsample_agg_logits",
    "foreground_logits",
    "frames_to_lab",
    "pair_nll",
    "pairwise_loss",
    "projection_loss",
    "rgb_to_lab",
    "temporal_loss",
    "temporal_matches",
    "warmup_scale",
]
