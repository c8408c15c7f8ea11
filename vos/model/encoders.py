"""Key encoder, key projection and value encoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.errors import CheckpointError
from vos.model.fusion import FeatureFusionBlock, HiddenReinforcer
from vos.model.group import fold, unfold
from vos.model.resnet import FrozenBatchNorm2d, init_resnet_, make_layers, trunk_imagenet_weights


def _load_trunk(module: nn.Module, weights: dict[str, torch.Tensor], rename: dict[str, str], arch: str) -> None:
    """Copy torchvision trunk weights (conv1, bn1, layer1..3) into ``module``; ``rename`` maps layer names."""
    state = {}
    for key, value in weights.items():
        head, _, rest = key.partition(".")
        state[f"{rename.get(head, head)}.{rest}"] = value
    missing, unexpected = module.load_state_dict(state, strict=False)
    trunk = {"conv1", "bn1", "layer1", "layer2", "layer3", *rename.values()}
    # torchvision's ImageNet files predate num_batches_tracked; the non-trunk modules are not in them
    missing = [k for k in missing if k.split(".")[0] in trunk and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(
            f"ImageNet weights for {arch} do not fit the trunk: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


class KeyEncoder(nn.Module):
    """ResNet stem + layer1..3 on the image: B×3×H×W → (f16, f8, f4) at strides 16, 8, 4.

    ResNet-50: 1024/512/256 channels; ResNet-18: 256/128/64. ``res2`` is layer1 (XMem's name).
    """

    def __init__(self, arch: str = "resnet50") -> None:
        super().__init__()
        self.arch = arch
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.res2, self.layer2, self.layer3 = make_layers(arch)
        init_resnet_(self)

    def load_imagenet(self) -> None:
        _load_trunk(self, trunk_imagenet_weights(self.arch), {"layer1": "res2"}, self.arch)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(image))), kernel_size=3, stride=2, padding=1)
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class KeyProjection(nn.Module):
    """3×3 convs on f16 (B×C×h×w): key B×CK×h×w, shrinkage d²+1 (B×1×h×w), selection σ(e) (B×CK×h×w)."""

    def __init__(self, in_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, kernel_size=3, padding=1)
        self.d_proj = nn.Conv2d(in_dim, 1, kernel_size=3, padding=1)
        self.e_proj = nn.Conv2d(in_dim, key_dim, kernel_size=3, padding=1)
        # orthogonal keys spread the initial similarities (XMem's init)
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)

    def forward(
        self, f16: torch.Tensor, need_shrinkage: bool = True, need_selection: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        shrinkage = self.d_proj(f16) ** 2 + 1 if need_shrinkage else None
        selection = torch.sigmoid(self.e_proj(f16)) if need_selection else None
        return self.key_proj(f16), shrinkage, selection


class ValueEncoder(nn.Module):
    """Per-object value from [RGB, mask_i, Σ_{j≠i} mask_j] and the image's f16, plus the deep update.

    ResNet-18 stem..layer3 on 5 channels (256 ch at stride 16) → FeatureFusionBlock(f16, ·) → value
    (``value_dim``); ``hidden_reinforce`` updates the sensory memory from the value.
    conv1 is linear and bias-free, so its RGB part (3 of 5 input channels) runs once per image and
    only the 2 mask channels run per object.
    """

    def __init__(self, f16_dim: int, value_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(5, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.layer1, self.layer2, self.layer3 = make_layers("resnet18")
        init_resnet_(self)
        self.fuser = FeatureFusionBlock(f16_dim, 256, value_dim, value_dim)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim)

    def load_imagenet(self) -> None:
        _load_trunk(self, trunk_imagenet_weights("resnet18", in_channels=5), {}, "resnet18")

    def forward(
        self,
        image: torch.Tensor,
        f16: torch.Tensor,
        sensory: torch.Tensor,
        masks: torch.Tensor,
        others: torch.Tensor,
        deep_update: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image B×3×H×W, f16 B×C×H/16×W/16, sensory B×N×CH×h×w, masks/others B×N×H×W
        → (value B×N×CV×h×w, sensory B×N×CH×h×w)."""
        batch = masks.shape[0]
        x = self.first_conv(image, masks, others)
        # maxpool before ReLU as XMem (they commute)
        x = F.relu(F.max_pool2d(self.bn1(x), kernel_size=3, stride=2, padding=1))
        x = self.layer3(self.layer2(self.layer1(x)))
        value = self.fuser(f16, unfold(x, batch))
        if deep_update:
            sensory = self.hidden_reinforce(value, sensory)
        return value, sensory

    def first_conv(self, image: torch.Tensor, masks: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """conv1 on each object's [RGB, mask, others] with the RGB part computed once per image (the
        convolution is linear, so it splits exactly): B×3×H×W, B×N×H×W ×2 → B·N×64×H/2×W/2."""
        batch = masks.shape[0]
        conv = self.conv1
        rgb = F.conv2d(image, conv.weight[:, :3], None, conv.stride, conv.padding)  # B×64×H/2×W/2
        obj = torch.stack([masks, others], 2).flatten(0, 1)  # B·N×2×H×W
        obj = F.conv2d(obj, conv.weight[:, 3:], None, conv.stride, conv.padding)
        return fold(unfold(obj, batch) + rgb.unsqueeze(1))
