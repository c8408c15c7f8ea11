"""Triton weak losses: the module ``vos.losses.dispatch`` loads for ``backend`` "triton"
/ "auto". Same names and keyword arguments as the PyTorch reference in ``vos.losses`` (without
``backend``; each also takes an optional ``blocks: LossBlocks`` for tile sizes).

- ``rgb_to_lab`` / ``frames_to_lab`` (``kernels.loss_lab``): sRGB → Lab exactly as skimage, with
  the area average to the loss resolution fused; fp64 inside (fp32 misses the 1e-4 budget).
- ``projection_loss`` (``kernels.loss_projection``): max projections + p = 2 dice, "stacked" and
  "per_image" layouts.
- ``pairwise_loss`` (``kernels.loss_pairwise``): dilated K×K neighbours read in place, Lab
  similarity threshold, stable per-edge loss, box filter, "pixels"/"edges" normalisation.
- ``temporal_loss`` / ``temporal_matches`` (``kernels.loss_temporal``): on-the-fly patch distances
  over the candidate grid, stable top-K, threshold, union-box filter, "patch"/"center" targets,
  "soft"/"hard"/"none" detach.

Every loss is a ``torch.autograd.Function`` with a Triton backward. Computation is in fp32 (fp64
for fp64 inputs). Tensors must be on CUDA, or on the CPU with TRITON_INTERPRET=1 set before triton
is imported (the tests). Importing this module imports triton.
"""

from .common import DEFAULT_BLOCKS, LossBlocks
from .loss_lab import frames_to_lab, rgb_to_lab
from .loss_pairwise import pairwise_loss
from .loss_projection import projection_loss
from .loss_temporal import temporal_loss, temporal_matches

__all__ = [
    "DEFAULT_BLOCKS",
    "LossBlocks",
    "frames_to_lab",
    "pairwise_loss",
    "projection_loss",
    "rgb_to_lab",
    "temporal_loss",
    "temporal_matches",
]
