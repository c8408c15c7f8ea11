"""Per-object ("group") building blocks: tensors B×N×C×H×W, N objects sharing one image.

Convolutions fold the object dim into the batch (B·N×C×H×W) and unfold it afterwards.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fold(g: torch.Tensor) -> torch.Tensor:
    """B×N×C×H×W → B·N×C×H×W."""
    return g.flatten(0, 1)


def unfold(x: torch.Tensor, batch: int) -> torch.Tensor:
    """B·N×C×H×W → B×N×C×H×W."""
    return x.view(batch, -1, *x.shape[1:])


def upsample_groups(g: torch.Tensor, ratio: float = 2.0) -> torch.Tensor:
    """Bilinear resize of B×N×C×H×W by ``ratio`` (align_corners=False)."""
    out = F.interpolate(fold(g), scale_factor=ratio, mode="bilinear", align_corners=False)
    return unfold(out, g.shape[0])


def downsample_groups(g: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Area resize of B×N×C×H×W by ``ratio`` (< 1)."""
    out = F.interpolate(fold(g), scale_factor=ratio, mode="area")
    return unfold(out, g.shape[0])


class GroupConv2d(nn.Conv2d):
    """``nn.Conv2d`` applied to B×N×C×H×W (same parameters and state-dict keys as Conv2d)."""

    def forward(self, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return unfold(super().forward(fold(g)), g.shape[0])


def conv_part(x: torch.Tensor, conv: nn.Conv2d, start: int, stop: int, bias: bool) -> torch.Tensor:
    """``conv`` restricted to input channels [start, stop) of its weight, applied to ``x`` (…×(stop−start)×H×W).

    Used to split a conv over cat[image features, per-object features] into an image half computed
    once per frame and an object half computed per object; the two halves sum to the full conv.
    """
    weight = conv.weight[:, start:stop]
    return F.conv2d(x, weight, conv.bias if bias else None, conv.stride, conv.padding, conv.dilation)


class GroupResBlock(nn.Module):
    """Pre-activation residual block on B×N×Cin×H×W → B×N×Cout×H×W (3×3 convs, conv residual if Cin≠Cout).

    ``out = conv2(relu(conv1(relu(g)))) + (downsample(g) if Cin≠Cout else g)`` — the residual path
    takes ``g`` without ReLU, as in XMem.
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.downsample = None if in_dim == out_dim else GroupConv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv1 = GroupConv2d(in_dim, out_dim, kernel_size=3, padding=1)
        self.conv2 = GroupConv2d(out_dim, out_dim, kernel_size=3, padding=1)

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(g))))
        residual = g if self.downsample is None else self.downsample(g)
        return out + residual

    def forward_split(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Same as ``forward(cat[x broadcast over N, g], dim=2)`` without building that tensor.

        x: B×Cx×H×W (shared by all objects), g: B×N×Cg×H×W → B×N×Cout×H×W. The convolutions over x's
        channels run once per image instead of once per object; ReLU acts per channel, so
        relu(cat[x, g]) = cat[relu(x), relu(g)] and the conv splits into a sum over the two parts.
        """
        batch, cx = x.shape[0], x.shape[1]
        cin = self.conv1.in_channels
        gf = fold(g)
        hidden = conv_part(F.relu(x), self.conv1, 0, cx, bias=True).unsqueeze(1)
        hidden = hidden + unfold(conv_part(F.relu(gf), self.conv1, cx, cin, bias=False), batch)
        out = self.conv2(F.relu(hidden))
        if self.downsample is None:
            # identity residual: the image part must be materialised per object after all
            residual = torch.cat([x.unsqueeze(1).expand(-1, g.shape[1], -1, -1, -1), g], 2)
        else:
            residual = conv_part(x, self.downsample, 0, cx, bias=True).unsqueeze(1)
            residual = residual + unfold(conv_part(gf, self.downsample, cx, cin, bias=False), batch)
        return out + residual
