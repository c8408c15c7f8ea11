"""Mask decoder: fusion at stride 16, two upsampling steps with skips, a stride-4 logit."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.model.fusion import FeatureFusionBlock, HiddenUpdater
from vos.model.group import GroupResBlock, fold, unfold, upsample_groups


class UpsampleBlock(nn.Module):
    """g B×N×Cup×h×w, skip B×Cs×2h×2w → B×N×Cout×2h×2w: out_conv(upsample×2(g) + skip_conv(skip)).

    The skip conv sees only the image, so it runs once per image and is broadcast over objects.
    """

    def __init__(self, skip_dim: int, up_dim: int, out_dim: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_dim, up_dim, kernel_size=3, padding=1)
        self.out_conv = GroupResBlock(up_dim, out_dim)

    def forward(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        g = upsample_groups(g, 2.0) + self.skip_conv(skip).unsqueeze(1)
        return self.out_conv(g)


class Decoder(nn.Module):
    """(f16, f8, f4) image features + per-object [readout, sensory] → (new sensory, stride-4 logits).

    ``decoder_dims`` = widths after the fuser (stride 16), up_16_8 (stride 8) and up_8_4 (stride 4);
    XMem: 512, 256, 256.
    """

    def __init__(
        self,
        feature_dims: tuple[int, int, int],
        value_dim: int,
        hidden_dim: int,
        decoder_dims: tuple[int, int, int],
        hidden_update_dim: int,
    ) -> None:
        super().__init__()
        c16, c8, c4 = feature_dims
        d16, d8, d4 = decoder_dims
        self.fuser = FeatureFusionBlock(c16, value_dim + hidden_dim, d16, d16)
        self.hidden_update = HiddenUpdater((d16, d8, d4 + 1), hidden_update_dim, hidden_dim)
        self.up_16_8 = UpsampleBlock(c8, d16, d8)
        self.up_8_4 = UpsampleBlock(c4, d8, d4)
        self.pred = nn.Conv2d(d4, 1, kernel_size=3, padding=1)

    def forward(
        self,
        f16: torch.Tensor,
        f8: torch.Tensor,
        f4: torch.Tensor,
        sensory: torch.Tensor,
        readout: torch.Tensor,
        update_sensory: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """f16/f8/f4 B×C×(H/16|H/8|H/4)×…, sensory B×N×CH×h×w, readout B×N×CV×h×w
        → (sensory B×N×CH×h×w, logits B×N×H/4×W/4)."""
        batch = readout.shape[0]
        g16 = self.fuser(f16, torch.cat([readout, sensory], 2))
        g8 = self.up_16_8(f8, g16)
        g4 = self.up_8_4(f4, g8)
        logits = unfold(self.pred(F.relu(fold(g4))), batch)  # B×N×1×H/4×W/4
        if update_sensory:
            sensory = self.hidden_update(g16, g8, torch.cat([g4, logits], 2), sensory)
        return sensory, logits.squeeze(2)
