"""CBAM attention (Woo et al., 2018) with XMem's parameter names (ChannelGate.mlp.1/.3, SpatialGate.spatial.conv)."""

from __future__ import annotations

import torch
from torch import nn


class ChannelGate(nn.Module):
    """x·σ(MLP(avgpool x) + MLP(maxpool x)); x: B×C×H×W. The MLP is C → C/r → C."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        # index 0 flattens, 2 is the ReLU: the Linear layers sit at indices 1 and 3 like XMem's keys
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.stack([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], 0)  # 2×B×C
        logits = self.mlp(pooled.flatten(0, 1)).view(2, x.shape[0], -1).sum(0)
        return x * torch.sigmoid(logits)[:, :, None, None]


class _SpatialConv(nn.Module):
    """Holds the 7×7 conv under the name ``conv`` (XMem's ``spatial.conv`` key)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """x·σ(conv7×7([max_c x, mean_c x])); x: B×C×H×W."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention; B×C×H×W → B×C×H×W."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))
