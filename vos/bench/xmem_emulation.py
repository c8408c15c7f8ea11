"""XMem's own computation of the value encoder and the fusion blocks, for the benchmarks' baseline.

Our network computes the image half of the value encoder's first convolution and of each fusion
block's first residual block once per frame (the convolution is linear in its input channels, so it
splits exactly); XMem concatenates the image to every object's channels and runs the whole
convolution once per object. :func:`xmem_computation` returns a copy of a network that does the
latter: the same weights and outputs, XMem's amount of work — what "XMem's algorithm" means in
`vos bench --video longtime` and in the FLOP counts.
"""

from __future__ import annotations

import copy

import torch

from vos.model.encoders import ValueEncoder
from vos.model.fusion import FeatureFusionBlock
from vos.model.group import fold
from vos.model.network import XMem


class _PerObjectFusion(FeatureFusionBlock):
    def first_block(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """block1 on cat[x, g] for every object: x B×Cx×H×W is repeated N times."""
        expanded = x.unsqueeze(1).expand(-1, g.shape[1], -1, -1, -1)
        return self.block1(torch.cat([expanded, g], 2))


class _PerObjectValueEncoder(ValueEncoder):
    def first_conv(self, image: torch.Tensor, masks: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """conv1 on the 5-channel [RGB, mask, others] input of every object → B·N×64×H/2×W/2."""
        rgb = image.unsqueeze(1).expand(-1, masks.shape[1], -1, -1, -1)
        five = torch.cat([rgb, masks.unsqueeze(2), others.unsqueeze(2)], 2)  # B×N×5×H×W
        return self.conv1(fold(five))


def xmem_computation(model: XMem) -> XMem:
    """A copy of ``model`` that computes its value encoder and fusion blocks per object, as XMem."""
    baseline = copy.deepcopy(model)
    for module in baseline.modules():
        # the subclasses add no state, only the per-object forward of one step
        if type(module) is FeatureFusionBlock:
            module.__class__ = _PerObjectFusion
        elif type(module) is ValueEncoder:
            module.__class__ = _PerObjectValueEncoder
    return baseline
