"""Fusion of image features with per-object features, and XMem's sensory-memory gates."""

from __future__ import annotations

import torch
from torch import nn

from vos.model.cbam import CBAM
from vos.model.group import GroupConv2d, GroupResBlock, downsample_groups, fold, unfold


class FeatureFusionBlock(nn.Module):
    """Fuse image features x with per-object features g: GroupResBlock → CBAM (residual) → GroupResBlock.

    x: B×Cx×H×W, g: B×N×Cg×H×W → B×N×Cout×H×W. The first block acts on cat[x, g]; its x half is
    computed once per image (``GroupResBlock.forward_split``), not once per object as in XMem.
    """

    def __init__(self, x_dim: int, g_dim: int, mid_dim: int, out_dim: int) -> None:
        super().__init__()
        self.block1 = GroupResBlock(x_dim + g_dim, mid_dim)
        self.attention = CBAM(mid_dim)
        self.block2 = GroupResBlock(mid_dim, out_dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = self.first_block(x, g)
        g = g + unfold(self.attention(fold(g)), g.shape[0])
        return self.block2(g)

    def first_block(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """block1 on cat[x, g] with x's half computed once per image: B×Cx×H×W, B×N×Cg×H×W → B×N×Cmid×H×W."""
        return self.block1.forward_split(x, g)


def gru_gate(values: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """XMem's gated update: values B×N×3C×H×W = [f, z, n], h B×N×C×H×W → h' = σ(f)·h·(1−σ(z)) + σ(z)·tanh(n).

    Not a standard GRU (the candidate n does not see a reset-gated h); the trained weights depend on it.
    """
    forget, update, new = values.chunk(3, dim=2)
    update = torch.sigmoid(update)
    return torch.sigmoid(forget) * h * (1 - update) + update * torch.tanh(new)


class HiddenReinforcer(nn.Module):
    """Value-encoder side of the sensory memory: h' = gate(transform(cat[g, h]), h).

    g: B×N×Cg×H×W (the value), h: B×N×CH×H×W → B×N×CH×H×W.
    """

    def __init__(self, g_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.transform = GroupConv2d(g_dim + hidden_dim, hidden_dim * 3, kernel_size=3, padding=1)
        nn.init.xavier_normal_(self.transform.weight)

    def forward(self, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return gru_gate(self.transform(torch.cat([g, h], 2)), h)


class HiddenUpdater(nn.Module):
    """Decoder side of the sensory memory, from multi-scale decoder features.

    g16: B×N×C16×h×w, g8: B×N×C8×2h×2w, g4: B×N×(C4+1)×4h×4w (with the stride-4 logit appended),
    h: B×N×CH×h×w → h' B×N×CH×h×w. g8/g4 are area-downsampled to stride 16 and projected by 1×1 convs.
    """

    def __init__(self, g_dims: tuple[int, int, int], mid_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.g16_conv = GroupConv2d(g_dims[0], mid_dim, kernel_size=1)
        self.g8_conv = GroupConv2d(g_dims[1], mid_dim, kernel_size=1)
        self.g4_conv = GroupConv2d(g_dims[2], mid_dim, kernel_size=1)
        self.transform = GroupConv2d(mid_dim + hidden_dim, hidden_dim * 3, kernel_size=3, padding=1)
        nn.init.xavier_normal_(self.transform.weight)

    def forward(self, g16: torch.Tensor, g8: torch.Tensor, g4: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        g = self.g16_conv(g16) + self.g8_conv(downsample_groups(g8, 0.5)) + self.g4_conv(downsample_groups(g4, 0.25))
        return gru_gate(self.transform(torch.cat([g, h], 2)), h)
